"""`oauthd explain` reads the trail through `oauthd.store.open_audit_reader` (here a reader
of records built in the test) and prints why the user logged in again; exit 1 when the
trail has none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from oauthd import store
from oauthd.cli import explain as explain_cli
from oauthd.cli import main
from tests.support.configs import write_config


class ListReader:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.closed = False

    async def chains(self) -> list[str]:
        return ["host-a"]

    async def lines(self, chain: str) -> AsyncIterator[tuple[str, bytes]]:
        for n, record in enumerate(self.records, 1):
            yield f"line {n}", orjson.dumps({"n": n, "chain": chain, **record})

    async def close(self) -> None:
        self.closed = True


HISTORY = [
    {"at": 1000.0, "event": "token_issued", "user": "alice", "client_id": "c1",
     "grant_type": "authorization_code", "expires_at": 5000},
    {"at": 1100.0, "event": "token_refreshed", "user": "alice", "client_id": "c1",
     "expires_at": 5100},
    {"at": 1200.0, "event": "token_revoked", "user": "alice", "client_id": "c1",
     "reason": "revoked_by_admin", "by": "admin", "token_type": "grant"},
    {"at": 1300.0, "event": "token_issued", "user": "alice", "client_id": "c1",
     "grant_type": "authorization_code", "expires_at": 9000},
]  # fmt: skip


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> ListReader:
    made = ListReader(HISTORY)

    async def open_audit_reader(config: Any) -> ListReader:
        return made

    monkeypatch.setattr(store, "open_audit_reader", open_audit_reader, raising=False)
    return made


def test_explain_prints_the_reason(
    tmp_path: Path, reader: ListReader, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "oauthd.toml", 8080)
    assert main(["explain", "--user", "alice", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "alice logged in again at 1970-01-01 00:21:40 UTC (client c1)" in out
    assert "reason: revoked_by_admin: an administrator revoked the session" in out
    assert "token_refreshed" in out
    assert reader.closed


def test_explain_without_a_relogin_exits_1(
    tmp_path: Path, reader: ListReader, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "oauthd.toml", 8080)
    assert main(["explain", "--user", "bob", "--config", str(config)]) == 1
    assert "the audit trail has no re-login of bob" in capsys.readouterr().err


def call(at: float, user: str, number: int, decision: str = "allow") -> dict[str, Any]:
    return {
        "at": at, "event": "call_decided", "user": user, "client_id": "c1",
        "call": f"r{number}.1", "method": "tools/call", "target": "echo", "decision": decision,
    }  # fmt: skip


def test_calls_are_read_twice_not_kept_and_the_last_ones_before_are_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Between the grant's last refresh and its revocation the client made many calls;
    explain keeps the calls of no pass but the last, and prints the last five before the
    re-login (the records of other users are never kept)."""
    calls = [call(1100.0 + i / 100, "alice", i) for i in range(1, 5001)]
    history = [*HISTORY[:2], *calls, call(1150.0, "bob", 0), *HISTORY[2:]]
    history.sort(key=lambda r: r["at"])
    made = ListReader(history)
    kept: list[int] = []
    real = explain_cli.explain

    def counting(records: Any, user: str, client: str | None = None) -> Any:
        records = list(records)
        kept.append(len(records))
        return real(records, user, client)

    async def open_audit_reader(config: Any) -> ListReader:
        return made

    monkeypatch.setattr(store, "open_audit_reader", open_audit_reader, raising=False)
    monkeypatch.setattr(explain_cli, "explain", counting)
    config = write_config(tmp_path / "oauthd.toml", 8080)
    assert main(["explain", "--user", "alice", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert kept == [4]  # the grant's records only, no call
    assert "reason: revoked_by_admin" in out
    before = out.split("what the client did before:\n")[1].splitlines()
    assert len(before) == 5
    assert "token_revoked" in before[-1] and "call=r4997.1" in before[0]
    assert "call=r0.1" not in out  # bob's


def test_a_step_up_call_is_kept_as_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    step_up = {**call(1200.0, "alice", 9, "step_up"), "reason": "policy_rule:admin-tools"}
    history = [*HISTORY[:2], step_up, HISTORY[3]]
    made = ListReader(history)

    async def open_audit_reader(config: Any) -> ListReader:
        return made

    monkeypatch.setattr(store, "open_audit_reader", open_audit_reader, raising=False)
    config = write_config(tmp_path / "oauthd.toml", 8080)
    assert main(["explain", "--user", "alice", "--config", str(config)]) == 0
    assert "a policy step-up (rule admin-tools)" in capsys.readouterr().out
