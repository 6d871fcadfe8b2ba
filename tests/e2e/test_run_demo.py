"""scripts/run-demo on other ports: the demo MCP server and oauthd in front of it, run from
a copy of the repository's demo files (so that its var/ is the test's own) with this
venv."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support.daemon import clean_env, request, stop_process
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def demo_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for name in ("scripts", "examples"):
        shutil.copytree(REPO / name, root / name)
    for name in ("config.example.toml", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, root / name)
    # This venv, seen through a directory of the copy's own: its `.installed` tells run-demo
    # to install nothing, and no marker run-demo writes lands in the real venv (an install
    # from the copy would point the real venv's editable oauthd at a directory that goes).
    venv = root / ".venv"
    venv.mkdir()
    for entry in (REPO / ".venv").iterdir():
        if not entry.name.startswith("."):
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed").touch()
    return root


def wait_ready(proc: subprocess.Popen[bytes], port: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, "run-demo exited"
        try:
            if request(port, "GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"oauthd did not answer on {port} within {within} s")


def test_run_demo_takes_other_ports(tmp_path: Path) -> None:
    root = demo_copy(tmp_path)
    port, upstream = free_port(), free_port()
    out = tmp_path / "out"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            ["scripts/run-demo", "--port", str(port), f"--upstream-port={upstream}"],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            start_new_session=True,
        )
        try:
            wait_ready(proc, port)
            status, metadata = request(port, "GET", "/.well-known/oauth-authorization-server")
            assert status == 200 and metadata["issuer"] == f"http://127.0.0.1:{port}"
            # the unauthenticated call reaches the gate, and the upstream is the demo server
            assert request(port, "POST", "/mcp", {"jsonrpc": "2.0"})[0] == 401
            assert request(upstream, "GET", "/mcp")[0] != 0
        finally:
            assert stop_process(proc, signal.SIGTERM, 30) == 0, out.read_text()
    banner = out.read_text()
    assert f"http://127.0.0.1:{port}/mcp" in banner and f"127.0.0.1:{upstream}/mcp" in banner
    config = (root / "var/demo-config.toml").read_text()
    assert f'url = "http://127.0.0.1:{upstream}/mcp"' in config and 'path = "oauthd"' in config
    assert (root / "var/oauthd").is_dir(), "the state dir is the example's var/oauthd"


def test_run_demo_refuses_a_bad_port(tmp_path: Path) -> None:
    root = demo_copy(tmp_path)
    done = subprocess.run(
        ["scripts/run-demo", "--port", "http"],
        cwd=root,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert done.returncode == 64 and "--port needs a port number" in done.stderr
    assert not os.path.exists(root / "var")
