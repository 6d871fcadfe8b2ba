"""The journal: frame format, torn tail versus corruption, group commit, failure, rotation."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import threading
import time
from pathlib import Path

import pytest

from oauthd.persist import journal
from oauthd.persist.engine import FsyncStats
from oauthd.persist.errors import DiskError
from oauthd.persist.journal import (
    MAGIC,
    SEGMENT_HEADER,
    JournalWriter,
    encode_frame,
    list_segments,
    scan_segment,
    segment_name,
)
from oauthd.persist.statedir import StateDir


def payloads(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 2, 100, 5000]
    return [rng.randbytes(sizes[i % len(sizes)] + rng.randrange(50)) for i in range(n)]


def segment_bytes(first: int, items: list[bytes]) -> tuple[bytes, list[int]]:
    """A whole segment and the byte offset of each frame."""
    data = SEGMENT_HEADER.pack(MAGIC, first)
    offsets = []
    for seq, payload in enumerate(items, start=first):
        offsets.append(len(data))
        data += encode_frame(seq, payload)
    return data, offsets


def write_segment(tmp_path: Path, first: int, data: bytes) -> Path:
    path = tmp_path / segment_name(first)
    path.write_bytes(data)
    return path


# -- frames --------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [1, 42, 2**40])
def test_frames_round_trip(tmp_path: Path, first: int) -> None:
    items = payloads(25)
    data, offsets = segment_bytes(first, items)
    scan = scan_segment(write_segment(tmp_path, first, data))
    assert scan.damage is None and not scan.torn
    assert scan.entries == list(enumerate(items, start=first))
    assert scan.first_seq == first and scan.last_seq == first + len(items) - 1
    assert scan.good_end == scan.size == len(data)
    assert offsets[0] == SEGMENT_HEADER.size


def test_header_only_segment_is_clean_and_empty(tmp_path: Path) -> None:
    data, _ = segment_bytes(9, [])
    scan = scan_segment(write_segment(tmp_path, 9, data))
    assert scan.damage is None and scan.entries == [] and scan.last_seq == 8


def test_segment_header_must_match_its_name(tmp_path: Path) -> None:
    data, _ = segment_bytes(5, payloads(2))
    scan = scan_segment(write_segment(tmp_path, 6, data))  # named 6, says 5
    assert scan.damage is not None and not scan.torn and scan.entries == []


# -- torn tail versus corruption -------------------------------------------------------------

ITEMS = payloads(6, seed=3)
GOOD, OFFSETS = segment_bytes(1, ITEMS[:5])
LAST = encode_frame(6, ITEMS[5])


def _bad_crc_last() -> bytes:
    frame = bytearray(LAST)
    frame[-1] ^= 0x40
    return GOOD + bytes(frame)


TORN = {
    "incomplete frame header": GOOD + LAST[:7],
    "payload cut": GOOD + LAST[:-3],
    "only the header of the last frame": GOOD + LAST[: journal.FRAME_HEADER.size],
    "zero-filled tail": GOOD + b"\0" * 4096,
    "short zero-filled tail": GOOD + b"\0" * 5,
    "bad CRC on the last frame": _bad_crc_last(),
    "garbage tail": GOOD + b"\xff" * 37,
}


@pytest.mark.parametrize("damaged", TORN.values(), ids=TORN.keys())
def test_torn_tails_are_classified_torn(tmp_path: Path, damaged: bytes) -> None:
    scan = scan_segment(write_segment(tmp_path, 1, damaged))
    assert scan.damage is not None
    assert scan.torn
    assert scan.damage_offset == scan.good_end == len(GOOD)
    assert scan.entries == list(enumerate(ITEMS[:5], start=1))


@pytest.mark.parametrize("size", [0, 3, 8, 12, SEGMENT_HEADER.size - 1])
def test_incomplete_segment_header_is_torn(tmp_path: Path, size: int) -> None:
    scan = scan_segment(write_segment(tmp_path, 4, SEGMENT_HEADER.pack(MAGIC, 4)[:size]))
    assert scan.torn and scan.damage is not None
    assert scan.entries == [] and scan.good_end == 0


def test_wrong_magic_is_not_torn(tmp_path: Path) -> None:
    scan = scan_segment(write_segment(tmp_path, 1, b"NOTOAUTH" + GOOD[8:]))
    assert scan.damage is not None and not scan.torn


def _assert_corrupt_at_frame_2(scan: journal.SegmentScan) -> None:
    assert scan.damage is not None
    assert not scan.torn, scan.damage
    assert scan.damage_offset == OFFSETS[1]
    assert scan.entries == [(1, ITEMS[0])]


def test_every_single_bit_flip_in_a_middle_frame_is_corruption(tmp_path: Path) -> None:
    """A bad frame followed by valid ones is never mistaken for a torn tail."""
    start, end = OFFSETS[1], OFFSETS[2]
    path = tmp_path / segment_name(1)
    for index in range(start, end):
        for bit in range(8):
            data = bytearray(GOOD)
            data[index] ^= 1 << bit
            path.write_bytes(bytes(data))
            _assert_corrupt_at_frame_2(scan_segment(path))


def test_bad_crc_field_in_a_middle_frame_is_corruption(tmp_path: Path) -> None:
    data = bytearray(GOOD)
    data[OFFSETS[1] + 4 : OFFSETS[1] + 8] = b"\0\0\0\0"
    _assert_corrupt_at_frame_2(scan_segment(write_segment(tmp_path, 1, bytes(data))))


def test_zeroed_middle_frame_is_corruption(tmp_path: Path) -> None:
    data = bytearray(GOOD)
    data[OFFSETS[1] : OFFSETS[2]] = bytes(OFFSETS[2] - OFFSETS[1])
    _assert_corrupt_at_frame_2(scan_segment(write_segment(tmp_path, 1, bytes(data))))


@pytest.mark.parametrize("wrong", [1, 3, 7])
def test_wrong_seq_is_corruption_even_at_the_end(tmp_path: Path, wrong: int) -> None:
    middle = GOOD[: OFFSETS[1]] + encode_frame(wrong, ITEMS[1]) + GOOD[OFFSETS[2] :]
    _assert_corrupt_at_frame_2(scan_segment(write_segment(tmp_path, 1, middle)))
    at_end = GOOD[: OFFSETS[1]] + encode_frame(wrong, ITEMS[1])
    _assert_corrupt_at_frame_2(scan_segment(write_segment(tmp_path, 1, at_end)))


def test_missing_frame_is_corruption(tmp_path: Path) -> None:
    gap = GOOD[: OFFSETS[1]] + GOOD[OFFSETS[2] :]  # frame 2 cut out, 3.. follow
    scan = scan_segment(write_segment(tmp_path, 1, gap))
    assert scan.damage is not None and not scan.torn
    assert scan.damage_offset == OFFSETS[1]
    assert "expected 2" in scan.damage


# -- the writer --------------------------------------------------------------------------------


class SyncSpy:
    """Counts bytes written and bytes covered by a completed fdatasync (journal thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float = 0.002) -> None:
        self.written = 0
        self.synced = 0
        self.calls = 0
        self.delay = delay
        self.fail: OSError | None = None
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        real_write_all, real_fdatasync = journal.write_all, os.fdatasync

        def write_all(fd: int, data: bytes | memoryview) -> None:
            real_write_all(fd, data)
            self.written += len(data)

        def fdatasync(fd: int) -> None:
            self.calls += 1
            self.entered.set()
            self.release.wait(10)
            if self.fail is not None:
                raise self.fail
            time.sleep(self.delay)
            real_fdatasync(fd)
            self.synced = self.written

        monkeypatch.setattr(journal, "write_all", write_all)
        monkeypatch.setattr(journal.os, "fdatasync", fdatasync)


