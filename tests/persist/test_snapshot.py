"""Snapshots: exact round trip of any state, document shape, atomic durable writes, file
modes, no write without a change, journal retention, and consistency under a chunked save."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import stat
import tempfile
import time
import types
import typing
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthd.clock import FakeClock
from oauthd.model import RECORD_TYPES, Grant, Record
from oauthd.persist import snapshot as snapshot_module
from oauthd.persist.journal import segment_name
from oauthd.persist.statedir import PREVIOUS, SNAPSHOT
from oauthd.store import codec
from oauthd.store.file import decode_document
from oauthd.store.migrations import CURRENT_VERSION, MIGRATIONS
from oauthd.store.rows import LAYOUTS
from tests.support.persist import (
    as_contents,
    contents,
    crash_copy,
    files,
    journal_seqs,
    open_store,
    put_all,
    segments,
    snapshot_doc,
)
from tests.support.records import KINDS, NOW, make, make_code, make_grant

# -- any state survives a snapshot exactly ------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
KEY = st.text("ab\x1f\u00e9\U0001f511", max_size=3)  # small key space: overwrites happen
TIME = st.floats(allow_nan=False, allow_infinity=False)
EXPIRY = st.none() | st.floats(NOW - 1000, NOW + 1000)  # expired and live ones


def _strategy(name: str, hint: Any) -> st.SearchStrategy[Any]:
    if name == "expires_at":
        return EXPIRY
    if isinstance(hint, types.UnionType):
        (inner,) = (a for a in typing.get_args(hint) if a is not type(None))
        return st.none() | _strategy(name, inner)
    if typing.get_origin(hint) is tuple:
        return st.lists(TEXT, max_size=3).map(tuple)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: TEXT,
        bytes: st.binary(max_size=40),
        float: TIME,
        bool: st.booleans(),
    }
    return simple[hint]


def _record_strategy(cls: type[Record]) -> st.SearchStrategy[Record]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _strategy(f.name, hints[f.name]) for f in dataclasses.fields(cls)}
    key_field = dataclasses.fields(cls)[0].name  # the key, or part of it (consents)
    fields[key_field] = KEY
    return st.builds(cls, **fields)


RECORDS = st.one_of(*(_record_strategy(cls) for cls in RECORD_TYPES))
OPS = st.lists(
    st.one_of(RECORDS, st.tuples(st.sampled_from(KINDS), KEY)),  # a tuple is a deletion
    max_size=40,
)


async def _round_trip(path: Path, ops: list[Record | tuple[str, str]]) -> None:
    clock = FakeClock(NOW)
    store = await open_store(path / "live", clock, journaled=False)
    expected: dict[str, dict[str, Record]] = {kind: {} for kind in KINDS}
    for op in ops:
        if isinstance(op, tuple):
            await store.by_kind[op[0]].delete(op[1])
            expected[op[0]].pop(op[1], None)
        else:
            await store.by_kind[op.KIND].put(op)
            expected[op.KIND][op.key] = op
    assert await store.engine.save()
    crash_copy(path / "live", path / "copy")  # the reload sees this snapshot and nothing else
    await store.close()
    reloaded = await open_store(path / "copy", clock, journaled=False)
    try:
        live = {
            kind: {k: r for k, r in records.items() if r.expires_at is None or r.expires_at > NOW}
            for kind, records in expected.items()
        }
        assert await contents(reloaded) == live
    finally:
        await reloaded.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=OPS)
def test_any_state_survives_a_snapshot_exactly(ops: list[Record | tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_round_trip(Path(tmp), ops))


# -- the document -----------------------------------------------------------------------------


def one_of_each() -> list[Record]:
    return [make(kind) for kind in KINDS]


async def test_document_shape(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    records = one_of_each()
    await put_all(store, records)
    before = time.time()
    assert await store.engine.save()
    raw = (tmp_path / SNAPSHOT).read_bytes()
    await store.close()

    doc = orjson.loads(raw)
    assert json.loads(raw) == doc  # plain JSON, not an orjson dialect
    assert list(doc) == ["format", "version", "seq", "saved_at", *KINDS]
    assert doc["format"] == "oauthd-state"
    assert doc["version"] == CURRENT_VERSION
    assert doc["seq"] == len(records)
    assert isinstance(doc["saved_at"], float) and before - 1 <= doc["saved_at"] <= time.time()
    for record in records:
        (item,) = doc[record.KIND]
        assert codec.decode(record.KIND, dict(item)) == record  # decode mutates its input
    grant = next(r for r in records if r.KIND == "grants")
    assert doc["grants"][0]["access_hash"] == grant.access_hash.hex()  # type: ignore[union-attr]
    assert doc["grants"][0]["scopes"] == list(grant.scopes)  # type: ignore[union-attr]


# Fields added by format versions 2 and 3: journal frames and shared-backend records
# written by an older oauthd lack them and must still decode, to the defaults.
ADDED_IN_V2 = {
    "pending": {"redirect_uri_given": True},
    "codes": {"redirect_uri_given": True},
    "grants": {"access_scopes": None, "superseded_hashes": b""},
    "clients": {"last_used_at": None},  # version 3
}


@pytest.mark.parametrize("kind", sorted(ADDED_IN_V2))
def test_a_record_without_the_fields_added_later_decodes_to_their_defaults(kind: str) -> None:
    record = make(kind)
    item = orjson.loads(codec.encode(record))
    for name in ADDED_IN_V2[kind]:
        del item[name]
    decoded = codec.decode(kind, item)
    assert decoded == dataclasses.replace(record, **ADDED_IN_V2[kind])
    for name, default in ADDED_IN_V2[kind].items():
        assert getattr(decoded, name) == default


@pytest.mark.parametrize("kind", sorted(ADDED_IN_V2))
def test_a_record_missing_a_required_field_or_with_an_unknown_one_is_refused(kind: str) -> None:
    item = orjson.loads(codec.encode(make(kind)))
    del item["created_at"]
    with pytest.raises(codec.DecodeError):
        codec.decode(kind, dict(item))
    for name in ADDED_IN_V2[kind]:
        del item[name]
    item["created_at"], item["surprise"] = 1.0, 1
    with pytest.raises(codec.DecodeError):
        codec.decode(kind, item)


def test_the_v1_to_v2_step_adds_the_defaults() -> None:
    doc: dict[str, Any] = {"version": 1, "pending": [{}], "codes": [{}], "grants": [{}]}
    migrated = MIGRATIONS[1](doc)
    assert migrated["pending"] == [{"redirect_uri_given": True}]
    assert migrated["codes"] == [{"redirect_uri_given": True}]
    assert migrated["grants"] == [{"access_scopes": None, "superseded_hashes": ""}]


def test_the_v2_to_v3_step_adds_last_used_and_the_new_kinds() -> None:
    doc: dict[str, Any] = {"version": 2, "clients": [{}, {"last_used_at": 5.0}], "grants": []}
    migrated = MIGRATIONS[2](doc)
    assert migrated["clients"] == [{"last_used_at": None}, {"last_used_at": 5.0}]
    assert migrated["registration_groups"] == [] and migrated["account_sessions"] == []
    assert migrated["grants"] == []


async def test_empty_state_is_a_document_with_empty_arrays(tmp_path: Path) -> None:
    store = await open_store(tmp_path)  # first boot writes the empty generation at once
    await store.close()
    doc = snapshot_doc(tmp_path)
    assert doc["seq"] == 0
    assert all(doc[kind] == [] for kind in KINDS)


# -- atomic write -----------------------------------------------------------------------------


def temp_files(path: Path) -> list[str]:
    return [p.name for p in path.iterdir() if ".tmp" in p.name]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: a file or dir is only private if the code asks for it, not by luck."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def test_save_writes_a_private_temp_file_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: None
) -> None:
    store = await open_store(tmp_path)
    seen: list[tuple[str, int]] = []
    real = snapshot_module.write_all

    def spy(fd: int, data: bytes | memoryview) -> None:
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_mode))
        real(fd, data)

    monkeypatch.setattr(snapshot_module, "write_all", spy)
    first = (tmp_path / SNAPSHOT).read_bytes()
    await put_all(store, one_of_each())
    assert await store.engine.save()
    await store.close()

    assert seen, "the snapshot was not written through write_all"
    for target, mode in seen:
        assert Path(target).parent == tmp_path  # same dir: the rename is atomic
        assert Path(target).name.startswith(f".{SNAPSHOT}.tmp-")
        assert stat.S_IMODE(mode) == 0o600
    assert temp_files(tmp_path) == []
    assert (tmp_path / PREVIOUS).read_bytes() == first  # the previous generation is kept
    assert snapshot_doc(tmp_path)["seq"] == len(KINDS)


async def test_previous_generation_follows_each_save(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    generations = []
    for _ in range(3):
        await store.grants.put(make_grant())
        assert await store.engine.save()
        generations.append((tmp_path / SNAPSHOT).read_bytes())
    await store.close()
    assert (tmp_path / SNAPSHOT).read_bytes() == generations[-1]
    assert (tmp_path / PREVIOUS).read_bytes() == generations[-2]


async def _wait_for_no_temp(path: Path) -> list[str]:
    for _ in range(100):  # the temp file is removed from the snapshot thread
        if not temp_files(path):
            break
        await asyncio.sleep(0.01)
    return temp_files(path)


async def test_failed_write_keeps_both_generations_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(tmp_path)
    await store.grants.put(make_grant())
    assert await store.engine.save()
    grant = make_grant()
    await store.grants.put(grant)
    before = files(tmp_path)
    real = snapshot_module.write_all

    def full_disk(fd: int, data: bytes | memoryview) -> None:
        real(fd, bytes(data)[: len(data) // 2])  # part of the document reached the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(snapshot_module, "write_all", full_disk)
    assert not await store.engine.save()
    health = store.engine.health()
    # degraded, not unready: the journal still makes every change durable (#11)
    assert health.healthy and health.degraded
    assert "No space left" in (health.snapshot_error or "")
    assert await _wait_for_no_temp(tmp_path) == []
    after = files(tmp_path)
    assert after[SNAPSHOT] == before[SNAPSHOT] and after[PREVIOUS] == before[PREVIOUS]
    assert await store.grants.get(grant.id) == grant  # memory is kept

    monkeypatch.setattr(snapshot_module, "write_all", real)
    assert await store.engine.save()  # retried from memory
    assert store.engine.health().healthy and not store.engine.health().degraded
    assert [g["id"] for g in snapshot_doc(tmp_path)["grants"]][-1] == grant.id
    await store.close()


async def test_failed_rename_keeps_the_newest_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(tmp_path)
    await store.grants.put(make_grant())
    assert await store.engine.save()
    newest = (tmp_path / SNAPSHOT).read_bytes()
    await store.grants.put(make_grant())
    real = os.replace

    def failing_replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(dst).name == SNAPSHOT:
            raise OSError(errno.EIO, "Input/output error")
        real(src, dst, **kwargs)

    monkeypatch.setattr(snapshot_module.os, "replace", failing_replace)
    assert not await store.engine.save()
    monkeypatch.setattr(snapshot_module.os, "replace", real)
    assert (tmp_path / SNAPSHOT).read_bytes() == newest
    assert await _wait_for_no_temp(tmp_path) == []
    await store.close()


@pytest.mark.parametrize("failing", [SNAPSHOT, PREVIOUS])
async def test_a_failed_rename_leaves_no_temp_file_and_keeps_the_older_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """#11: whichever rename of a save fails, no temp file (nor hard link) is left, and an
    older generation stays to fall back on, with the journal it needs: before, a failed
    rename of the new file left `.1` equal to the current one (the older generation gone
    until the next good save), and a failed rename of the link left the link behind."""
    store = await open_store(tmp_path)
    grants = [make_grant() for _ in range(3)]
    await store.grants.put(grants[0])
    assert await store.engine.save()
    older = (tmp_path / SNAPSHOT).read_bytes()
    await store.grants.put(grants[1])
    assert await store.engine.save()
    current = (tmp_path / SNAPSHOT).read_bytes()
    await store.grants.put(grants[2])
    real = os.replace

    def failing_replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(dst).name == failing:
            raise OSError(errno.EIO, "Input/output error")
        real(src, dst, **kwargs)

    monkeypatch.setattr(snapshot_module.os, "replace", failing_replace)
    assert not await store.engine.save()
    monkeypatch.setattr(snapshot_module.os, "replace", real)
    assert await _wait_for_no_temp(tmp_path) == []
    assert (tmp_path / PREVIOUS).read_bytes() == older
    if failing == SNAPSHOT:
        assert (tmp_path / SNAPSHOT).read_bytes() == current
    copy = crash_copy(tmp_path, tmp_path.parent / f"{tmp_path.name}-copy")
    await store.close()
    (copy / SNAPSHOT).unlink()  # lost: the start falls back to `.1` and its journal
    fallback = await open_store(copy)
    assert [await fallback.grants.get(g.id) for g in grants] == grants
    await fallback.close()


# -- modes ------------------------------------------------------------------------------------


async def test_dir_0700_and_files_0600_from_creation(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "state" / "oauthd"
    store = await open_store(path)
    for _ in range(2):
        await put_all(store, one_of_each())
        assert await store.engine.save()
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    names = {p.name for p in path.iterdir()}
    assert {"lock", "initialized", SNAPSHOT, PREVIOUS} <= names
    assert any(name.startswith("journal-") for name in names)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes == dict.fromkeys(names, 0o600)


async def test_existing_wide_dir_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    store = await open_store(path)
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


# -- nothing changed: nothing written ----------------------------------------------------------


async def test_nothing_changed_writes_nothing(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await put_all(store, one_of_each())
    await store.close()  # the final snapshot
    before = {name: (tmp_path / name).stat() for name in (SNAPSHOT, PREVIOUS)}
    seq = snapshot_doc(tmp_path)["seq"]

    store = await open_store(tmp_path, debounce=0.01, max_wait=0.02, interval=0.05)
    await asyncio.sleep(0.2)  # every trigger has had its chance
    assert store.engine.health().last_save_at is None
    await store.close()

    for name, old in before.items():
        new = (tmp_path / name).stat()
        assert (new.st_ino, new.st_mtime_ns, new.st_size) == (
            old.st_ino,
            old.st_mtime_ns,
            old.st_size,
        )
    assert snapshot_doc(tmp_path)["seq"] == seq


# -- journal retention ------------------------------------------------------------------------


async def test_segments_covered_by_both_generations_are_deleted(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await put_all(store, [make_grant() for _ in range(5)])  # seq 1..5
    assert await store.engine.save()  # generations: seq 5 and seq 0 (first boot)
    assert segments(tmp_path) == [segment_name(1), segment_name(6)]
    await put_all(store, [make_grant() for _ in range(5)])  # seq 6..10
    assert await store.engine.save()  # generations: seq 10 and seq 5
    assert segments(tmp_path) == [segment_name(6), segment_name(11)]
    await store.close()


async def test_journal_always_reaches_back_to_the_previous_generation(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    grants = [make_grant() for _ in range(30)]
    for round_ in range(6):
        await put_all(store, grants[round_ * 5 : round_ * 5 + 5])
        await store.grants.delete(grants[round_].id)
        assert await store.engine.save()
        previous = snapshot_doc(tmp_path, PREVIOUS)["seq"]
        seqs = journal_seqs(tmp_path)
        assert seqs == list(range(seqs[0], store.engine.seq + 1))  # contiguous to the end
        assert seqs[0] <= previous + 1  # falling back to .1 finds its journal
    await store.close()


async def test_start_from_previous_generation_loses_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    clock = FakeClock(NOW)
    store = await open_store(tmp_path / "live", clock)
    grants = [make_grant() for _ in range(12)]
    await put_all(store, grants[:4])
    assert await store.engine.save()
    await put_all(store, grants[4:8])
    await store.grants.delete(grants[0].id)
    code = make_code()
    await store.codes.put(code)
    assert await store.engine.save()
    await put_all(store, grants[8:])
    assert await store.codes.take(code.key) == code
    expected = await contents(store)
    copy = crash_copy(tmp_path / "live", tmp_path / "copy")
    await store.close()

    (copy / SNAPSHOT).write_bytes(b'{"format": "oauthd-state", "vers')  # torn by power loss
    reloaded = await open_store(copy, clock)
    try:
        assert await contents(reloaded) == expected
        assert grants[0].id not in expected["grants"] and code.key not in expected["codes"]
        assert len(expected["grants"]) == 11
    finally:
        await reloaded.close()
    assert any(p.name.startswith(f"{SNAPSHOT}.corrupt-") for p in copy.iterdir())


# -- consistency of a chunked save under concurrent writes --------------------------------------


async def test_snapshot_is_consistent_while_writes_continue(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = await open_store(tmp_path / "live", clock)
    preload = [make_grant() for _ in range(6000)]
    await asyncio.gather(*(store.grants.put(g) for g in preload))  # group commit: quick
    await store.codes.put(make_code())
    state = as_contents(await _all(store))
    history: list[tuple[int, str, str, Record | None]] = []  # seq, kind, key, new record

    save = asyncio.create_task(store.engine.save())
    targets = iter(preload[::-1])
    while not save.done():
        # 20 changes per turn, each a distinct record; their seqs follow in task order
        # because each change runs synchronously up to its journal append.
        batch = [_change(store, n, next(targets)) for n in range(20)]
        first = store.engine.seq + 1
        await asyncio.gather(*(coro for coro, _ in batch))
        assert store.engine.seq == first + len(batch) - 1
        history += [(first + i, *change) for i, (_, change) in enumerate(batch)]
    assert await save
    doc = snapshot_doc(tmp_path / "live")
    during = [h for h in history if h[0] > doc["seq"]]
    assert len(during) >= 20, "the writes did not overlap the save"

    # The snapshot is exactly the state at its seq: every change up to it, none after.
    at_seq = {kind: dict(records) for kind, records in state.items()}
    for seq, kind, key, record in history:
        if seq <= doc["seq"]:
            _apply(at_seq, kind, key, record)
    decoded = decode_document((k, v) for k, v in doc.items() if isinstance(v, list))
    unpacked = (LAYOUTS[k].unpack(row) for k, rows in decoded.items() for row in rows.values())
    assert as_contents(unpacked) == at_seq

    # And after a crash, snapshot + journal give every acknowledged change.
    final = {kind: dict(records) for kind, records in state.items()}
    for _, kind, key, record in history:
        _apply(final, kind, key, record)
    assert await contents(store) == final
    copy = crash_copy(tmp_path / "live", tmp_path / "copy")
    await store.close()
    reloaded = await open_store(copy, clock)
    try:
        assert await contents(reloaded) == final
    finally:
        await reloaded.close()


def _change(
    store: Any, n: int, target: Grant
) -> tuple[Coroutine[Any, Any, Any], tuple[str, str, Record | None]]:
    """A put, a delete or an update (by `n`), and what it does."""
    if n % 3 == 0:
        return store.grants.delete(target.id), ("grants", target.id, None)
    if n % 3 == 1:
        fresh = make_grant()
        return store.grants.put(fresh), ("grants", fresh.id, fresh)
    changed = dataclasses.replace(target, last_used_at=target.last_used_at + 1)
    return store.grants.update(target.id, lambda _: changed), ("grants", target.id, changed)


async def _all(store: Any) -> list[Record]:
    return [r for records in (await contents(store)).values() for r in records.values()]


def _apply(state: dict[str, dict[str, Record]], kind: str, key: str, record: Record | None) -> None:
    if record is None:
        state[kind].pop(key, None)
    else:
        state[kind][key] = record


async def test_records_are_one_line_per_chunk_and_any_layout_loads(tmp_path: Path) -> None:
    """oauthd writes a line per chunk of records (so a loader decodes a chunk at a time);
    the same document on one line, or pretty-printed, loads the same."""
    store = await open_store(tmp_path / "live")
    grants = [make_grant() for _ in range(700)]
    await put_all(store, grants)
    assert await store.engine.save()
    raw = (tmp_path / "live" / SNAPSHOT).read_bytes()
    await store.close()
    lines = raw.split(b"\n")
    assert lines[0].startswith(b'{"format":"oauthd-state"') and lines[-2:] == [b"}", b""]
    start = lines.index(b',"grants":[') + 1
    grant_lines = lines[start : start + 8]
    assert [line.count(b'"access_hash"') for line in grant_lines] == [100] * 7 + [0]
    for name, layout in (
        ("one-line", orjson.dumps(orjson.loads(raw))),
        ("pretty", json.dumps(orjson.loads(raw), indent=2).encode()),
    ):
        copy = crash_copy(tmp_path / "live", tmp_path / name)
        (copy / SNAPSHOT).write_bytes(layout)
        reopened = await open_store(copy)
        assert await contents(reopened) == as_contents(grants)
        await reopened.close()


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw.replace(b'"access_hash":"', b'"access_hash":', 1),  # one bad line
        lambda raw: raw[: raw.index(b',"grants":[') + 400],  # truncated mid-array
        lambda raw: raw.replace(b"\n]\n", b"\n", 1),  # an array never closed
        lambda raw: raw + b'{"more":1}\n',  # data after the end
    ],
)
async def test_a_damaged_chunk_quarantines_the_whole_generation(
    tmp_path: Path, damage: Any
) -> None:
    store = await open_store(tmp_path)
    await put_all(store, [make_grant() for _ in range(600)])
    assert await store.engine.save()  # generation 1
    await put_all(store, [make_grant()])
    assert await store.engine.save()  # generation 2, damaged below
    everything = await contents(store)
    await store.close()
    final = (tmp_path / SNAPSHOT).read_bytes()
    (tmp_path / SNAPSHOT).write_bytes(damage(final))
    reopened = await open_store(tmp_path)  # the previous generation + the journal
    got = await contents(reopened)
    await reopened.close()
    assert got == everything  # nothing acknowledged is lost
    assert any(name.startswith(f"{SNAPSHOT}.corrupt-") for name in os.listdir(tmp_path))
