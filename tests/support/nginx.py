"""Debian's nginx as the TLS-less reverse proxy in front of an oauthd, as
docs/operations.md ("Behind a reverse proxy") configures it: it appends the peer's address
to `X-Forwarded-For` and connects to oauthd from 127.0.0.1. Clients connect to it from
other loopback addresses (127.0.0.2, ...), so that nginx and each client are told apart."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from tests.support.daemon import stop_process
from tests.support.ports import wait_listening
from tests.support.services import service_missing

CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_body_buffer_size 1m;
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""
# The locations of docs/operations.md's "Behind a reverse proxy" ({{ }} for braces).
PROXY_LOCATIONS = """\
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_bind 127.0.0.1;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
        }}
"""


def nginx_binary() -> str:
    """nginx's path; the test is skipped (failed under OAUTHD_REQUIRE_SERVICES=1) without it.
    CI installs Debian's nginx-light (`.ci/run`)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        service_missing("nginx is not installed (apt-get install nginx-light)")
        raise AssertionError("unreachable")
    return found


def _spawn(
    directory: Path, port: int, upstream_port: int, locations: str
) -> subprocess.Popen[bytes]:
    binary = nginx_binary()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    located = locations.format(upstream_port=upstream_port)
    conf.write_text(CONF.format(dir=directory, port=port, locations=located))
    with (directory / "stderr.log").open("wb") as stderr:
        return subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


@contextlib.asynccontextmanager
async def running_nginx(
    directory: Path, port: int, upstream_port: int, locations: str = PROXY_LOCATIONS
) -> AsyncIterator[None]:
    """nginx on 127.0.0.1:`port` in front of 127.0.0.1:`upstream_port` (`locations`: the
    server's location blocks, `{upstream_port}` filled in), stopped at exit."""
    proc = _spawn(directory, port, upstream_port, locations)
    try:
        await asyncio.to_thread(wait_listening, proc, port, (directory / "stderr.log").read_text)
        yield
    finally:  # SIGTERM: fast shutdown of this master and its worker
        stop_process(proc, signal.SIGTERM, 10)
