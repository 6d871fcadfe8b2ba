"""The journal: framed records in segment files, appended with group commit.

Segment file: 16-byte header (magic `OAUTHDJ1` + first seq, u64 little-endian), then frames:
    u32 length | u32 crc32(length, seq, payload) | u64 seq | payload
A bad frame at the very end of a segment (an incomplete write cut by a crash) is a torn
tail. A bad frame followed by a valid one is corruption.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from oauthd.persist.disk_thread import DiskThread
from oauthd.persist.errors import DiskError
from oauthd.persist.statedir import StateDir, write_all

MAGIC = b"OAUTHDJ1"
SEGMENT_HEADER = struct.Struct("<8sQ")
FRAME_HEADER = struct.Struct("<IIQ")
MAX_PAYLOAD = 16 * 1024 * 1024
SEGMENT_RE = re.compile(r"^journal-(\d{20})\.log$")

Undo = Callable[[], None]  # puts memory back as it was before one change
Pending = tuple[bytes, "asyncio.Future[None]", Undo | None]  # a frame waiting for its batch


def segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:020d}.log"


def segment_first_seq(name: str) -> int | None:
    match = SEGMENT_RE.match(name)
    return int(match.group(1)) if match else None


def _crc(length: int, seq: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<IQ", length, seq)))


def encode_frame(seq: int, payload: bytes) -> bytes:
    length = len(payload)
    return FRAME_HEADER.pack(length, _crc(length, seq, payload), seq) + payload


@dataclass(slots=True)
class SegmentScan:
    """What reading one segment found."""

    name: str
    first_seq: int
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    good_end: int = 0  # offset after the last valid frame
    size: int = 0
    damage: str | None = None  # reason, when the segment is not clean to the end
    damage_offset: int | None = None
    torn: bool = False  # the damage is only an incomplete tail

    @property
    def last_seq(self) -> int:
        return self.entries[-1][0] if self.entries else self.first_seq - 1


def _frame_at(data: bytes, offset: int) -> tuple[int, bytes, int] | str:
    """(seq, payload, next offset) of a valid frame at `offset`, else why not."""
    if len(data) - offset < FRAME_HEADER.size:
        return "incomplete frame header"
    length, crc, seq = FRAME_HEADER.unpack_from(data, offset)
    end = offset + FRAME_HEADER.size + length
    if length > MAX_PAYLOAD or end > len(data):
        return "frame runs past the end of the file"
    payload = data[offset + FRAME_HEADER.size : end]
    if _crc(length, seq, payload) != crc:
        return "CRC mismatch"
    return seq, payload, end


def _valid_frame_after(data: bytes, start: int, after_seq: int) -> bool:
    """Is there any valid frame beyond a bad one? (Then the damage is not a torn tail.)"""
    for offset in range(start + 1, len(data) - FRAME_HEADER.size + 1):
        found = _frame_at(data, offset)
        if not isinstance(found, str) and found[0] > after_seq:
            return True
    return False


def scan_segment(path: Path) -> SegmentScan:
    """Read a whole segment. Raises OSError if unreadable; damage is reported, not raised."""
    name = path.name
    first = segment_first_seq(name)
    data = path.read_bytes()
    scan = SegmentScan(name=name, first_seq=first or 0, size=len(data))
    if len(data) < SEGMENT_HEADER.size or data[:8] != MAGIC:
        scan.damage, scan.damage_offset = "bad segment header", 0
        scan.torn = len(data) < SEGMENT_HEADER.size and MAGIC.startswith(data[:8])
        return scan
    _, header_seq = SEGMENT_HEADER.unpack_from(data)
    if first is None or header_seq != first:
        scan.damage, scan.damage_offset = "segment header does not match its name", 0
        return scan
    offset, expected = SEGMENT_HEADER.size, first
    while offset < len(data):
        found = _frame_at(data, offset)
        if isinstance(found, str) or found[0] != expected:
            reason = found if isinstance(found, str) else f"seq {found[0]}, expected {expected}"
            scan.damage, scan.damage_offset = reason, offset
            scan.torn = isinstance(found, str) and not _valid_frame_after(
                data, offset, expected - 1
            )
            break
        seq, payload, offset = found
        scan.entries.append((seq, payload))
        expected += 1
    scan.good_end = offset if scan.damage is None else scan.damage_offset or 0
    return scan


def list_segments(state: StateDir) -> list[tuple[int, str]]:
    found = [(segment_first_seq(n), n) for n in state.names()]
    return sorted((seq, name) for seq, name in found if seq is not None)


class JournalWriter:
    """Appends frames to the current segment; one fdatasync covers every frame that
    arrived while the previous one ran (group commit). A failed write or fsync fails its
    batch and everything queued behind it, and the writer stays failed: the fd is never
    fsynced again (a failed fsync may have dropped the dirty pages). `open_segment` starts
    a new segment once a snapshot has covered everything.

    A failed change is undone (#11, "a 503 changes nothing"): its `undo` runs, newest
    first, before its caller hears of the failure, so memory is as it was before the
    failed batch. Frames of the failed batch that reached the file stay there (cutting
    them off would leave a gap in the seq numbers that a fall back to the older snapshot
    generation could not tell from a lost segment): a kill -9 before the next snapshot
    replays them. The rule that makes that harmless is in docs/persistence.md."""

    def __init__(
        self,
        state: StateDir,
        on_fsync: Callable[[float, int], None],
        on_failure: Callable[[str], None],
    ) -> None:
        self._state = state
        self._on_fsync = on_fsync
        self._on_failure = on_failure
        self._thread = DiskThread("journal")
        self._fd: int | None = None
        self._queue: deque[Pending | int] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failure: str | None = None
        self._closing = False
        self._segment_first: int | None = None

    async def open_segment(self, first_seq: int) -> None:
        await self._thread.run(self._new_segment, first_seq)
        self.failure = None
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="journal-flush")

    def _new_segment(self, first_seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        name = segment_name(first_seq)
        self._state.remove_quietly(name)  # an empty leftover of a failed earlier attempt
        fd = self._state.create_exclusive(name)
        try:
            # the same write + fdatasync as a batch: a segment opens only where a journal
            # write works now (a disk whose fdatasync keeps failing stays failed)
            write_all(fd, SEGMENT_HEADER.pack(MAGIC, first_seq))
            os.fdatasync(fd)
            self._state.fsync_dir()
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                self._state.remove_quietly(name)
            raise
        self._fd = fd
        self._segment_first = first_seq

    def append(
        self,
        seq: int,
        payload: bytes,
        undo: Undo | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None]:
        """The future (`future`, else a new one) is done once the frame is durable, or
        failed (`DiskError`) after `undo` ran."""
        if future is None:
            future = asyncio.get_running_loop().create_future()
        refusal = self.failure
        if refusal is None and self._closing and (self._task is None or self._task.done()):
            refusal = "the journal is closed"  # no flush loop: a frame would wait for ever
        if refusal is not None:
            if undo is not None:
                undo()
            future.set_exception(DiskError(refusal))
            return future
        self._queue.append((encode_frame(seq, payload), future, undo))
        self._wake.set()
        return future

    def rotate(self, next_seq: int) -> None:
        """Start a new segment at `next_seq` after everything queued so far."""
        self._queue.append(next_seq)
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, rotate_to = self._next_batch()
                await self._flush(batch)
                if rotate_to is not None and self.failure is None:
                    await self._rotate(rotate_to)
            if self._closing:
                return

    def _next_batch(self) -> tuple[list[Pending], int | None]:
        """Frames up to the next rotation point (returned as well, if any)."""
        batch: list[Pending] = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, int):
                return batch, item
            batch.append(item)
        return batch, None

    async def _flush(self, batch: list[Pending]) -> None:
        if not batch:
            return
        if self.failure is not None:
            self._fail(self.failure, batch)
            return
        try:
            data = b"".join(frame for frame, _, _ in batch)
            elapsed = await self._thread.run(self._write, data)
        except OSError as exc:
            self._fail(f"journal write failed: {exc.strerror or exc}", batch)
            return
        for _, future, _ in batch:
            if not future.done():
                future.set_result(None)
        self._on_fsync(elapsed, len(batch))

    def _write(self, data: bytes) -> float:
        """Write and fdatasync (in the journal thread); return the seconds it took."""
        if self._fd is None:
            raise OSError(errno.EBADF, "no journal segment open")
        started = time.perf_counter()
        write_all(self._fd, data)
        os.fdatasync(self._fd)
        return time.perf_counter() - started

    async def _rotate(self, next_seq: int) -> None:
        if next_seq == self._segment_first:
            return  # nothing was written to the current segment yet
        try:
            await self._thread.run(self._new_segment, next_seq)
        except OSError as exc:
            self._fail(f"journal rotation failed: {exc.strerror or exc}")

    def _fail(self, reason: str, batch: Iterable[Pending] = ()) -> None:
        """Fail `batch` and everything queued behind it: undo their changes, newest first
        (the queue is in seq order, behind the batch), tell the engine, then their callers."""
        self.failure = reason
        if self._fd is not None:
            os.close(self._fd)  # never fsync this fd again
            self._fd = None
        failed = [*batch, *(item for item in self._queue if not isinstance(item, int))]
        self._queue = deque(item for item in self._queue if isinstance(item, int))
        for _, _, undo in reversed(failed):
            if undo is not None:
                undo()
        self._on_failure(reason)
        for _, future, _ in failed:
            if not future.done():
                future.set_exception(DiskError(reason))

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._thread.stop()  # first: a segment still being opened sets `_fd` before this
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
