"""Reading a store's audit records offline (the CLI's `oauthd audit` and `oauthd explain`).

Each backend has a reader (`oauthd.store.open_audit_reader`): the chains it holds and each
chain's records in stored order, each with where it was found (for `verify`'s report).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from oauthd.audit.verify import Anchor


class AuditReader(Protocol):
    async def chains(self) -> list[str]:
        """The names of the chains the store holds."""
        ...

    def lines(self, chain: str) -> AsyncIterator[tuple[str, bytes]]:
        """(where, record line) of `chain`, oldest first, as stored."""
        ...

    async def anchor(self, chain: str) -> Anchor | None:
        """Where the store last saw `chain` end, if it keeps that apart from the records
        (`verify`'s check that none were cut from the end)."""
        ...

    async def close(self) -> None: ...
