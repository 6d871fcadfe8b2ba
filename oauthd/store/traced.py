"""Store calls as spans (`[tracing]`): `trace_tables` puts a `TracedTable` in front of each
table of a store, once, when tracing is on; with tracing off the store is never touched,
so its calls cost what they did.

A call's span is named `{operation} {kind}` (`get grants`, `update grants`), with the
database semantic-convention attributes `db.operation.name`, `db.collection.name` (the
record kind) and `db.system.name` (the backend); a client span on a shared backend, an
internal one on `memory` and `file`. Keys and records are never recorded. `scan` (listings,
not hot paths) is passed through without a span: its caller consumes it over many turns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from oauthd.audit import Audit
from oauthd.store.base import R, Store, Table
from oauthd.tracing import Tracing

SYSTEMS = {"redis": "redis", "postgres": "postgresql", "file": "oauthd.file"}


class TracedTable(Table[R]):
    """A table whose calls are spans; any attribute beyond the `Table` interface (a
    backend's own, the cache's) is the inner table's."""

    def __init__(self, inner: Table[R], tracing: Tracing, backend: str) -> None:
        self.kind = inner.kind
        self.inner = inner
        system = SYSTEMS.get(backend, f"oauthd.{backend}")
        self._span = tracing.client_span if backend in ("redis", "postgres") else tracing.span
        self._attributes = {"db.system.name": system, "db.collection.name": inner.kind}
        self._names = {op: f"{op} {inner.kind}" for op in OPERATIONS}

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def _traced(self, operation: str) -> Any:
        return self._span(
            self._names[operation], {**self._attributes, "db.operation.name": operation}
        )

    async def get(self, key: str) -> R | None:
        with self._traced("get"):
            return await self.inner.get(key)

    async def add(self, record: R, *, audit: Audit | None = None) -> None:
        with self._traced("add"):
            await self.inner.add(record, audit=audit)

    async def put(self, record: R, *, audit: Audit | None = None) -> None:
        with self._traced("put"):
            await self.inner.put(record, audit=audit)

    async def take(self, key: str, *, audit: Audit | None = None) -> R | None:
        with self._traced("take"):
            return await self.inner.take(key, audit=audit)

    async def update(
        self, key: str, change: Callable[[R], R], *, audit: Audit | None = None
    ) -> R | None:
        with self._traced("update"):
            return await self.inner.update(key, change, audit=audit)

    async def delete(self, key: str, *, audit: Audit | None = None) -> bool:
        with self._traced("delete"):
            return await self.inner.delete(key, audit=audit)

    def scan(self) -> AsyncIterator[R]:
        return self.inner.scan()

    async def count(self) -> int:
        with self._traced("count"):
            return await self.inner.count()

    async def purge_expired(self) -> int:
        with self._traced("purge_expired"):
            return await self.inner.purge_expired()


OPERATIONS = ("get", "add", "put", "take", "update", "delete", "count", "purge_expired")


def trace_tables(store: Store, tracing: Tracing, backend: str) -> None:
    """Put a `TracedTable` in front of each of `store`'s tables (every attribute that is a
    `Table`: the store's own code reaches them the same way, through the attribute)."""
    for name, value in list(vars(store).items()):
        if isinstance(value, Table) and not isinstance(value, TracedTable):
            setattr(store, name, TracedTable(value, tracing, backend))
