"""The store backends, chosen by name from ONE table (`BACKENDS`).

`open_harness` gives a test an opened store of a backend, a `FakeClock` injected into it,
and `reopen()` (close, then open the same backend on the same state); the fixtures of
tests/store/test_base_contract.py run the contract over every backend. Adding a
backend is one `Backend` entry; an external one names a `probe` that says why its server is
unreachable, and its tests are skipped with that reason, or fail when
`OAUTHD_REQUIRE_SERVICES=1` (CI with the services up must not skip silently).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from oauthd.audit import AuditEvent, MemoryTrail
from oauthd.clock import FakeClock
from oauthd.model import Record
from oauthd.store import FileStore, MemoryStore, Store
from oauthd.store.file import make_engine
from oauthd.store.memory import NullSink
from tests.support.configs import TomlValue
from tests.support.postgres import (
    open_postgres,
    postgres_cleanup,
    postgres_probe,
    postgres_storage,
    postgres_writes,
)
from tests.support.redis_backend import (
    open_redis,
    redis_cleanup,
    redis_probe,
    redis_storage,
    redis_writes,
)
from tests.support.services import StateRef, service_missing


class CountingSink(NullSink):
    """The memory backend's change sink, counting writes (what `writes()` reports)."""

    def __init__(self, trail: MemoryTrail) -> None:
        super().__init__(trail)
        self.changes = 0

    async def changed(
        self,
        kind: str,
        key: str,
        record: Record | None,
        previous: Record | None,
        event: AuditEvent | None = None,
    ) -> None:
        self.changes += 1
        await super().changed(kind, key, record, previous, event)


class CountingMemoryStore(MemoryStore):
    def __init__(self, clock: FakeClock) -> None:
        trail = MemoryTrail(clock)
        self.sink = CountingSink(trail)
        super().__init__(clock, self.sink, trail)


async def open_memory(state: StateRef, clock: FakeClock) -> Store:
    return CountingMemoryStore(clock)


def file_opener(*, journaled: bool) -> Callable[[StateRef, FakeClock], Awaitable[Store]]:
    async def open_file(state: StateRef, clock: FakeClock) -> Store:
        engine = make_engine(
            state.path / "state", journaled=journaled, interval=30, debounce=0.05, max_wait=0.2
        )
        return await FileStore.open(engine, clock)

    return open_file


def memory_writes(store: Store) -> int:
    assert isinstance(store, CountingMemoryStore)
    return store.sink.changes


def file_writes(store: Store) -> int:
    assert isinstance(store, FileStore)
    return store.engine.seq


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    open: Callable[[StateRef, FakeClock], Awaitable[Store]]
    durable: bool
    # How many writes the store has made (to check that a no-op `update` writes nothing);
    # None when the backend cannot tell.
    writes: Callable[[Store], int] | None = None
    # External backends: why the server is unreachable, or None when it is up.
    probe: Callable[[], Awaitable[str | None]] | None = None
    # Only in the durability tests (a mode of a backend that the contract already runs).
    durability_only: bool = False
    why_not_durable: str = ""
    # Shared servers: remove what the test wrote (after the store is closed).
    cleanup: Callable[[StateRef], Awaitable[None]] | None = None
    # Shared servers: the [storage] keys of a daemon on the test's namespace.
    storage: Callable[[StateRef], dict[str, TomlValue]] | None = None


BACKENDS: tuple[Backend, ...] = (
    Backend(
        "memory",
        open_memory,
        durable=False,
        writes=memory_writes,
        why_not_durable="memory is not durable: its state lives only in the process",
    ),
    Backend("file", file_opener(journaled=True), durable=True, writes=file_writes),
    Backend(
        "file-snapshot",
        file_opener(journaled=False),
        durable=True,
        writes=file_writes,
        durability_only=True,
    ),
    Backend(
        "redis",
        open_redis,
        durable=True,
        writes=redis_writes,
        probe=redis_probe,
        cleanup=redis_cleanup,
        storage=redis_storage,
    ),
    Backend(
        "postgres",
        open_postgres,
        durable=True,
        writes=postgres_writes,
        probe=postgres_probe,
        cleanup=postgres_cleanup,
        storage=postgres_storage,
    ),
)
BY_NAME = {b.name: b for b in BACKENDS}
CONTRACT_BACKENDS = [b.name for b in BACKENDS if not b.durability_only]
DURABILITY_BACKENDS = [b.name for b in BACKENDS]
FILE_BACKENDS = [b.name for b in BACKENDS if b.name.startswith("file")]


class StoreHarness:
    """One backend's store for one test, with its clock, reopenable on the same state."""

    def __init__(self, backend: Backend, state: StateRef) -> None:
        self.backend = backend
        self.state = state
        self.clock = FakeClock()
        self._store: Store | None = None

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def store(self) -> Store:
        assert self._store is not None, "the store is closed"
        return self._store

    async def open(self) -> Store:
        self._store = await self.backend.open(self.state, self.clock)
        return self._store

    async def reopen(self) -> Store:
        """Close cleanly, then open the same backend on the same state."""
        if not self.backend.durable:
            pytest.skip(self.backend.why_not_durable)
        await self.close()
        return await self.open()

    def storage(self) -> dict[str, TomlValue]:
        """The [storage] keys of a daemon on the same state (a shared server's namespace)."""
        assert self.backend.storage is not None, f"{self.name} is not shared"
        return self.backend.storage(self.state)

    def writes(self) -> int | None:
        if self.backend.writes is None:
            return None
        return self.backend.writes(self.store)

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()


async def open_harness(name: str, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    """The named backend's store for one test (skipped, or failed in CI, when its server
    is unreachable), closed and cleaned up afterwards."""
    backend = BY_NAME[name]
    if backend.probe is not None and (reason := await backend.probe()) is not None:
        service_missing(f"{name}: {reason}")
    harness = StoreHarness(backend, StateRef(tmp_path, f"oauthd-test-{uuid.uuid4().hex}"))
    try:
        await harness.open()
        yield harness
    finally:
        await harness.close()
        if backend.cleanup is not None:
            await backend.cleanup(harness.state)
