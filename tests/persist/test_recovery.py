"""Start-up recovery: every row of the loader policy (durability rule R4), through
`FileStore.open` on a real state dir."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from oauthd.clock import FakeClock
from oauthd.persist import journal as journal_module
from oauthd.persist.errors import PersistError, RecoveryError
from oauthd.persist.journal import (
    FRAME_HEADER,
    MAGIC,
    SEGMENT_HEADER,
    encode_frame,
    scan_segment,
    segment_name,
)
from oauthd.persist.statedir import MARKER, PREVIOUS, SNAPSHOT
from oauthd.store import codec
from oauthd.store.base import Unavailable
from oauthd.store.file import FileStore
from tests.support.persist import (
    Contents,
    contents,
    crash_copy,
    engine_for,
    files,
    open_store,
    put_all,
    segments,
    snapshot_doc,
)
from tests.support.records import KINDS, NOW, make, make_consent, make_grant
from tests.support.wait import eventually


def names(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()} - {"lock"}


def stamp(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: what "touch nothing" has to keep."""
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.iterdir())
        if p.is_file() and p.name != "lock"
    }


async def refused(path: Path, **kwargs: Any) -> RecoveryError:
    with pytest.raises(RecoveryError) as info:
        await open_store(path, FakeClock(NOW), **kwargs)
    assert info.value.exit_code == 78
    return info.value


async def reopened(path: Path, **kwargs: Any) -> Contents:
    store = await open_store(path, FakeClock(NOW), **kwargs)
    try:
        return await contents(store)
    finally:
        await store.close()


async def build_history(path: Path) -> tuple[Path, Contents]:
    """A state dir left by a crash: two snapshot generations and journal after both.

    seq 1-5: five grants; snapshot (seq 5); seq 6-9: a consent, a grant, an update and a
    delete; snapshot (seq 9), so the previous generation is seq 5 and the journal holds
    6..; seq 10-12 after it. Returns the crash copy and every acknowledged record."""
    store = await open_store(path / "live", FakeClock(NOW))
    grants = [make_grant() for _ in range(6)]
    await put_all(store, grants[:5])
    assert await store.engine.save()
    await put_all(store, [make_consent(), grants[5]])
    await store.grants.update(grants[1].id, lambda g: dataclasses.replace(g, successor_used=True))
    await store.grants.delete(grants[2].id)
    assert await store.engine.save()
    await put_all(store, [make(kind) for kind in ("clients", "codes", "devices")])
    expected = await contents(store)
    assert store.engine.seq == 12
    copy = crash_copy(path / "live", path / "copy")
    await store.close()
    assert snapshot_doc(copy)["seq"] == 9 and snapshot_doc(copy, PREVIOUS)["seq"] == 5
    assert segments(copy) == [segment_name(6), segment_name(10)]
    return copy, expected


# -- first boot and missing state ----------------------------------------------------------------


async def test_first_boot_starts_empty_and_writes_the_marker(tmp_path: Path) -> None:
    path = tmp_path / "new"
    assert await reopened(path) == {kind: {} for kind in KINDS}
    marker = path / MARKER
    assert marker.is_file() and stat.S_IMODE(marker.stat().st_mode) == 0o600
    assert snapshot_doc(path)["seq"] == 0  # the empty generation is written at once


async def test_first_boot_in_an_existing_empty_dir(tmp_path: Path) -> None:
    assert await reopened(tmp_path) == {kind: {} for kind in KINDS}
    assert (tmp_path / MARKER).is_file()


