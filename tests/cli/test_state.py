"""`oauthd state inspect` and `oauthd state verify`: read-only views of a state dir."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from oauthd.cli import main
from oauthd.clock import FakeClock
from oauthd.persist.journal import FRAME_HEADER, SEGMENT_HEADER, encode_frame, scan_segment
from oauthd.persist.statedir import PREVIOUS, SNAPSHOT
from oauthd.store import inspection
from oauthd.store.file import FileStore
from oauthd.store.migrations import CURRENT_VERSION
from tests.support.persist import crash_copy, open_store, put_all, segments, snapshot_doc
from tests.support.records import DAY, make_client, make_code, make_grant

EMPTY = {
    "consents": 0,
    "pending": 0,
    "devices": 0,
    "mcp_sessions": 0,
    "registration_groups": 0,
    "account_sessions": 0,
    "signing_keys": 0,
    "used_assertions": 0,
    "account_links": 0,
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["state", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def inspect_json(capsys: pytest.CaptureFixture[str], path: Path) -> dict[str, Any]:
    code, out, _ = run(capsys, "inspect", "--state-dir", str(path), "--json")
    assert code == 0
    report: dict[str, Any] = orjson.loads(out)
    return report


def file_stamps(path: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.iterdir())}


async def populate(path: Path) -> FileStore:
    """An open store with records live and expired *now* (they were live on the store's
    clock, a day ago): grants 3 live + 2 expired, a client, 2 expired codes; a snapshot
    (seq 8); then 2 journal records after it (a new grant, a deleted grant)."""
    now = time.time()
    store = await open_store(path, FakeClock(now - DAY))
    live = [make_grant(expires_at=now + DAY) for _ in range(3)]
    expired = [make_grant(expires_at=now - 60) for _ in range(2)]
    codes = [make_code(expires_at=now - 30) for _ in range(2)]
    await put_all(store, [*live, *expired, make_client(expires_at=None), *codes])
    assert await store.engine.save()  # seq 8
    await store.grants.put(make_grant(expires_at=now + DAY))  # seq 9
    await store.grants.delete(live[0].id)  # seq 10
    return store


@pytest.fixture
async def state_dir(tmp_path: Path) -> Path:
    """A crashed daemon's state dir: snapshot at seq 8, journal to seq 10."""
    store = await populate(tmp_path / "live")
    copy = crash_copy(tmp_path / "live", tmp_path / "state")
    await store.close()
    assert snapshot_doc(copy)["seq"] == 8
    return copy


# -- inspect ----------------------------------------------------------------------------------


def _check_text(out: str, path: Path) -> None:
    assert f"state dir    {path}" in out
    assert "in use by    -" in out
    snap = (path / SNAPSHOT).stat().st_size
    size = f"{snap} B" if snap < 1024 else f"{snap / 1024:.1f} KiB"
    assert re.search(
        rf"^snapshot\.json +{re.escape(size)}, format oauthd-state v{CURRENT_VERSION}, "
        r"seq 8, saved \d{4}-",
        out,
        re.M,
    ), out
    assert re.search(r"^snapshot\.json\.1 .*seq 0,", out, re.M), out
    assert re.search(
        r"^journal +2 segments, 10 records, [\d.]+ (B|KiB); 2 after the snapshot \(seq 8 -> 10\)",
        out,
        re.M,
    ), out
    rows = dict(re.findall(r"^(\w+) +(\d+ +\d+)$", out, re.M))
    assert {kind: tuple(map(int, row.split())) for kind, row in rows.items()} == {
        "clients": (1, 0),
        "grants": (3, 2),  # 3 + 1 new - 1 deleted live; 2 expired by now
        "codes": (0, 2),
        **{kind: (0, 0) for kind in EMPTY},
    }