class Writer(JournalWriter):
    """A writer that remembers the failures it reported."""

    def __init__(self, state: StateDir) -> None:
        self.stats = FsyncStats()
        self.reported: list[str] = []
        super().__init__(state, self.stats.add, self.reported.append)


async def new_writer(tmp_path: Path, first: int = 1) -> tuple[Writer, FsyncStats]:
    writer = Writer(StateDir(tmp_path))
    await writer.open_segment(first)
    return writer, writer.stats


async def test_group_commit_batches_and_acknowledges_only_after_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SyncSpy(monkeypatch)
    writer, stats = await new_writer(tmp_path)
    items = payloads(400, seed=11)
    ends: list[int] = []  # bytes written after the segment header once frame `seq` is in
    offset = 0
    for seq, payload in enumerate(items, start=1):
        offset += len(encode_frame(seq, payload))
        ends.append(offset)
    early: list[int] = []
    futures: list[asyncio.Future[None]] = []
    next_seq = iter(range(1, len(items) + 1))

    def check(seq: int) -> None:
        if spy.synced < ends[seq - 1]:
            early.append(seq)

    async def client(seed: int) -> None:
        """10 changes with short random pauses: appends keep arriving while a sync runs."""
        rng = random.Random(seed)
        for _ in range(10):
            seq = next(next_seq)  # seqs are taken in order, as Engine.commit does
            future = writer.append(seq, items[seq - 1])
            future.add_done_callback(lambda _, seq=seq: check(seq))
            futures.append(future)
            await asyncio.sleep(rng.random() * 0.003)

    await asyncio.gather(*(client(n) for n in range(40)))
    await asyncio.gather(*futures)
    await writer.close()

    assert early == [], f"acknowledged before their batch was synced: {early[:10]}"
    assert stats.records == len(items)
    assert 2 <= stats.count < len(items) / 4, stats
    assert stats.count + 1 == spy.calls  # and the segment header's
    scan = scan_segment(tmp_path / segment_name(1))
    assert scan.damage is None
    assert scan.entries == list(enumerate(items, start=1))