async def test_marker_without_snapshot_or_journal_refuses(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.grants.put(make_grant())
    await store.close()
    for name in names(tmp_path) - {MARKER}:  # the data is gone; the marker says there was some
        (tmp_path / name).unlink()
    before = stamp(tmp_path)
    error = await refused(tmp_path)
    assert "--accept-empty-state" in str(error)
    assert stamp(tmp_path) == before and names(tmp_path) == {MARKER}

    assert await reopened(tmp_path, accept_empty=True) == {kind: {} for kind in KINDS}
    assert snapshot_doc(tmp_path)["seq"] == 0


async def test_marker_with_journal_from_seq_1_rebuilds_from_the_journal(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "live")
    grants = [make_grant() for _ in range(3)]
    await put_all(store, grants)
    copy = crash_copy(tmp_path / "live", tmp_path / "copy")
    await store.close()
    for name in (SNAPSHOT, PREVIOUS):
        (copy / name).unlink(missing_ok=True)
    assert set((await reopened(copy))["grants"]) == {g.id for g in grants}


async def test_failed_start_releases_the_lock_and_saves_nothing(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_text("there was state\n")
    engine = engine_for(tmp_path)
    with pytest.raises(RecoveryError):
        await FileStore.open(engine, FakeClock())
    assert names(tmp_path) == {MARKER}
    with pytest.raises(PersistError, match="no save before a successful load"):
        await engine.save()
    await engine.close()  # nothing to save, nothing written
    assert names(tmp_path) == {MARKER}
    assert await reopened(tmp_path, accept_empty=True) == {kind: {} for kind in KINDS}


async def test_no_save_before_a_successful_load(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.grants.put(make_grant())
    await store.close()
    before = stamp(tmp_path)
    engine = engine_for(tmp_path)
    with pytest.raises(PersistError, match="no save before a successful load"):
        await engine.save()  # not even opened
    engine.open(codec_decode_document())
    with pytest.raises(PersistError, match="no save before a successful load"):
        await engine.save()  # opened (recovered) but the store has not applied it yet
    await engine.close()
    assert stamp(tmp_path) == before


def codec_decode_document() -> Any:
    from oauthd.store.file import decode_document

    return decode_document


# -- unreadable files ------------------------------------------------------------------------


async def test_unreadable_snapshot_refuses_and_touches_nothing(tmp_path: Path) -> None:
    copy, _ = await build_history(tmp_path)
    (copy / SNAPSHOT).unlink()
    (copy / SNAPSHOT).mkdir()  # reading it fails with an OSError (EISDIR), as EACCES would
    before, listing = stamp(copy), names(copy)
    error = await refused(copy)
    assert str(copy / SNAPSHOT) in str(error) and "cannot read" in str(error)
    assert stamp(copy) == before and names(copy) == listing  # nothing quarantined


async def test_unreadable_journal_segment_refuses_and_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy, _ = await build_history(tmp_path)
    segment = copy / segment_name(10)
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == segment:
            raise OSError(5, "Input/output error", str(self))
        return real(self)

    before, listing = stamp(copy), names(copy)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    error = await refused(copy)
    monkeypatch.undo()
    assert str(segment) in str(error) and "Input/output error" in str(error)
    assert stamp(copy) == before and names(copy) == listing


# -- corrupt snapshots --------------------------------------------------------------------------


def _bad_record(raw: bytes) -> bytes:
    doc = orjson.loads(raw)
    doc["grants"][0]["access_hash"] = "not hex"
    return orjson.dumps(doc)


def _missing_field(raw: bytes) -> bytes:
    doc = orjson.loads(raw)
    del doc["grants"][0]["refresh_hash"]
    return orjson.dumps(doc)


def _unknown_kind(raw: bytes) -> bytes:
    doc = orjson.loads(raw)
    doc["sessions"] = [{"id": "x"}]
    return orjson.dumps(doc)


CORRUPTIONS = {
    "not JSON": lambda raw: b"\x00\x01garbage" + raw,
    "wrong format": lambda raw: raw.replace(b'"oauthd-state"', b'"something-else"', 1),
    "truncated": lambda raw: raw[: len(raw) // 2],
    "zero-filled (power loss)": lambda raw: bytes(len(raw)),
    "empty": lambda raw: b"",
    "seq not a number": lambda raw: raw.replace(b'"seq":9', b'"seq":"9"', 1),
    "a record that does not decode": _bad_record,
    "a record missing a field": _missing_field,
    "an unknown record kind": _unknown_kind,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
async def test_corrupt_snapshot_is_quarantined_and_the_previous_generation_used(
    tmp_path: Path, corrupt: Any, caplog: pytest.LogCaptureFixture
) -> None:
    copy, expected = await build_history(tmp_path)
    damaged = corrupt((copy / SNAPSHOT).read_bytes())
    (copy / SNAPSHOT).write_bytes(damaged)
    os.chmod(copy / SNAPSHOT, 0o644)
    with caplog.at_level(logging.ERROR, logger="oauthd.persist"):
        assert await reopened(copy) == expected  # nothing the journal covers is lost

    (moved,) = [p for p in copy.iterdir() if p.name.startswith(f"{SNAPSHOT}.corrupt-")]
    assert re.fullmatch(rf"{re.escape(SNAPSHOT)}\.corrupt-\d{{8}}T\d{{6}}Z", moved.name)
    assert moved.read_bytes() == damaged  # byte-identical
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    logged = [r for r in caplog.records if getattr(r, "event", None) == "quarantine"]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert logged[0].sha256 == hashlib.sha256(damaged).hexdigest()  # type: ignore[attr-defined]
    assert snapshot_doc(copy)["seq"] == 12  # a good generation was written at once
    assert await reopened(copy) == expected


async def test_both_generations_corrupt_refuses_unless_recover(tmp_path: Path) -> None:
    copy, expected = await build_history(tmp_path)
    for name in (SNAPSHOT, PREVIOUS):
        (copy / name).write_bytes(b"{not json")
    journal = {name: (copy / name).read_bytes() for name in segments(copy)}
    error = await refused(copy)  # the journal starts at seq 6: not enough to rebuild
    assert "--recover" in str(error)
    quarantined = [p.name for p in copy.iterdir() if ".corrupt-" in p.name]
    assert len(quarantined) == 2
    assert journal == {name: (copy / name).read_bytes() for name in segments(copy)}

    recovered = await reopened(copy, recover=True)  # what the journal alone holds
    assert recovered["clients"] == expected["clients"]
    assert recovered["codes"] == expected["codes"]
    assert recovered["consents"] == expected["consents"]
    # Only the grants the journal wrote: seq 7 (new) and seq 8 (updated); 1-5 are gone.
    assert len(recovered["grants"]) == 2
    assert all(expected["grants"][key] == g for key, g in recovered["grants"].items())


async def test_both_generations_corrupt_but_journal_from_seq_1_starts(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "live", FakeClock(NOW))
    await put_all(store, [make_grant() for _ in range(3)])
    assert await store.engine.save()  # generations seq 3 and seq 0: journal-1 is kept
    await put_all(store, [make_grant() for _ in range(2)])
    expected = await contents(store)
    copy = crash_copy(tmp_path / "live", tmp_path / "copy")
    await store.close()
    assert segments(copy)[0] == segment_name(1)
    for name in (SNAPSHOT, PREVIOUS):
        (copy / name).write_bytes(b"\0" * 100)
    assert await reopened(copy) == expected


# -- versions ---------------------------------------------------------------------------------


async def test_newer_version_refuses_and_leaves_the_file_untouched(tmp_path: Path) -> None:
    copy, _ = await build_history(tmp_path)
    doc = snapshot_doc(copy)
    doc["version"] += 1
    (copy / SNAPSHOT).write_bytes(orjson.dumps(doc))
    before, listing = stamp(copy), names(copy)
    error = await refused(copy)
    assert "newer" in str(error) and str(copy / SNAPSHOT) in str(error)
    assert stamp(copy) == before and names(copy) == listing
    error = await refused(copy, recover=True)  # --recover does not override a downgrade
    assert stamp(copy) == before and names(copy) == listing


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """A fake step: "v1" kept consents under "approvals"."""
    doc["consents"] = doc.pop("approvals")
    return doc


async def test_older_version_is_migrated_and_the_original_kept(tmp_path: Path) -> None:
    copy, expected = await build_history(tmp_path)
    doc = snapshot_doc(copy)
    doc["approvals"] = doc.pop("consents")  # what a "v1" snapshot looked like
    doc["version"] = 1
    (copy / SNAPSHOT).write_bytes(orjson.dumps(doc))
    original = (copy / SNAPSHOT).read_bytes()
    steps: list[int] = []

    def step(doc: dict[str, Any]) -> dict[str, Any]:
        steps.append(doc["version"])
        return _v1_to_v2(doc)

    store = await open_store(copy, FakeClock(NOW), version=2, migrations={1: step})
    try:
        assert await contents(store) == expected
    finally:
        await store.close()
    assert steps == [1]
    assert (copy / "snapshot.v1.bak").read_bytes() == original
    new = snapshot_doc(copy)
    assert new["version"] == 2 and "consents" in new and "approvals" not in new
    assert new["seq"] == 12  # written at once, with the journal replayed
    assert (copy / PREVIOUS).read_bytes() == original  # the old generation, still v1
    store = await open_store(copy, FakeClock(NOW), version=2, migrations={1: step})
    try:
        assert await contents(store) == expected  # the new generation loads without a step
    finally:
        await store.close()
    assert steps == [1]


async def test_missing_migration_step_refuses(tmp_path: Path) -> None:
    copy, _ = await build_history(tmp_path)
    doc = snapshot_doc(copy)
    doc["version"] = 1
    (copy / SNAPSHOT).write_bytes(orjson.dumps(doc))
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.name != "lock"}
    with pytest.raises(RecoveryError) as refused:
        await open_store(copy, FakeClock(NOW), version=2, migrations={})
    message = str(refused.value)
    assert "\n" not in message
    assert str(copy / SNAPSHOT) in message and "format version 1" in message
    assert "cannot migrate from version 1" in message and "restore a backup" in message
    # #11: a refused start writes nothing into the state dir (no snapshot.v1.bak)
    after = {p.name: p.read_bytes() for p in copy.iterdir() if p.name != "lock"}
    assert after == before


# -- the journal ------------------------------------------------------------------------------

TAILS = {
    "incomplete frame header": lambda frame: frame[:9],
    "payload cut": lambda frame: frame[:-4],
    "zero-filled tail": lambda frame: bytes(4096),
    "bad CRC on the last frame": lambda frame: frame[:-1] + bytes([frame[-1] ^ 1]),
}


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
async def test_torn_tail_is_copied_aside_then_truncated(
    tmp_path: Path, tail: Any, caplog: pytest.LogCaptureFixture
) -> None:
    copy, expected = await build_history(tmp_path)
    last = copy / segment_name(10)
    complete = last.read_bytes()
    payload = codec.encode_change("grants", "never-acknowledged", make_grant())
    torn = tail(encode_frame(13, payload))
    last.write_bytes(complete + torn)

    with caplog.at_level(logging.WARNING, logger="oauthd.persist"):
        assert await reopened(copy) == expected  # every complete record, nothing else

    (aside,) = [p for p in copy.iterdir() if p.name.startswith(f"{last.name}.torn-")]
    assert aside.read_bytes() == torn  # exactly the cut bytes
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert last.read_bytes() == complete  # truncated to the last complete frame
    logged = [r for r in caplog.records if getattr(r, "event", None) == "journal_torn_tail"]
    assert [r.discarded_bytes for r in logged] == [len(torn)]  # type: ignore[attr-defined]


async def test_torn_segment_header_is_cut(tmp_path: Path) -> None:
    copy, expected = await build_history(tmp_path)
    (copy / segment_name(13)).write_bytes(b"OAUTHDJ1\x0d\x00")  # crash while creating it
    assert await reopened(copy) == expected
    assert any(".torn-" in p.name for p in copy.iterdir())


def _damage_middle(segment: Path) -> int:
    """Flip a bit in the payload of the segment's second frame (valid frames follow);
    return the frame's offset."""
    data = bytearray(segment.read_bytes())
    first_payload = scan_segment(segment).entries[0][1]
    offset = SEGMENT_HEADER.size + FRAME_HEADER.size + len(first_payload)
    data[offset + FRAME_HEADER.size + 3] ^= 0x10
    segment.write_bytes(bytes(data))
    return offset


async def test_mid_journal_corruption_refuses_naming_file_and_offset(tmp_path: Path) -> None:
    copy, _ = await build_history(tmp_path)
    segment = copy / segment_name(10)  # seq 10..12, after the newest snapshot (seq 9)
    offset = _damage_middle(segment)
    before, listing = stamp(copy), names(copy)
    error = str(await refused(copy))
    assert f"{segment} is damaged at byte {offset}" in error
    assert "--recover" in error
    assert stamp(copy) == before and names(copy) == listing  # nothing cut, nothing moved


async def test_recover_starts_from_the_records_before_the_damage(tmp_path: Path) -> None:
    copy, expected = await build_history(tmp_path)
    segment = copy / segment_name(10)
    offset = _damage_middle(segment)  # seq 11 damaged, 12 valid after it
    damaged = segment.read_bytes()

    recovered = await reopened(copy, recover=True)
    survivors = _without_seqs(expected, {11, 12})
    assert recovered == survivors
    (aside,) = [p for p in copy.iterdir() if p.name.startswith(f"{segment.name}.corrupt-")]
    assert aside.read_bytes() == damaged[offset:]  # the rest, byte-identical
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert await reopened(copy) == recovered  # and from then on it starts normally


def _without_seqs(expected: Contents, lost: set[int]) -> Contents:
    """`expected` minus the records written at seqs `lost` (build_history: 10 client,
    11 code, 12 device)."""
    kinds = {10: "clients", 11: "codes", 12: "devices"}
    return {
        kind: ({} if kind in {kinds[s] for s in lost} else records)
        for kind, records in expected.items()
    }


async def test_recover_moves_later_segments_aside(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "live", FakeClock(NOW))
    empty = (tmp_path / "live" / SNAPSHOT).read_bytes()  # the first boot's, seq 0
    grants = [make_grant() for _ in range(8)]
    await put_all(store, grants[:4])  # journal-1: seq 1..4
    assert await store.engine.save()  # a new segment from seq 5
    await put_all(store, grants[4:])  # journal-5: seq 5..8
    copy = crash_copy(tmp_path / "live", tmp_path / "copy")
    await store.close()
    (copy / SNAPSHOT).write_bytes(empty)  # as if restored from an old backup
    (copy / PREVIOUS).unlink()
    assert segments(copy) == [segment_name(1), segment_name(5)]
    later = (copy / segment_name(5)).read_bytes()
    _damage_middle(copy / segment_name(1))
    assert "--recover" in str(await refused(copy))

    recovered = await reopened(copy, recover=True)
    assert set(recovered["grants"]) == {grants[0].id}
    (moved,) = [p for p in copy.iterdir() if p.name.startswith(f"{segment_name(5)}.corrupt-")]
    assert moved.read_bytes() == later


def _rewrite_segment(path: Path, first: int, entries: list[tuple[int, bytes]]) -> None:
    """A well-formed segment whose frames carry the given seqs (valid CRCs)."""
    data = SEGMENT_HEADER.pack(MAGIC, first)
    for seq, payload in entries:
        data += encode_frame(seq, payload)
    (path / segment_name(first)).write_bytes(data)


async def test_missing_segment_refuses(tmp_path: Path) -> None:
    copy, _ = await build_history(tmp_path)
    (copy / SNAPSHOT).write_bytes(b"garbage")  # the start must use .1 (seq 5) ...
    (copy / segment_name(6)).unlink()  # ... and the records 6..9 after it are gone
    error = str(await refused(copy))
    assert "6..9 are missing" in error and "--recover" in error


async def test_gap_after_the_snapshot_refuses(tmp_path: Path) -> None:
    copy, _ = await build_history(tmp_path)
    entries = scan_segment(copy / segment_name(10)).entries
    (copy / segment_name(10)).unlink()
    _rewrite_segment(copy, 11, entries[1:])  # 11 and 12 intact, 10 missing
    error = str(await refused(copy))
    assert "10..10 are missing" in error and "--recover" in error


async def test_gap_inside_a_segment_refuses(tmp_path: Path) -> None:
    copy, _ = await build_history(tmp_path)
    segment = copy / segment_name(10)
    entries = scan_segment(segment).entries
    _rewrite_segment(copy, 10, [entries[0], entries[2]])  # 10, then 12: 11 is missing
    error = str(await refused(copy))
    assert str(segment) in error and "expected 11" in error and "--recover" in error


# -- every acknowledged write after a clean stop, too ----------------------------------------


async def test_clean_close_and_reopen_keeps_everything(tmp_path: Path) -> None:
    store = await open_store(tmp_path, FakeClock(NOW))
    await put_all(store, [make(kind) for kind in KINDS for _ in range(3)])
    expected = await contents(store)
    await store.close()
    assert files(tmp_path)  # something was written
    assert await reopened(tmp_path) == expected


async def test_torn_segment_before_a_declared_gap_after_a_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal write fails half-way (the request got 503), a snapshot covers memory, a
    new segment starts after the gap (once its backoff is over). Falling back to the
    previous generation then replays the torn segment and the next one: every acknowledged
    write is there."""
    store = await open_store(tmp_path / "live", FakeClock(NOW))
    grants = [make_grant() for _ in range(5)]
    await put_all(store, grants[:2])  # seq 1, 2
    assert await store.engine.save()  # generations: seq 2 and 0
    await store.grants.put(grants[2])  # seq 3
    real = journal_module.write_all

    def full_disk(fd: int, data: bytes | memoryview) -> None:
        real(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module, "write_all", full_disk)
    with pytest.raises(Unavailable):
        await store.grants.put(grants[3])  # seq 4: never acknowledged
    monkeypatch.setattr(journal_module, "write_all", real)
    with pytest.raises(Unavailable):
        await store.grants.put(make_grant())  # refused before it changes anything
    assert await store.engine.save()  # covers memory (seq 4): the journal starts afresh
    await eventually(lambda: store.engine.health().healthy)
    await store.grants.put(grants[4])  # seq 5
    copy = crash_copy(tmp_path / "live", tmp_path / "copy")
    await store.close()
    assert segments(copy) == [segment_name(3), segment_name(5)]
    assert scan_segment(copy / segment_name(3)).torn

    (copy / SNAPSHOT).write_bytes(b"")  # lost: the start falls back to seq 2
    recovered = await reopened(copy)
    acknowledged = {grants[i].id for i in (0, 1, 2, 4)}
    assert set(recovered["grants"]) == acknowledged
