"""Every backend in `tests.support.backends.BACKENDS` runs the ONE store contract suite."""

import pytest

from tests.support.services import service_missing
from tests.support.store_contract import (
    CounterContract,
    DurabilityContract,
    FileBackendContract,
    StoreContract,
)


class TestStore(StoreContract):
    pass


class TestCounters(CounterContract):
    pass


class TestDurability(DurabilityContract):
    pass


class TestFileBackend(FileBackendContract):
    pass


def test_an_absent_service_skips_unless_services_are_required() -> None:
    with pytest.raises(pytest.skip.Exception, match="redis: connection refused"):
        service_missing("redis: connection refused", required=False)
    with pytest.raises(pytest.fail.Exception, match="OAUTHD_REQUIRE_SERVICES=1"):
        service_missing("redis: connection refused", required=True)
