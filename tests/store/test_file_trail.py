"""The file backend's audit trail: same batch as the change, undo puts the head back,
recovery from the journal (torn segment line, superseded frames, frames at or below the
snapshot's seq), backpressure, retention, `enabled = false`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from oauthd.audit import AuditEvent, Chain, ChainHead, verify
from oauthd.audit.trail import settle_pending
from oauthd.clock import FakeClock, SystemClock
from oauthd.persist import DiskError
from oauthd.persist.journal import list_segments, scan_segment
from oauthd.persist.statedir import LOCK, StateDir
from oauthd.store import Unavailable, file_trail
from oauthd.store.audit_files import AuditFiles
from oauthd.store.audit_reader import FileAuditReader
from oauthd.store.file import FileStore
from oauthd.store.file_trail import GATHER, FileTrail
from tests.persist.test_engine_faults import Switch
from tests.support.persist import engine_for, open_store
from tests.support.records import make_grant


def event(op: str) -> AuditEvent:
    return AuditEvent("test_write", user="alice", detail={"op": op})


async def trail_of(state: Path) -> list[tuple[str, bytes]]:
    return [x async for x in FileAuditReader(state).lines("")]


async def assert_intact(state: Path, ops: list[str]) -> None:
    lines = await trail_of(state)
    verdict = verify(_chain(lines), lines)
    assert verdict.ok, verdict.problem
    assert [orjson.loads(line)["op"] for _, line in lines] == ops


async def assert_intact_after_restart(state: Path, ops: list[str]) -> None:
    """A daemon started on `state` (moving the journal's records into the segments) and
    stopped again leaves a whole chain of `ops`."""
    reopened = await open_store(state, SystemClock())
    await reopened.close()
    await assert_intact(state, ops)


def _chain(lines: list[tuple[str, bytes]]) -> str:
    return str(orjson.loads(lines[0][1])["chain"]) if lines else ""


def crash_copy(src: Path) -> Path:
    """What kill -9 leaves: every file, the audit dir included, no lock."""
    dst = src.with_name(src.name + "-crashed")
    shutil.copytree(src, dst, ignore=lambda _, names: [n for n in names if n == LOCK])
    return dst


async def test_records_continue_the_chain_across_a_restart(tmp_path: Path) -> None:
    store = await open_store(tmp_path, SystemClock())
    await store.grants.put(make_grant(id="g1"), audit=event("1"))
    await store.audit.append(event("2"))
    await store.grants.delete("g1", audit=event("3"))
    await store.close()
    store = await open_store(tmp_path, SystemClock())
    assert store.audit.chain.head.n == 3
    await store.audit.append(event("4"))
    await store.close()
    await assert_intact(tmp_path, ["1", "2", "3", "4"])


async def test_a_failed_batch_puts_the_head_back_and_later_records_supersede_its_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(tmp_path, SystemClock())
    await store.audit.append(event("1"))
    head = store.audit.chain.head
    switch = Switch(monkeypatch)
    switch.on = True
    results = await asyncio.gather(
        store.grants.put(make_grant(id="a"), audit=event("lost-a")),
        store.audit.append(event("lost-b")),
        store.audit.durable(event("lost-c")),  # the same turn's frame as lost-b
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [Unavailable, Unavailable, Unavailable]
    assert "audit record cannot be saved" in str(results[2])
    assert store.audit.chain.head == head
    switch.on = False
    assert await store.engine.save()
    for _ in range(100):  # the journal reopens after its backoff (0.5 s)
        if store.engine.health().journal_error is None:
            break
        await asyncio.sleep(0.05)
    await store.audit.append(event("2"))
    copy = crash_copy(tmp_path)
    await store.close()
    await assert_intact(copy, ["1", "2"])  # read before any restart
    await assert_intact_after_restart(copy, ["1", "2"])


async def test_journal_records_at_or_below_the_snapshot_seq_reach_the_segments(
    tmp_path: Path,
) -> None:
    """The segments cannot be written: the records stay in the journal (its segments are
    kept after a snapshot); a restart moves them into the segments."""
    store = await open_store(tmp_path, SystemClock())
    await store.audit.append(event("1"))
    await store.audit.sync()

    def refuse(*_: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    store.audit._files.append = refuse  # type: ignore[method-assign]
    for op in ("2", "3"):
        await store.grants.put(make_grant(id=op), audit=event(op))
    assert await store.engine.save()
    await store.grants.put(make_grant(id="4"))
    assert await store.engine.save()  # would delete the first segment, but the sync fails
    copy = crash_copy(tmp_path)
    store.audit._closing = True
    await store.engine.close()
    await assert_intact(copy, ["1", "2", "3"])
    reopened = await open_store(copy, SystemClock())
    assert reopened.audit.chain.head.n == 3
    await reopened.close()
    await assert_intact(copy, ["1", "2", "3"])


async def test_a_torn_last_segment_line_is_cut_and_comes_back_from_the_journal(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path, SystemClock())
    for op in ("1", "2"):
        await store.audit.append(event(op))
    await store.audit.sync()
    copy = crash_copy(tmp_path)
    await store.close()
    segment = next((copy / "audit").iterdir())
    data = segment.read_bytes()
    segment.write_bytes(data[:-20])  # the second line torn
    reopened = await open_store(copy, SystemClock())
    assert reopened.audit.chain.head.n == 2
    await reopened.close()
    await assert_intact(copy, ["1", "2"])


async def test_writers_wait_for_room_when_the_buffer_is_full(tmp_path: Path) -> None:
    store = await open_store(tmp_path, SystemClock())
    trail = store.audit
    trail.capacity = 2
    gate = threading.Event()
    real = trail._files.append

    def slow(records: Any) -> None:
        gate.wait(10)
        real(records)

    trail._files.append = slow  # type: ignore[method-assign]
    first = [asyncio.create_task(trail.append(event(str(i)))) for i in range(2)]
    await asyncio.gather(*first)  # durable in the journal; the segments are held up
    third = asyncio.create_task(store.grants.put(make_grant(id="g"), audit=event("2")))
    await asyncio.sleep(0.2)
    assert not third.done() and trail.waiting == 2
    assert await store.grants.get("g") is None  # it waits before changing anything
    gate.set()
    await asyncio.wait_for(third, 5)
    await store.close()
    await assert_intact(tmp_path, ["0", "1", "2"])


async def test_segments_past_retention_are_deleted_but_never_the_current_one(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_000_000.0)
    store = await open_store(tmp_path, clock)
    store.audit._files.rotate_at = 1  # a segment per record
    store.audit.retention = 100.0
    for op in ("1", "2", "3"):
        await store.audit.append(event(op))
        clock.advance(60)
    await store.audit.sync()
    assert len(list((tmp_path / "audit").iterdir())) == 3
    clock.advance(30)  # now - 100 is past record 1 (180 s old) and 2 (120 s), not 3 (60 s)
    assert await store.audit.expire() == ["audit-00000000000000000001.jsonl",
                                          "audit-00000000000000000002.jsonl"]  # fmt: skip
    clock.advance(1000)
    assert await store.audit.expire() == []  # the current segment stays
    await store.close()
    verdict = verify(_chain(await trail_of(tmp_path)), await trail_of(tmp_path))
    assert verdict.ok and (verdict.first, verdict.last) == (3, 3)


async def test_disabled_audit_writes_no_record_but_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from oauthd.config import load_config

    config = tmp_path / "c.toml"
    config.write_text("[audit]\nenabled = false\n")
    audit = load_config(config).audit
    store = await FileStore.open(engine_for(tmp_path / "s"), SystemClock(), audit=audit)
    with caplog.at_level("INFO", logger="oauthd.audit"):
        await store.grants.put(make_grant(id="g"), audit=event("1"))
        await store.audit.append(event("2"))
    await store.close()
    assert await trail_of(tmp_path / "s") == []
    assert store.audit.chain.head == ChainHead()
    assert [r.getMessage() for r in caplog.records].count("test write") == 2


async def test_snapshot_durability_writes_records_to_the_segments(tmp_path: Path) -> None:
    store = await open_store(tmp_path, SystemClock(), journaled=False)
    await store.grants.put(make_grant(id="g"), audit=event("1"))
    await store.audit.append(event("2"))
    await store.close()
    await assert_intact(tmp_path, ["1", "2"])


async def test_a_full_buffer_with_unwritable_segments_is_a_503_not_a_wait(tmp_path: Path) -> None:
    store = await open_store(tmp_path, SystemClock())
    trail = store.audit
    trail.capacity = 2

    def broken(records: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    trail._files.append = broken  # type: ignore[method-assign]
    for i in range(2):
        await trail.append(event(str(i)))  # durable in the journal
    await asyncio.sleep(GATHER + 0.1)  # the compactor tried, and failed
    with pytest.raises(Unavailable):
        await asyncio.wait_for(store.grants.put(make_grant(id="g"), audit=event("2")), 2)
    assert await store.grants.get("g") is None  # nothing changed
    await store.close()


async def test_a_change_and_its_record_are_one_journal_frame(tmp_path: Path) -> None:
    """A torn tail takes both or neither: the record rides in the change's own frame."""
    store = await open_store(tmp_path, SystemClock())
    await store.grants.put(make_grant(id="g1"), audit=event("1"))
    await store.audit.append(event("2"))
    copy = crash_copy(tmp_path)
    await store.close()
    frames = [
        payload
        for _, name in list_segments(StateDir(copy))
        for _, payload in scan_segment(StateDir(copy).file(name)).entries
    ]
    change, alone = frames[-2], frames[-1]
    kind, key, _, record = orjson.loads(change)
    assert (kind, key, record["op"]) == ("grants", "g1", "1")
    assert orjson.loads(alone)["op"] == "2"
    reopened = await open_store(copy, SystemClock())
    assert await reopened.grants.get("g1") is not None
    await reopened.close()
    await assert_intact(copy, ["1", "2"])


def journal_frames(state: Path) -> list[bytes]:
    return [
        payload
        for _, name in list_segments(StateDir(state))
        for _, payload in scan_segment(StateDir(state).file(name)).entries
    ]


async def test_the_records_of_one_loop_turn_share_one_frame_and_come_back_after_a_crash(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path, SystemClock())
    store.audit.append_soon(event("1"))
    waited = store.audit.durable(event("2"))
    store.audit.append_soon(event("3"))
    await waited
    await store.audit.append(event("4"))  # the next turn: a frame of its own
    copy = crash_copy(tmp_path)
    await store.close()
    shutil.rmtree(copy / "audit", ignore_errors=True)  # only the journal has them
    *_, turn, alone = journal_frames(copy)
    assert [orjson.loads(line)["op"] for line in turn.split(b"\n")] == ["1", "2", "3"]
    assert orjson.loads(alone)["op"] == "4"
    reopened = await open_store(copy, SystemClock())
    assert reopened.audit.chain.head.n == 4
    await reopened.close()
    await assert_intact(copy, ["1", "2", "3", "4"])


async def test_a_change_after_records_of_its_turn_is_journaled_after_them(
    tmp_path: Path,
) -> None:
    """The turn's frame goes first: the journal keeps the chain's order."""
    store = await open_store(tmp_path, SystemClock())
    store.audit.append_soon(event("1"))
    await store.grants.put(make_grant(id="g1"), audit=event("2"))
    copy = crash_copy(tmp_path)
    await store.close()
    *_, turn, change = journal_frames(copy)
    assert orjson.loads(turn)["op"] == "1"
    assert orjson.loads(change)[3]["op"] == "2"
    shutil.rmtree(copy / "audit", ignore_errors=True)
    await assert_intact_after_restart(copy, ["1", "2"])


async def test_a_caller_cancelled_while_it_waits_leaves_the_frame_and_the_others_alone(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path, SystemClock())
    waiters = [asyncio.create_task(store.audit.append(event(op))) for op in ("1", "2")]
    await asyncio.sleep(0)  # both sealed into one turn's frame
    waiters[0].cancel()
    await waiters[1]
    assert waiters[0].cancelled()
    await store.close()
    await assert_intact(tmp_path, ["1", "2"])


async def test_the_anchor_is_written_before_the_state_dir_is_unlocked(tmp_path: Path) -> None:
    store = await open_store(tmp_path, SystemClock())
    await store.audit.append(event("1"))
    await store.audit.append(event("2"))
    state = store.engine.state
    unlock, seen = state.unlock, []

    def checked_unlock() -> None:
        seen.append(orjson.loads((tmp_path / "audit-head.json").read_bytes())["n"])
        unlock()

    state.unlock = checked_unlock  # type: ignore[method-assign]
    await store.close()
    assert seen == [2]


class FakeFrames:
    """The engine as the trail sees it: frames kept in order, failed on demand as the
    journal fails a batch (undo newest first; from then on every frame fails at once)."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, Any, asyncio.Future[None]]] = []
        self.failed = False

    def append(
        self,
        payload: bytes,
        undo: Any = None,
        *,
        state: bool = True,
        future: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None]:
        done = future or asyncio.get_running_loop().create_future()
        if self.failed:
            if undo is not None:
                undo()
            done.set_exception(DiskError("journal failed"))
        else:
            self.frames.append((payload, undo, done))
        return done

    def check_writable(self) -> None:
        if self.failed:
            raise DiskError("journal failed")

    def fail_all(self) -> None:
        self.failed = True
        for _, undo, _done in reversed(self.frames):
            if undo is not None:
                undo()
        for _, _, done in self.frames:
            done.set_exception(DiskError("journal failed"))


def fake_trail(tmp_path: Path) -> tuple[FileTrail, FakeFrames]:
    frames = FakeFrames()
    trail = FileTrail(frames, AuditFiles(tmp_path / "audit"), FakeClock(1000.0), Chain("c"))
    return trail, frames


async def test_a_failed_change_frame_undoes_a_later_turns_open_frame_first(
    tmp_path: Path,
) -> None:
    """The change's frame fails while a turn's frame sealed after it is not queued yet:
    the head goes back to before the change, not to the open frame's start."""
    trail, frames = fake_trail(tmp_path)
    undone: list[str] = []
    changed = trail.stage(event("C"), lambda line: (b"[]", lambda: undone.append("C")))
    trail.append_soon(event("B"))
    frames.fail_all()
    trail.flush()  # the turn's frame, queued after the failure: fails at once
    assert trail.chain.head == ChainHead()
    assert undone == ["C"]
    with pytest.raises(DiskError):
        await changed
    await settle_pending()


async def test_a_turns_frame_is_queued_once_its_records_pass_the_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_trail, "TURN_FRAME_BYTES", 1000)
    trail, frames = fake_trail(tmp_path)
    for n in range(6):
        trail.append_soon(AuditEvent("test_write", detail={"op": str(n), "pad": "x" * 400}))
    trail.flush()
    sizes = [len(payload) for payload, _, _ in frames.frames]
    assert len(sizes) == 3 and all(size < 1000 + 600 for size in sizes)
    lines = [line for payload, _, _ in frames.frames for line in payload.split(b"\n")]
    assert [orjson.loads(line)["n"] for line in lines] == [1, 2, 3, 4, 5, 6]
    for _, _, done in frames.frames:
        done.set_result(None)
    await settle_pending()


async def test_a_writer_cancelled_while_its_change_is_journaled_keeps_the_chain_whole(
    tmp_path: Path,
) -> None:
    """A client gone mid-request cancels the handler: the change's frame is durable all the
    same, and its record reaches the segments."""
    store = await open_store(tmp_path, SystemClock())
    writer = asyncio.create_task(store.grants.put(make_grant(id="g1"), audit=event("1")))
    await asyncio.sleep(0)  # staged: the frame is queued, the writer waits
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    await store.audit.append(event("2"))
    await store.close()
    await assert_intact(tmp_path, ["1", "2"])
