"""Ports for servers the tests start, and waiting for one to listen."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

START_WITHIN = 20.0  # seconds a server gets to accept connections


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int, request: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if request:
                sock.sendall(request)
            return sock.recv(64).startswith(expect) if request else True
    except OSError:
        return False


def wait_listening(
    proc: subprocess.Popen[bytes],
    port: int,
    log: Callable[[], str],
    request: bytes = b"",
    expect: bytes = b"",
) -> None:
    """Until 127.0.0.1:`port` accepts a connection (and answers `request` with `expect`);
    a RuntimeError with `log()` if `proc` exits first or START_WITHIN passes."""
    deadline = time.monotonic() + START_WITHIN
    while not _answers(port, request, expect):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args} did not start:\n{log()}")
        time.sleep(0.02)
