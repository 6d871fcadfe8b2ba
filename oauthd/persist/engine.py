"""`Engine`: the file backend's durability, from start-up recovery to the last snapshot.

Life cycle: `open()` (dir, lock, recovery) -> the store applies what was recovered ->
`start(source)` (journal segment, saver task; the saver is disabled until here, so nothing
is ever saved before a successful load) -> `commit()` per change -> `close()` (final
snapshot, unlock).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from oauthd.persist.backoff import Backoff, Throttle
from oauthd.persist.contracts import EngineObserver, SaveSchedule, SnapshotSource
from oauthd.persist.errors import DiskError, PersistError, startup_io_error
from oauthd.persist.health import FsyncStats, Health
from oauthd.persist.journal import MAX_PAYLOAD, JournalWriter, Undo, list_segments
from oauthd.persist.migrate import Migration
from oauthd.persist.recovery import Loader, Recovered
from oauthd.persist.snapshot import Chunk, write_snapshot
from oauthd.persist.statedir import StateDir

log = logging.getLogger("oauthd.persist")

RETRY_FIRST = 0.5
RETRY_MAX = 5.0


class Engine:
    def __init__(
        self,
        path: Path,
        *,
        journaled: bool,
        schedule: SaveSchedule,
        version: int,
        migrations: Mapping[int, Migration],
        wall_clock: Callable[[], float] = time.time,
        observer: EngineObserver | None = None,
    ) -> None:
        self.state = StateDir(path)
        self.observer = observer
        self.journaled = journaled
        self.schedule = schedule
        self.version = version
        self.migrations = migrations
        self._wall = wall_clock
        self.seq = 0
        self.fsync_stats = FsyncStats()
        self._snapshot_seq = 0
        self._loaded = False
        self._source: SnapshotSource | None = None
        self._journal: JournalWriter | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._saver: asyncio.Task[None] | None = None
        self._save_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._dirty_since: float | None = None
        self._trailing_since: float | None = None  # journaled frames that change no record
        self._last_change = 0.0
        self._last_save = 0.0
        self._retry_delay = 0.0
        self._snapshot_error: str | None = None
        self._last_save_at: float | None = None
        self._last_save_seconds: float | None = None
        self._last_save_bytes: int | None = None
        self._needs_marker = False
        # After a journal failure: the changes of the failed batches were undone
        # (`_rollbacks` counts it), a snapshot frozen after that must cover memory
        # (`_covered`), then a new segment is tried at `_reopen_at`, backing off.
        self._rollbacks = 0
        self._covered = False
        self._reopen_at = 0.0
        self._journal_backoff = Backoff()
        self._journal_troubled = False  # failed since the last durable batch
        self._journal_log = Throttle()
        self._snapshot_log = Throttle()
        # Run before journal segments are deleted (the audit trail moves the records they
        # hold into its own files); an OSError keeps the segments.
        self.before_delete: Callable[[], Awaitable[None]] | None = None
        # Run at close, after the journal's last frame is settled and before the state dir
        # is unlocked (the audit trail's last writes, its anchor among them).
        self.before_unlock: Callable[[], Awaitable[None]] | None = None

    # -- start-up -------------------------------------------------------------------------

    def open(
        self,
        decode: Callable[[Iterable[Chunk]], Any],
        *,
        accept_empty: bool = False,
        recover: bool = False,
    ) -> Recovered:
        """Create/lock the state dir and run recovery (see `Loader`). Blocking: call it
        before serving. An I/O error on the way (EACCES, EROFS, ENOSPC while moving a torn
        tail aside, ...) is a `RecoveryError` naming the path and the errno: one line and
        exit 78, not a traceback."""
        try:
            self.state.ensure()
            self.state.lock()
        except OSError as exc:
            raise startup_io_error(exc, self.state.path) from None
        try:
            for name in self.state.remove_temp_files():
                log.info(f"removed {name}, left by a process that was killed mid-write")
            recovered = Loader(self.state, self.version, self.migrations, decode).recover(
                accept_empty=accept_empty, recover_damage=recover
            )
        except OSError as exc:
            self.state.unlock()
            raise startup_io_error(exc, self.state.path) from None
        except BaseException:
            self.state.unlock()
            raise
        for event in recovered.events:
            log.info(event, extra={"event": "recovery"})
        self.seq = recovered.last_seq
        self._snapshot_seq = recovered.base_seq
        self._needs_marker = recovered.first_boot
        return recovered

    async def start(self, source: SnapshotSource, recovered: Recovered) -> None:
        """The store has applied `recovered`: begin journaling and saving."""
        self._source = source
        self._loaded = True
        if self.journaled:
            self._journal = JournalWriter(self.state, self._fsynced, self._journal_failed)
            try:
                await self._journal.open_segment(self.seq + 1)
            except OSError as exc:  # start degraded; the saver retries until the disk is back
                self._journal.failure = f"journal segment not created: {exc.strerror or exc}"
                self._journal_failed(self._journal.failure)
        if recovered.needs_save or recovered.entries:
            self._dirty_since = self._last_change = asyncio.get_running_loop().time()
            await self.save()
        self._last_save = asyncio.get_running_loop().time()
        self._saver = asyncio.create_task(self._save_loop(), name="snapshot-saver")

    # -- changes ----------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise `DiskError` if a change made now could not be made durable."""
        if not self._loaded:
            raise DiskError("state not loaded")
        if self._journal is not None and self._journal.failure is not None:
            raise DiskError(self._journal.failure)
        if not self.journaled and self._snapshot_error is not None:
            raise DiskError(self._snapshot_error)

    def _fsynced(self, seconds: float, records: int) -> None:
        self.fsync_stats.add(seconds, records)
        if self._journal_troubled:  # a batch is durable again: the journal really works
            self._journal_troubled = False
            self._journal_backoff.reset()
            self._journal_log.reset()
        if self.observer is not None:
            self.observer.journal_fsynced(seconds, records)

    def _journal_failed(self, reason: str) -> None:
        """The failed changes were undone in memory, but their seq numbers are spent: a
        snapshot frozen from now on must cover memory before a new segment can start
        (at `seq + 1`), and the new segment waits for the backoff, so that a disk whose
        fdatasync keeps failing is not cycled through snapshot, reopen, failure."""
        now = asyncio.get_running_loop().time()
        self._rollbacks += 1
        self._covered = False
        self._journal_troubled = True
        self._reopen_at = now + self._journal_backoff.next_delay()
        self._log_journal_trouble(reason)
        if self._dirty_since is None:
            self._dirty_since = self._last_change = now
        self._retry_delay = max(self._retry_delay, RETRY_FIRST)
        self._wake.set()

    def _log_journal_trouble(self, reason: str) -> None:
        if self._journal_log.due():
            suppressed = self._journal_log.take_suppressed()
            log.error(reason, extra={"event": "journal_failed", "suppressed": suppressed})

    async def commit(self, payload: bytes, undo: Undo | None = None) -> None:
        """Record one change (already applied in memory); return once it is durable. If
        the journal fails it, `undo` has run before this raises `DiskError`. Runs
        synchronously up to the journal append, so seq order is memory order."""
        await self.append(payload, undo)

    def append(
        self,
        payload: bytes,
        undo: Undo | None = None,
        *,
        state: bool = True,
        future: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None]:
        """`commit` without waiting: the frame is queued now (frames appended in one
        synchronous step share a batch); the future (`future`, else a new one) is done
        once it is durable (at once without a journal), or failed (`DiskError`) after
        `undo` ran. `state` False: a frame that changes no record (audit records): it
        needs a snapshot only to trim the journal, at the `interval` pace, not after the
        debounce."""
        loop = asyncio.get_running_loop()
        if self.journaled and (self._journal is None or len(payload) > MAX_PAYLOAD):
            # refused before it takes a seq: the journal's seq numbers stay gapless
            reason = (
                "the journal is closed"
                if self._journal is None
                else f"a journal frame of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit"
            )
            if undo is not None:
                undo()
            refused = loop.create_future() if future is None else future
            refused.set_exception(DiskError(reason))
            return refused
        self.seq += 1
        if not state:
            if self._dirty_since is None and self._trailing_since is None:
                self._trailing_since = loop.time()
                self._wake.set()
        else:
            self._last_change = now = loop.time()
            if self._dirty_since is None:
                self._dirty_since = now
                self._wake.set()
        if self._journal is not None:
            return self._journal.append(self.seq, payload, undo, future)
        done = loop.create_future() if future is None else future
        if not done.done():
            done.set_result(None)
        return done

    # -- saving ---------------------------------------------------------------------------

    def _due_in(self) -> float | None:
        """Seconds until the next save is due; None if nothing needs saving."""
        s = self.schedule
        if self._dirty_since is not None:
            due = min(
                self._last_change + s.debounce,
                self._dirty_since + s.max_wait,
                self._last_save + s.interval,
            )
        elif self._trailing_since is not None:  # only frames that change no record
            due = self._last_save + s.interval
        else:
            return None
        if self._retry_delay:
            due = max(due, self._last_save + self._retry_delay)
        return max(0.0, due - asyncio.get_running_loop().time())

    def _reopen_in(self) -> float | None:
        """Seconds until a new journal segment is due; None if none is (yet)."""
        journal = self._journal
        if journal is None or journal.failure is None or not self._covered:
            return None
        return max(0.0, self._reopen_at - asyncio.get_running_loop().time())

    async def _save_loop(self) -> None:
        while True:
            reopen, save = self._reopen_in(), self._due_in()
            delay = min((d for d in (reopen, save) if d is not None), default=None)
            if delay is None or delay > 0:
                # not wait_for: on Python 3.11 it swallows a cancel (close()) that arrives
                # in the turn the wake-up completes, and the saver then never stops
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.clear()
            elif reopen == 0:
                await self._reopen_journal()
            else:
                await self.save()

    async def _reopen_journal(self) -> None:
        journal = self._journal
        assert journal is not None
        try:
            await journal.open_segment(self.seq + 1)
        except OSError as exc:
            journal.failure = f"journal reopen failed: {exc.strerror or exc}"
            delay = self._journal_backoff.next_delay()
            self._reopen_at = asyncio.get_running_loop().time() + delay
            self._log_journal_trouble(journal.failure)
            return
        log.warning("journal writes work again", extra={"event": "journal_recovered"})

    async def save(self) -> bool:
        """Write a snapshot of the current state now. False (and health degraded) if the
        disk refused; the previous generations are untouched then."""
        source = self._source
        if not self._loaded or source is None:  # an invariant, kept even under python -O
            raise PersistError("no save before a successful load")
        async with self._save_lock:
            return await self._save_locked(source)

    async def _save_locked(self, source: SnapshotSource) -> bool:
        loop = asyncio.get_running_loop()
        await source.prepare_scan()
        seq, started, saved_at = self.seq, time.perf_counter(), self._wall()
        rollbacks = self._rollbacks
        self._last_save, self._dirty_since, self._trailing_since = loop.time(), None, None
        sections = source.freeze()
        if self._journal is not None:
            self._journal.rotate(seq + 1)
        try:
            size = await write_snapshot(
                self.state,
                self._executor,
                version=self.version,
                seq=seq,
                saved_at=saved_at,
                sections=sections,
            )
        except OSError as exc:
            self._save_failed(exc)
            return False
        finally:
            await source.thaw()
        self._save_succeeded(seq, saved_at, time.perf_counter() - started, size)
        await self._after_save(loop, seq, rollbacks)
        return True

    def _save_failed(self, exc: OSError) -> None:
        self._snapshot_error = f"snapshot write failed: {exc.strerror or exc}"
        self._dirty_since = self._dirty_since or self._last_save
        self._retry_delay = min(RETRY_MAX, max(RETRY_FIRST, self._retry_delay * 2))
        if self.observer is not None:
            self.observer.snapshot_failed()
        if self._snapshot_log.due():
            journal_ok = self._journal is not None and self._journal.failure is None
            log.error(
                self._snapshot_error
                + ("; the journal still makes every change durable" if journal_ok else ""),
                extra={
                    "event": "snapshot_failed",
                    "suppressed": self._snapshot_log.take_suppressed(),
                },
            )

    def _save_succeeded(self, seq: int, saved_at: float, seconds: float, size: int) -> None:
        if self._snapshot_error is not None:
            log.warning("snapshot writes work again", extra={"event": "snapshot_recovered"})
            self._snapshot_log.reset()
        self._snapshot_error = None
        self._retry_delay = 0.0
        self._last_save_at, self._last_save_seconds, self._last_save_bytes = saved_at, seconds, size
        if self.observer is not None:
            self.observer.snapshot_written(saved_at, seconds, size)
        log.info(
            "snapshot written",
            extra={"event": "snapshot", "seq": seq, "bytes": size, "seconds": round(seconds, 3)},
        )

    async def _after_save(self, loop: asyncio.AbstractEventLoop, seq: int, rollbacks: int) -> None:
        previous, self._snapshot_seq = self._snapshot_seq, seq
        if self._needs_marker:  # first boot: the dir has state from now on
            try:
                await loop.run_in_executor(self._executor, self.state.write_marker)
                self._needs_marker = False
            except OSError as exc:
                log.warning(f"could not write the first-boot marker: {exc}")
        journal = self._journal
        # A new segment may start once a snapshot holds memory as it is: frozen after the
        # last undo of failed changes (one frozen while a batch was failing holds them),
        # and with every seq spent so far.
        failed = journal is not None and journal.failure is not None
        if failed and seq == self.seq and rollbacks == self._rollbacks:
            self._covered = True
            self._wake.set()
        doomed = self._doomed_segments(previous)
        if not doomed:
            return
        try:
            if self.before_delete is not None:
                await self.before_delete()
            await loop.run_in_executor(self._executor, self._delete_segments, doomed)
        except OSError as exc:
            log.warning(f"could not delete old journal segments: {exc}")

    def _doomed_segments(self, covered_seq: int) -> list[str]:
        """Segments whose every record is in BOTH kept generations (<= the older one's
        seq): falling back to the previous generation still finds its journal."""
        segments = list_segments(self.state)
        return [
            name for (_, name), (nxt, _) in itertools.pairwise(segments) if nxt <= covered_seq + 1
        ]

    def _delete_segments(self, doomed: list[str]) -> None:
        for name in doomed:
            os.unlink(self.state.file(name))
        if doomed:
            self.state.fsync_dir()

    # -- health and shutdown ------------------------------------------------------------------

    def health(self) -> Health:
        return Health(
            loaded=self._loaded,
            journaled=self.journaled,
            journal_error=self._journal.failure if self._journal else None,
            snapshot_error=self._snapshot_error,
            seq=self.seq,
            snapshot_seq=self._snapshot_seq,
            last_save_at=self._last_save_at,
            last_save_seconds=self._last_save_seconds,
            last_save_bytes=self._last_save_bytes,
        )

    async def close(self) -> None:
        """Final snapshot if anything changed, flush the journal, `before_unlock`, release
        the lock."""
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        if self._loaded and (self._dirty_since is not None or self.seq != self._snapshot_seq):
            await self.save()
        if self._journal is not None:
            await self._journal.close()
            self._journal = None
        self._executor.shutdown(wait=True)
        self._loaded = False
        try:
            if self.before_unlock is not None:
                await self.before_unlock()
        finally:
            self.state.unlock()
