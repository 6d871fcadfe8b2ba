"""`oauthd explain` reads the trail through `oauthd.store.open_audit_reader` (here a reader
of records built in the test) and prints why the user logged in again; exit 1 when the
trail has none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from oauthd import store
from oauthd.cli import main
from tests.support.configs import write_config


class ListReader:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.closed = False

    async def chains(self) -> list[str]:
        return ["host-a"]

    async def lines(self, chain: str) -> AsyncIterator[tuple[str, bytes]]:
        for n, record in enumerate(self.records, 1):
            yield f"line {n}", orjson.dumps({"n": n, "chain": chain, **record})

    async def close(self) -> None:
        self.closed = True


HISTORY = [
    {"at": 1000.0, "event": "token_issued", "user": "alice", "client_id": "c1",
     "grant_type": "authorization_code", "expires_at": 5000},
    {"at": 1100.0, "event": "token_refreshed", "user": "alice", "client_id": "c1",
     "expires_at": 5100},
    {"at": 1200.0, "event": "token_revoked", "user": "alice", "client_id": "c1",
     "reason": "revoked_by_admin", "by": "admin", "token_type": "grant"},
    {"at": 1300.0, "event": "token_issued", "user": "alice", "client_id": "c1",
     "grant_type": "authorization_code", "expires_at": 9000},
]  # fmt: skip


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> ListReader:
    made = ListReader(HISTORY)

    async def open_audit_reader(config: Any) -> ListReader:
        return made

    monkeypatch.setattr(store, "open_audit_reader", open_audit_reader, raising=False)
    return made


def test_explain_prints_the_reason(
    tmp_path: Path, reader: ListReader, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "oauthd.toml", 8080)
    assert main(["explain", "--user", "alice", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "alice logged in again at 1970-01-01 00:21:40 UTC (client c1)" in out
    assert "reason: revoked_by_admin: an administrator revoked the session" in out
    assert "token_refreshed" in out
    assert reader.closed


def test_explain_without_a_relogin_exits_1(
    tmp_path: Path, reader: ListReader, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "oauthd.toml", 8080)
    assert main(["explain", "--user", "bob", "--config", str(config)]) == 1
    assert "the audit trail has no re-login of bob" in capsys.readouterr().err
