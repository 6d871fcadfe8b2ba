"""The file backend's audit trail: records sealed into the chain in the change's own
synchronous step and journaled right after its frame (one fdatasync covers both), then
compacted out of the journal into the audit segments (`audit_files`).

A sealed record waits in memory until it is in a segment: at most `capacity` of them
(writers wait for room before they change anything: backpressure). Before the engine
deletes journal segments, every record sealed so far is in the audit segments, fsynced
(`sync`, the engine's `before_delete`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from oauthd.audit import AuditEvent, AuditTrail, Chain, ChainHead, log_durable
from oauthd.audit.trail import logs_durable, track_unwaited, unwaited_full
from oauthd.clock import Clock
from oauthd.persist import DiskError
from oauthd.persist.backoff import Backoff, Throttle
from oauthd.store.audit_files import AuditFiles
from oauthd.store.base import Unavailable
from oauthd.store.codec import encode_audit

log = logging.getLogger("oauthd.audit")

CAPACITY = 4096  # sealed records not yet in a segment
TURN_FRAME_BYTES = 1 << 20  # a turn's frame is queued once its records pass this size
# How long the compactor lets durable records gather before it writes them to a segment:
# one write (and one thread hop) for many records, not one per journal batch.
GATHER = 0.05
RETENTION_EVERY = 3600.0


class FrameSink(Protocol):
    """The engine, as the trail sees it."""

    def append(
        self,
        payload: bytes,
        undo: Callable[[], None] | None = None,
        *,
        state: bool = True,
        future: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None]: ...

    def check_writable(self) -> None: ...


Change = tuple[bytes, Callable[[], None]]  # a change's journal payload, and its undo


@dataclass(slots=True)
class Sealed:
    """Records that share a journal frame: those of one event-loop turn (`append`,
    `append_soon`), or the one a change carries."""

    lines: list[tuple[int, bytes]]  # (n, line), in chain order
    # The frame's own future: never handed out (a caller that is cancelled must not cancel
    # it: a cancelled frame would look undone to the compactor, and its records never
    # reach a segment); callers wait on futures of their own (`waiters`).
    durable: asyncio.Future[None]
    size: int = 0  # bytes of its lines
    logged: list[AuditEvent] | None = None  # logged once the frame is durable
    tracked: bool = False  # among the records nobody waits for (`track_unwaited`)
    # One per record a caller waits for (`append`, `durable`), told once the frame is
    # durable: a caller cancelled while it waits cancels its own future, never the frame's.
    waiters: list[asyncio.Future[None]] | None = None


def _audit_refusal(failure: BaseException) -> BaseException:
    return Unavailable(f"audit record cannot be saved: {failure}")


def _as_is(failure: BaseException) -> BaseException:
    return failure


def _release(
    waiters: list[asyncio.Future[None]],
    refusal: Callable[[BaseException], BaseException],
    durable: asyncio.Future[None],
) -> None:
    """Tell each caller what the frame did: done, or failed with `refusal(failure)` (a
    turn's records: `Unavailable`; a change: the `DiskError` as it is)."""
    if durable.cancelled():
        failure: BaseException | None = DiskError("the journal frame was cancelled")
    else:
        failure = durable.exception()
    for waiter in waiters:
        if waiter.done():
            continue
        if failure is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(refusal(failure))


def _log_if_durable(events: list[AuditEvent], durable: asyncio.Future[None]) -> None:
    if not durable.cancelled() and durable.exception() is None:
        for event in events:
            log_durable(event)


class FileTrail(AuditTrail):
    def __init__(
        self,
        frames: FrameSink,
        files: AuditFiles,
        clock: Clock,
        chain: Chain,
        *,
        enabled: bool = True,
        retention: float = 0.0,
        capacity: int = CAPACITY,
    ) -> None:
        self.chain = chain
        self.enabled = enabled
        self.retention = retention
        self.capacity = capacity
        self._frames = frames
        self._files = files
        self._clock = clock
        self._pending: deque[Sealed] = deque()  # frames queued, not in a segment yet
        self._batch: Sealed | None = None  # this turn's records, their frame not queued
        self._batch_before = chain.head  # the head before the first of them
        self._sealed = 0  # records sealed so far
        self._done = 0  # ... of which in a segment, or dropped (their frame failed)
        self._progress = asyncio.Event()
        self._wake = asyncio.Event()
        self._error: OSError | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._log = Throttle()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._compact_loop(), name="audit-compact"))
        if self.retention > 0:
            self._tasks.append(asyncio.create_task(self._retention_loop(), name="audit-expire"))

    @property
    def waiting(self) -> int:
        """Sealed records not in a segment yet."""
        return self._sealed - self._done

    async def room(self) -> None:
        """Return once a record can be sealed without the buffer passing `capacity`; the
        caller seals in the same synchronous step (no await in between). `Unavailable`
        (503) while the buffer is full and the segments cannot be written: the request
        fails at once and changes nothing, rather than waiting for the disk."""
        while self.enabled and self.waiting >= self.capacity:
            if self._error is not None:
                raise Unavailable(f"audit segments cannot be written: {self._error}")
            self._progress.clear()
            await self._progress.wait()

    def stage(self, event: AuditEvent, change: Callable[[bytes], Change]) -> asyncio.Future[None]:
        """Seal `event` into the frame of the change it describes (`change(line)`: its
        payload and undo), so that neither is ever on disk without the other. The future
        is done once the frame is durable, failed (`DiskError`) after the change and the
        head were put back. Call `room` first.

        A record of its own (`append`, `durable`, `append_soon`) joins the frame of this
        event-loop turn's records instead, queued once the turn's callbacks have run, or
        before the next change's frame: the journal keeps the chain's order."""
        self.flush()
        line, before = self.chain.seal(event, self._clock.now())
        payload, undo = change(line)

        def undo_both() -> None:
            self.flush()  # a turn's frame sealed after this one fails (and is undone) first
            undo()
            self.chain.restore(before)

        sealed = Sealed([(self.chain.head.n, line)], self._frames.append(payload, undo_both))
        self._sealed += 1
        if logs_durable(event):
            sealed.logged = [event]
        self._queue(sealed)
        waiter = asyncio.get_running_loop().create_future()
        sealed.durable.add_done_callback(partial(_release, [waiter], _as_is))
        return waiter

    def _undo_turn(self, before: ChainHead) -> None:
        self.flush()  # as in `stage`: a later turn's frame is undone first
        self.chain.restore(before)

    def _batched(self, event: AuditEvent) -> Sealed:
        """`event` sealed into this turn's frame (opened if there is none, or if the open
        one reached TURN_FRAME_BYTES: a frame stays far below the journal's limit)."""
        if self._batch is not None and self._batch.size >= TURN_FRAME_BYTES:
            self.flush()
        line, before = self.chain.seal(event, self._clock.now())
        batch = self._batch
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._batch = Sealed([], loop.create_future())
            self._batch_before = before
            loop.call_soon(self.flush)
        batch.lines.append((self.chain.head.n, line))
        batch.size += len(line) + 1
        self._sealed += 1
        if logs_durable(event):
            if batch.logged is None:
                batch.logged = []
            batch.logged.append(event)
        return batch

    def flush(self) -> None:
        """Queue this turn's frame of records now, if there is one."""
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        before = self._batch_before
        self._frames.append(
            encode_audit([line for _, line in batch.lines]),
            partial(self._undo_turn, before),
            state=False,
            future=batch.durable,
        )
        self._queue(batch)

    def _queue(self, sealed: Sealed) -> None:
        if not self._pending:  # the compactor waits for the oldest frame only
            sealed.durable.add_done_callback(self._settled)
        self._pending.append(sealed)
        if sealed.waiters:
            sealed.durable.add_done_callback(partial(_release, sealed.waiters, _audit_refusal))
        if sealed.logged:
            sealed.durable.add_done_callback(partial(_log_if_durable, sealed.logged))

    def _waiter(self, batch: Sealed) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        if batch.waiters is None:
            batch.waiters = [waiter]
        else:
            batch.waiters.append(waiter)
        return waiter

    def _settled(self, durable: asyncio.Future[None]) -> None:
        self._wake.set()

    def _joinable(self) -> bool:
        """A record can join this turn's frame now: the trail is on, the buffer has room
        and the journal works (asked once per frame: a frame queued after the journal
        failed fails as a whole)."""
        if not self.enabled or self._sealed - self._done >= self.capacity:
            return False
        if self._batch is not None:
            return True
        try:
            self._frames.check_writable()
        except DiskError:
            return False
        return True

    def append_soon(self, event: AuditEvent) -> None:
        """Sealed into this turn's frame now, when it can be (no task: one per forwarded
        call would cost more than the record); else as the base class does (where a
        journal that fails fails it, and that is logged)."""
        if not self._joinable():
            super().append_soon(event)
            return
        if self._batch is None and unwaited_full():
            return
        batch = self._batched(event)
        if not batch.tracked:
            batch.tracked = True
            track_unwaited(self._waiter(batch))  # its failure is logged there

    async def append(self, event: AuditEvent) -> None:
        if not self.enabled:
            log_durable(event)
            return
        if self.waiting >= self.capacity:  # no coroutine for `room` when there is room
            await self.room()
        try:
            self._frames.check_writable()
        except DiskError as exc:
            raise Unavailable(f"audit record cannot be saved: {exc}") from None
        await self._waiter(self._batched(event))

    def durable(self, event: AuditEvent) -> Awaitable[None]:
        """Sealed into this turn's frame now, without a coroutine, when it can be; else
        `append`'s coroutine."""
        if not self._joinable():
            return self.append(event)  # waits for room, or refuses
        return self._waiter(self._batched(event))

    # -- compaction -------------------------------------------------------------------------

    async def _compact_loop(self) -> None:
        backoff = Backoff()
        ready: list[tuple[int, bytes]] = []
        while True:
            await self._wake.wait()
            if not self._closing and self.waiting < self.capacity // 2:
                await asyncio.sleep(GATHER)
            self._wake.clear()
            while self._pending and self._pending[0].durable.done():
                item = self._pending.popleft()
                if item.durable.cancelled() or item.durable.exception() is not None:
                    self._advance(len(item.lines))  # undone: later records take their n
                else:
                    ready.extend(item.lines)
            if self._pending:  # frames settle in order: wake when the oldest left has
                self._pending[0].durable.add_done_callback(self._settled)
            if ready and await self._write(ready, backoff):
                self._advance(len(ready))
                ready = []
            if self._closing and (self._error is not None or not (ready or self._pending)):
                return  # what was not written stays in the journal
            if ready:
                self._wake.set()  # try again (after the backoff `_write` slept)

    async def _write(self, ready: list[tuple[int, bytes]], backoff: Backoff) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._files.append, list(ready))
        except OSError as exc:
            self._error = exc
            self._progress.set()  # a `sync` waiting hears of it
            if self._log.due():
                log.error(
                    f"audit segment write failed: {exc.strerror or exc}; the records stay "
                    "in the journal, retrying",
                    extra={"event": "audit_write_failed"},
                )
            await asyncio.sleep(backoff.next_delay())
            return False
        self._error = None
        backoff.reset()
        return True

    def _advance(self, count: int) -> None:
        self._done += count
        self._progress.set()

    async def sync(self) -> None:
        """Every record sealed so far in a segment (or dropped), fsynced; OSError if the
        segments cannot be written now (then the journal keeps its segments)."""
        self.flush()
        target = self._sealed
        self._wake.set()
        while self._done < target:
            if self._error is not None:
                raise self._error
            self._progress.clear()
            await self._progress.wait()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._sync_files)

    def _sync_files(self) -> None:
        self._files.sync()
        self._files.write_anchor()

    # -- retention --------------------------------------------------------------------------

    async def expire(self) -> list[str]:
        """Delete the segments past `retention` (never the current one)."""
        if self.retention <= 0:
            return []
        cutoff = self._clock.now() - self.retention
        loop = asyncio.get_running_loop()
        doomed = await loop.run_in_executor(self._executor, self._files.expire, cutoff)
        for name in doomed:
            log.info(f"audit segment {name} is past retention: deleted")
        return doomed

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.expire()
            except Exception as exc:  # never the end of retention
                log.warning(f"audit retention: {exc}", extra={"event": "audit_expire_failed"})
            await asyncio.sleep(RETENTION_EVERY)

    def _close_files(self) -> None:
        self._files.sync()  # the directory too: the anchor must not name a lost segment
        self._files.close()
        self._files.write_anchor()

    async def close(self) -> None:
        """Write what is sealed, fsync, stop (after the engine closed: every frame is
        settled then)."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_files)
        finally:
            self._executor.shutdown(wait=True)
