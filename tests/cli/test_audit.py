"""`oauthd audit verify|export` on a file backend's state dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from oauthd.audit import AuditEvent
from oauthd.cli import main
from oauthd.clock import FakeClock
from tests.support.persist import open_store

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


@pytest.fixture
async def config(tmp_path: Path) -> Path:
    """A state dir with five records (one a minute from T0), all in the segments."""
    clock = FakeClock(T0)
    store = await open_store(tmp_path / "state", clock)
    for i, (user, client) in enumerate([("alice", "c1"), ("bob", "c1"), ("alice", "c2"),
                                        ("bob", "c2"), ("alice", "c1")]):  # fmt: skip
        await store.audit.append(
            AuditEvent(
                "token_issued", user=user, client_id=client, resource="/mcp", detail={"i": i}
            )
        )
        clock.advance(60)
    await store.close()
    path = tmp_path / "oauthd.toml"
    path.write_text(f'[storage]\npath = "{tmp_path / "state"}"\n')
    return path


def segment(config: Path) -> Path:
    return next((config.parent / "state" / "audit").iterdir())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_an_intact_trail_verifies(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "audit", "verify", "--config", str(config))
    assert code == 0, out
    assert "5 records checked (1..5), intact" in out


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("edit", "record 3 at audit/audit-00000000000000000001.jsonl line 3: hash does not match"),
        ("delete", "record 4 at audit/audit-00000000000000000001.jsonl line 3: expected record 3"),
        ("reorder", "record 4 at audit/audit-00000000000000000001.jsonl line 3: expected record 3"),
    ],
)
def test_an_edited_deleted_or_reordered_record_fails_naming_its_position(
    config: Path, capsys: pytest.CaptureFixture[str], damage: str, expected: str
) -> None:
    path = segment(config)
    lines = path.read_bytes().splitlines()
    if damage == "edit":
        lines[2] = lines[2].replace(b'"alice"', b'"mallory"')
    elif damage == "delete":
        del lines[2]
    else:
        lines[2], lines[3] = lines[3], lines[2]
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, out = run(capsys, "audit", "verify", "--config", str(config))
    assert code == 1
    assert expected in out, out


def test_dropping_the_oldest_records_fails_when_retention_is_off(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = segment(config)
    path.write_bytes(b"\n".join(path.read_bytes().splitlines()[2:]) + b"\n")
    code, out = run(capsys, "audit", "verify", "--config", str(config))
    assert code == 0, out  # the default retention (90 days) may have removed them
    config.write_text(config.read_text() + "\n[audit]\nretention = 0\n")
    code, out = run(capsys, "audit", "verify", "--config", str(config))
    assert code == 1 and "records 1..2 are missing" in out, out


def test_verify_of_an_unknown_chain_fails(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "audit", "verify", "--config", str(config), "--chain", "other")
    assert code == 1 and "no audit chain 'other'" in out


def exported(capsys: pytest.CaptureFixture[bytes], *filters: str) -> list[int]:
    assert main(["audit", "export", *filters]) == 0
    return [orjson.loads(line)["i"] for line in capsys.readouterr().out.splitlines()]


def test_export_filters(config: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    where = ("--config", str(config))
    assert exported(capsysbinary, *where) == [0, 1, 2, 3, 4]
    assert exported(capsysbinary, *where, "--user", "alice") == [0, 2, 4]
    assert exported(capsysbinary, *where, "--client", "c2", "--user", "bob") == [3]
    assert exported(capsysbinary, *where, "--resource", "/other") == []
    assert exported(capsysbinary, *where, "--since", str(T0 + 60), "--until", str(T0 + 180)) == [
        1,
        2,
    ]
    assert exported(capsysbinary, *where, "--since", "2026-05-28T20:28:40Z") == [2, 3, 4]
    assert exported(capsysbinary, *where, "--until", "2026-05-28") == []


def test_export_refuses_a_bad_time_and_format(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "audit", "export", "--config", str(config), "--since", "soon")[0] == 64
    assert run(capsys, "audit", "export", "--config", str(config), "--format", "csv")[0] == 64


def test_a_memory_backend_has_no_trail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "oauthd.toml"
    path.write_text('[storage]\nbackend = "memory"\n')
    code, out = run(capsys, "audit", "verify", "--config", str(path))
    assert code == 78 and "keeps no audit records" in out


def test_cutting_the_newest_records_fails_and_a_restart_keeps_the_gap(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The segments' end is anchored outside them (`audit-head.json`, written at each sync
    and at shutdown): records cut from the end are reported, and a restart goes on after
    the anchor, so new records do not take the lost ones' positions."""
    state = config.parent / "state"
    assert orjson.loads((state / "audit-head.json").read_bytes())["n"] == 5
    for journal in state.glob("journal-*.log"):  # as once a snapshot trimmed the journal
        journal.unlink()
    path = segment(config)
    path.write_bytes(b"\n".join(path.read_bytes().splitlines()[:3]) + b"\n")
    code, out = run(capsys, "audit", "verify", "--config", str(config))
    assert code == 1
    assert "audit-head.json: the chain ends at record 3, but audit-head.json says it" in out, out

    async def restart(record: bool) -> None:
        store = await open_store(state, FakeClock(T0 + 600))
        if record:
            await store.audit.append(AuditEvent("token_issued", user="carol", client_id="c3"))
        await store.close()

    asyncio.run(restart(record=False))  # a shutdown before any record keeps the anchor
    assert orjson.loads((state / "audit-head.json").read_bytes())["n"] == 5
    asyncio.run(restart(record=True))
    code, out = run(capsys, "audit", "verify", "--config", str(config))
    assert code == 1
    assert "record 6 at audit/audit-00000000000000000001.jsonl line 4: expected record 4" in out


def test_a_trail_cut_to_nothing_fails(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = config.parent / "state"
    for journal in state.glob("journal-*.log"):
        journal.unlink()
    segment(config).write_bytes(b"")
    code, out = run(capsys, "audit", "verify", "--config", str(config))
    assert code == 1
    assert "the chain ends at record 0, but audit-head.json says it reached 5" in out, out