def test_inspect_text(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    code, out, err = run(capsys, "inspect", "--state-dir", str(state_dir))
    assert (code, err) == (0, "")
    _check_text(out, state_dir)
    assert "problems" not in out


def test_inspect_json(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    report = inspect_json(capsys, state_dir)
    assert report["path"] == str(state_dir)
    assert report["initialized"] is True and report["lock_holder"] is None
    newest, previous = report["snapshots"]
    assert newest["name"] == SNAPSHOT and previous["name"] == PREVIOUS
    assert (newest["version"], newest["seq"], newest["error"]) == (CURRENT_VERSION, 8, None)
    assert newest["size"] == (state_dir / SNAPSHOT).stat().st_size
    assert newest["counts"]["grants"] == 5 and newest["counts"]["codes"] == 2
    assert (report["base_seq"], report["last_seq"]) == (8, 10)
    assert report["journal_records_after_snapshot"] == 2
    assert [s["records"] for s in report["segments"]] == [8, 2]
    assert [s["name"] for s in report["segments"]] == segments(state_dir)
    assert report["counts"] == {"clients": 1, "grants": 3, "codes": 0, **EMPTY}
    assert report["expired"] == {"clients": 0, "grants": 2, "codes": 2, **EMPTY}
    assert report["files"] == {p.name: p.stat().st_size for p in state_dir.iterdir()}
    assert report["damage"] == []


def test_inspect_with_config(
    capsys: pytest.CaptureFixture[str], state_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "oauthd.toml"
    config.write_text('[storage]\npath = "state"\n')  # relative to the config file
    code, out, _ = run(capsys, "inspect", "--config", str(config))
    assert code == 0
    _check_text(out, state_dir)


def test_inspect_with_config_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    state_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "oauthd.toml"
    config.write_text(f"[storage]\npath = {str(state_dir)!r}\n")
    monkeypatch.setenv("OAUTHD_CONFIG", str(config))
    code, out, _ = run(capsys, "inspect", "--json")
    assert code == 0 and orjson.loads(out)["last_seq"] == 10


def test_inspect_missing_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "inspect", "--state-dir", str(tmp_path / "nope"))
    assert code == 1 and "no such state directory" in err and out == ""


async def test_inspect_and_verify_while_a_daemon_holds_the_lock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "running"
    store = await populate(path)
    try:
        before = file_stamps(path)
        code, out, _ = run(capsys, "inspect", "--state-dir", str(path))
        assert code == 0
        assert re.search(rf"^in use by +pid {os.getpid()} on \S+ since \d{{8}}T", out, re.M), out
        report = inspect_json(capsys, path)
        assert report["lock_holder"].startswith(f"pid {os.getpid()} ")
        assert report["last_seq"] == store.engine.seq
        code, out, _ = run(capsys, "verify", "--state-dir", str(path))
        assert code == 0 and out.startswith("OK: ")
        assert file_stamps(path) == before  # read-only: not even the lock file was touched
        await store.grants.put(make_grant())  # the daemon is unaffected
    finally:
        await store.close()


async def test_inspect_survives_a_segment_deleted_while_it_reads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "running"
    store = await populate(path)
    try:
        real = inspection.list_segments

        def racing(state: Any) -> list[tuple[int, str]]:
            found = real(state)
            (path / found[0][1]).unlink()  # the daemon's next save deleted it meanwhile
            return found

        monkeypatch.setattr(inspection, "list_segments", racing)
        code, out, _ = run(capsys, "verify", "--state-dir", str(path))
        assert code == 0, out
    finally:
        await store.close()


# -- verify -----------------------------------------------------------------------------------


def test_verify_clean(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    code, out, _ = run(capsys, "verify", "--state-dir", str(state_dir))
    assert code == 0
    assert out == f"OK: {state_dir}: 4 files verified, seq 10\n"


def _last_segment(path: Path) -> Path:
    return path / segments(path)[-1]


def test_verify_torn_tail(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    segment = _last_segment(state_dir)
    offset = segment.stat().st_size
    segment.write_bytes(segment.read_bytes() + encode_frame(11, b'["grants","k",null]')[:-2])
    before = file_stamps(state_dir)
    code, out, _ = run(capsys, "verify", "--state-dir", str(state_dir))
    assert code == 1
    assert f"DAMAGE: {segment}: torn tail (dropped on start) at byte {offset}" in out
    assert file_stamps(state_dir) == before  # nothing truncated or moved


def test_verify_mid_journal_corruption(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    segment = _last_segment(state_dir)  # seq 9 and 10
    first_payload = scan_segment(segment).entries[0][1]
    offset = SEGMENT_HEADER.size
    data = bytearray(segment.read_bytes())
    data[offset + FRAME_HEADER.size + len(first_payload) // 2] ^= 0x01  # seq 9; 10 is valid
    segment.write_bytes(bytes(data))
    before = file_stamps(state_dir)
    code, out, _ = run(capsys, "verify", "--state-dir", str(state_dir))
    assert code == 1
    assert f"DAMAGE: {segment}: damage at byte {offset}: CRC mismatch" in out
    assert file_stamps(state_dir) == before

    code, out, _ = run(capsys, "verify", "--state-dir", str(state_dir), "--json")
    assert code == 1
    assert any(f"at byte {offset}" in d for d in orjson.loads(out)["damage"])


@pytest.mark.parametrize(
    "damage",
    [b'{"format": "oauthd-state", "version": 1, "se', b"\0" * 64, b"[]"],
    ids=["truncated", "zero-filled", "not a snapshot"],
)
def test_verify_corrupt_snapshot(
    capsys: pytest.CaptureFixture[str], state_dir: Path, damage: bytes
) -> None:
    (state_dir / SNAPSHOT).write_bytes(damage)
    before = file_stamps(state_dir)
    code, out, _ = run(capsys, "verify", "--state-dir", str(state_dir))
    assert code == 1
    assert f"DAMAGE: {state_dir / SNAPSHOT}: " in out
    assert file_stamps(state_dir) == before  # not quarantined: verify only reads
    code, out, _ = run(capsys, "inspect", "--state-dir", str(state_dir))
    assert code == 0 and "1 problems" in out


def test_verify_record_that_does_not_decode(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    doc = snapshot_doc(state_dir)
    doc["grants"][0] = dataclasses.asdict(make_client()) | {"secret_hash": None}
    (state_dir / SNAPSHOT).write_bytes(orjson.dumps(doc))
    code, out, _ = run(capsys, "verify", "--state-dir", str(state_dir))
    assert code == 1 and f"DAMAGE: {state_dir / SNAPSHOT}: " in out and "grants" in out


async def test_copy_from_a_state_dir_a_daemon_holds_exits_75(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """EX_TEMPFAIL, like a second `serve` on the same state dir: try again once it stopped."""
    store = await populate(tmp_path / "running")
    (tmp_path / "target").mkdir()
    source = tmp_path / "a.toml"
    source.write_text('[storage]\npath = "running"\n')
    target = tmp_path / "b.toml"
    target.write_text('[storage]\npath = "target"\n')
    try:
        argv = ["state", "copy", "--from", str(source), "--to", str(target)]
        code = await asyncio.to_thread(main, argv)
    finally:
        await store.close()
    assert code == 75
    assert "a daemon is running on this state dir; stop it first" in capsys.readouterr().err