async def test_each_append_waits_for_the_sync_of_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SyncSpy(monkeypatch, delay=0)
    writer, _ = await new_writer(tmp_path)
    spy.release.clear()
    spy.entered.clear()
    first = writer.append(1, b"one")
    await asyncio.to_thread(spy.entered.wait, 5)  # the writer is inside fdatasync now
    second = writer.append(2, b"two")  # queued behind the running sync
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done()
    spy.release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert spy.calls == 3  # the header's, and the second record needed its own sync
    await writer.close()


async def test_write_failure_fails_the_batch_and_the_queue_and_stays_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SyncSpy(monkeypatch, delay=0)
    writer, _ = await new_writer(tmp_path)
    await writer.append(1, b"durable")
    spy.fail = OSError(errno.EIO, "Input/output error")
    spy.release.clear()
    spy.entered.clear()
    batch = writer.append(2, b"lost")
    await asyncio.to_thread(spy.entered.wait, 5)
    queued = [writer.append(seq, b"queued") for seq in (3, 4, 5)]
    spy.release.set()
    results = await asyncio.gather(batch, *queued, return_exceptions=True)
    assert all(isinstance(r, DiskError) for r in results), results
    assert writer.failure is not None and "Input/output error" in writer.failure
    assert writer.reported == [writer.failure]  # the engine is told once

    # Stays failed, even once the disk works again: the fd is never fsynced again.
    spy.fail = None
    calls = spy.calls
    later = writer.append(6, b"after")
    assert later.done()
    with pytest.raises(DiskError):
        await later
    await asyncio.sleep(0.02)
    assert spy.calls == calls
    await writer.close()
    scan = scan_segment(tmp_path / segment_name(1))
    assert scan.entries[0] == (1, b"durable")


async def test_short_write_error_fails_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, _ = await new_writer(tmp_path)

    def full_disk(fd: int, data: bytes | memoryview) -> None:
        os.write(fd, bytes(data)[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal, "write_all", full_disk)
    with pytest.raises(DiskError, match="No space left"):
        await writer.append(1, b"x" * 100)
    assert writer.failure is not None
    await writer.close()
    scan = scan_segment(tmp_path / segment_name(1))
    assert scan.torn and scan.entries == []  # what reached the disk is a torn tail


async def test_a_failed_batch_is_undone_newest_first_before_its_callers_hear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#11: the write of a batch succeeds and its fdatasync fails: every failed change's
    undo runs, the newest first (the same key may change twice), before any caller hears
    of the failure."""
    spy = SyncSpy(monkeypatch, delay=0)
    writer, _ = await new_writer(tmp_path)
    await writer.append(1, b"durable")
    spy.fail = OSError(errno.EIO, "Input/output error")
    spy.release.clear()
    spy.entered.clear()
    undone: list[int] = []
    heard: list[tuple[int, list[int]]] = []

    def append(seq: int) -> asyncio.Future[None]:
        future = writer.append(seq, b"lost %d" % seq, lambda: undone.append(seq))
        future.add_done_callback(lambda _: heard.append((seq, list(undone))))
        return future

    batch = append(2)
    await asyncio.to_thread(spy.entered.wait, 5)
    queued = [append(seq) for seq in (3, 4)]
    spy.release.set()
    results = await asyncio.gather(batch, *queued, return_exceptions=True)
    assert all(isinstance(r, DiskError) for r in results), results
    assert undone == [4, 3, 2]
    assert all(seen == [4, 3, 2] for _, seen in heard), heard
    await writer.close()
    scan = scan_segment(tmp_path / segment_name(1))
    assert scan.entries[0] == (1, b"durable")  # (the failed frame may follow: see the docs)


async def test_rotation_starts_a_segment_at_the_right_seq(tmp_path: Path) -> None:
    writer, _ = await new_writer(tmp_path)
    first = [writer.append(seq, f"r{seq}".encode()) for seq in (1, 2, 3)]
    writer.rotate(4)
    second = [writer.append(seq, f"r{seq}".encode()) for seq in (4, 5)]
    await asyncio.gather(*first, *second)
    writer.rotate(6)
    writer.rotate(6)  # a second rotation with nothing written in between: no new file
    await writer.append(6, b"r6")
    await writer.close()

    state = StateDir(tmp_path)
    assert list_segments(state) == [
        (1, segment_name(1)),
        (4, segment_name(4)),
        (6, segment_name(6)),
    ]
    scans = [scan_segment(tmp_path / name) for _, name in list_segments(state)]
    assert [[seq for seq, _ in s.entries] for s in scans] == [[1, 2, 3], [4, 5], [6]]
    assert all(s.damage is None for s in scans)
    assert all((tmp_path / s.name).stat().st_mode & 0o777 == 0o600 for s in scans)


async def test_rotation_before_any_write_keeps_the_segment(tmp_path: Path) -> None:
    writer, _ = await new_writer(tmp_path, first=10)
    writer.rotate(10)
    await writer.append(10, b"ten")
    await writer.close()
    assert list_segments(StateDir(tmp_path)) == [(10, segment_name(10))]
    assert scan_segment(tmp_path / segment_name(10)).entries == [(10, b"ten")]
