"""The shared backends' audit trails (`redis`, `postgres`): one chain per instance, named
(`[audit] chain`, the host name by default), sealed here in Python and written by the
backend in the same atomic step as the change it describes.

Sealing is serialised per instance: `SharedTrail.write` holds a lock from the seal to the
end of the write, so concurrent audited writes of one instance neither fork nor gap the
chain. A write that surely did not happen (a `Conflict`, nothing to take, a key check)
puts the head back; one whose outcome is unknown (a timeout, a broken connection, a
cancellation after the seal) leaves the head unknown, and the next write first reads the
chain's last record back from the server. The head is also read that way before the
first write after open.

Retention: a task of the trail's own (started with the store, stopped by `close`) deletes
every chain's records older than `[audit] retention` once an hour, always keeping each
chain's last record so that the chain continues where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from oauthd.audit import AuditEvent, AuditTrail, Chain, ChainHead, default_chain_name, log_durable
from oauthd.clock import Clock
from oauthd.store.base import Conflict, StoreError, Unavailable

if TYPE_CHECKING:
    from oauthd.config import AuditConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

RETENTION_EVERY = 3600.0  # seconds between two retention sweeps
DEFAULT_RETENTION = 90 * 86400.0  # the `[audit] retention` default
HEAD_RETRIES = 3  # writes tried again after finding the head moved (`StaleHead`)


class StaleHead(StoreError):
    """The write found the chain's head moved on the server (a write whose outcome was
    unknown did land; or another instance runs with the same chain name): nothing was
    written. The trail reads the head again and runs the write once more."""


@dataclass(slots=True, frozen=True)
class TrailSettings:
    """What a shared backend's trail needs of `[audit]`."""

    chain: str
    enabled: bool = True
    retention: float = DEFAULT_RETENTION  # seconds; 0 = keep forever


def trail_settings(config: AuditConfig | None) -> TrailSettings:
    """The settings of `[audit]` (None: the defaults), the chain named."""
    if config is None:
        return TrailSettings(default_chain_name())
    return TrailSettings(config.chain or default_chain_name(), config.enabled, config.retention)


class Sealing:
    """One write's record: `seal` gives the line of its event after the chain's head (and
    advances the head), `undo` puts the head back. Sealing again (a retried WATCH loop)
    replaces the earlier seal."""

    __slots__ = ("_before", "_chain", "_clock", "at", "event", "n")

    def __init__(self, chain: Chain, clock: Clock) -> None:
        self._chain = chain
        self._clock = clock
        self._before: ChainHead | None = None
        self.event: AuditEvent | None = None
        self.n = 0  # the sealed record's position and time
        self.at = 0.0

    def seal(self, event: AuditEvent) -> bytes:
        self.undo()
        self.at = self._clock.now()
        line, self._before = self._chain.seal(event, self.at)
        self.event, self.n = event, self._chain.head.n
        return line

    @property
    def prev(self) -> str:
        """The hash the sealed record follows (the head before it)."""
        assert self._before is not None, "seal first"
        return self._before.hash

    @property
    def hash(self) -> str:
        """The sealed record's own hash (the head after it)."""
        return self._chain.head.hash

    def undo(self) -> None:
        if self._before is not None:
            self._chain.restore(self._before)
        self._before = None
        self.event = None


class SharedTrail(AuditTrail):
    """A shared backend's trail: the chain, the lock that serialises sealing, retention."""

    def __init__(self, settings: TrailSettings, clock: Clock) -> None:
        self.chain = Chain(settings.chain)
        self.enabled = settings.enabled
        self.retention = settings.retention
        self.clock = clock
        self._lock = asyncio.Lock()
        self._known = False  # the head is the server's (read, or advanced by our writes)
        self._expiry: asyncio.Task[None] | None = None
        self._closed = False

    @abstractmethod
    async def read_head(self) -> ChainHead:
        """The head of this chain as the server holds it (its last record)."""

    @abstractmethod
    async def append_record(self, sealing: Sealing, line: bytes) -> None:
        """Write one record on its own (an event without a change): `line`, just sealed."""

    @abstractmethod
    async def expire(self, now: float | None = None) -> int:
        """Delete the records of every chain older than `now - retention` (`now`: the
        backend's time base when None), each chain's last one kept; how many."""

    async def write(self, operation: Callable[[Sealing], Awaitable[T]]) -> T:
        """Run an audited write under the chain's lock; `operation` seals its event (or
        not) and writes the line with its change in one step, or calls `undo` when it wrote
        nothing. The record is logged once the write returned."""
        self.start()
        for _ in range(HEAD_RETRIES):
            async with self._lock:
                if not self._known:
                    self.chain.restore(await self.read_head())
                    self._known = True
                sealing = Sealing(self.chain, self.clock)
                try:
                    result = await operation(sealing)
                except StaleHead:
                    sealing.undo()
                    self._known = False
                    continue
                except (Conflict, ValueError):  # raised before anything was sent
                    sealing.undo()
                    raise
                except BaseException:
                    if sealing.event is not None:
                        self._known = False  # it may have landed: read the head again
                    raise
            if sealing.event is not None:
                log_durable(sealing.event)
            return result
        raise Unavailable(
            f"audit chain {self.chain.name!r}: its head keeps moving on the server "
            "(does another instance run with the same [audit] chain?)"
        )

    async def append(self, event: AuditEvent) -> None:
        if not self.enabled:
            log_durable(event)
            return

        async def append(sealing: Sealing) -> None:
            await self.append_record(sealing, sealing.seal(event))

        await self.write(append)

    def start(self) -> None:
        """Start the retention task (once; needs a running event loop)."""
        if self._expiry is not None or self._closed or not self.enabled or self.retention <= 0:
            return
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            self._expiry = loop.create_task(self._expire_every(), name="oauthd-audit-retention")

    async def _expire_every(self) -> None:
        while True:
            try:
                removed = await self.expire()
                if removed:
                    log.info(
                        f"audit retention removed {removed} record(s)",
                        extra={"event": "audit.expired", "records": removed},
                    )
            except Unavailable as exc:
                log.warning(
                    f"audit retention skipped: {exc.reason}",
                    extra={"event": "audit.expire_failed"},
                )
            await asyncio.sleep(RETENTION_EVERY)

    async def close(self) -> None:
        self._closed = True
        task, self._expiry = self._expiry, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def logged(event: AuditEvent | None) -> None:
    """The log line of a write's event when no record is kept (`[audit] enabled = false`)."""
    if event is not None:
        log_durable(event)
