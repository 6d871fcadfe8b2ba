"""oauthd/cli/admin.py: finding the admin socket and rendering what the daemon answers
(the runs against a daemon are in tests/test_admin.py; ids that start with "-" in
tests/test_cli_ids.py)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from oauthd.admin.views import ClientGroupView, ClientView, SessionView
from oauthd.cli import main
from oauthd.cli.admin import (
    render_client_stats,
    render_clients,
    render_deleted,
    render_ended,
    render_sessions,
)


def test_no_daemon_on_the_socket_exits_69(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    socket = tmp_path / "admin.sock"
    assert main(["sessions", "list", "--socket", str(socket)]) == 69
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(
        f"oauthd: no oauthd is running on {socket}"
    )


def test_the_memory_backend_has_a_socket_only_where_the_config_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "oauthd.toml"
    config.write_text('[storage]\nbackend = "memory"\n')
    assert main(["clients", "list", "--config", str(config)]) == 78
    assert "the memory backend keeps no state dir" in capsys.readouterr().err


def session(client_name: str = "App") -> SessionView:
    return SessionView(
        id="g1",
        user="alice",
        client_id="c1",
        client_name=client_name,
        scopes=("mcp",),
        created_at=0.0,
        last_used_at=60.0,
        expires_at=None,
        mcp_sessions=0,
    )


def client() -> ClientView:
    return ClientView(
        client_id="c1",
        client_name="App\x1b[2J",
        source="dcr",
        auth_method="none",
        redirect_uris=("http://127.0.0.1/cb",),
        grant_types=("authorization_code",),
        created_at=0.0,
        expires_at=None,
        sessions=2,
    )


def test_sessions_are_a_table_with_a_count() -> None:
    out = io.StringIO()
    render_sessions([session()], out)
    header, row, _, total = out.getvalue().splitlines()
    assert header.split("  ")[0] == "SESSION" and header.endswith("EXPIRES")
    assert row.endswith("1970-01-01 00:00:00Z  1970-01-01 00:01:00Z  never")
    assert total == "1 session"
    out = io.StringIO()
    render_sessions([], out)
    assert out.getvalue() == "no sessions\n"


def test_clients_are_a_table_without_control_characters() -> None:
    out = io.StringIO()
    render_clients([client()], out)
    lines = out.getvalue().splitlines()
    assert "App?[2J" in lines[1] and "\x1b" not in out.getvalue()
    assert lines[-1] == "1 client"


def test_revoked_and_deleted_say_what_ended() -> None:
    out = io.StringIO()
    render_ended([session(client_name=""), dataclasses.replace(session(), resource="/f")], out)
    render_deleted("c1", None, [], out)
    render_deleted("c1", client(), [session()], out)
    assert out.getvalue().splitlines() == [
        "revoked g1 (user alice, client c1)",
        "revoked g1 (user alice, client App, resource /f)",
        "2 sessions revoked",
        "deleted client c1 (not cached); 0 sessions ended",
        "deleted client c1 (App?[2J); 1 session ended",
    ]


def test_client_stats_are_a_table_of_apps_with_totals() -> None:
    group = ClientGroupView(
        client_name="Claude Code",
        redirect_uris=("http://localhost:*/callback",),
        clients=21,
        used=1,
        never_used=20,
        sessions=1,
        oldest=0.0,
        newest=60.0,
        last_used_at=None,
    )
    out = io.StringIO()
    render_client_stats([group, dataclasses.replace(group, client_name="VS Code", clients=1)], out)
    header, first, second, _, total = out.getvalue().splitlines()
    assert header.split()[:5] == ["NAME", "CLIENTS", "USED", "NEVER", "USED"]
    assert first.split("  ")[0] == "Claude Code" and "http://localhost:*/callback" in first
    assert "1970-01-01 00:00:00Z  1970-01-01 00:01:00Z  never" in first
    assert second.startswith("VS Code")
    assert total == "22 registrations of 2 apps"
    out = io.StringIO()
    render_client_stats([], out)
    assert out.getvalue() == "no registrations\n"


def test_sessions_show_their_resource() -> None:
    out = io.StringIO()
    render_sessions([dataclasses.replace(session(), resource="/files/mcp")], out)
    header, row, _, _ = out.getvalue().splitlines()
    assert "RESOURCE" in header.split() and "/files/mcp" in row.split()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--id", "g1", "--resource", "/mcp"], "not allowed with argument --id"),
        ([], "one of the arguments --id --user --client --resource is required"),
    ],
)
def test_revoke_needs_a_selector_and_an_id_stands_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    socket = str(tmp_path / "admin.sock")
    assert main(["sessions", "revoke", *argv, "--socket", socket]) == 64
    assert message in capsys.readouterr().err


def test_revoke_by_resource_alone_or_with_a_user_asks_the_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    socket = str(tmp_path / "admin.sock")  # nobody there: the command got past its checks
    for argv in (["--resource", "/mcp"], ["--user", "alice", "--resource", "/mcp"]):
        assert main(["sessions", "revoke", *argv, "--socket", socket]) == 69
    assert "no oauthd is running" in capsys.readouterr().err
