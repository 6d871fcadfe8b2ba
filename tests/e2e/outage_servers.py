"""Private backend servers that a test may crash, freeze and start again: a `redis-server`
and a PostgreSQL cluster of the test's own, on free loopback ports, in temp dirs removed
afterwards. The shared servers (6379, 5432) serve other tests and are never touched.
`RedisBackend` and `PostgresBackend` put a store (or a daemon's [storage]) on them.

PostgreSQL refuses to run as root: as root (CI), initdb and pg_ctl run as the `postgres`
user (`runuser`), in a temp dir that user owns; otherwise as the user running the tests.
A missing binary skips the test visibly (`service_missing`; a failure under
OAUTHD_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from oauthd.clock import FakeClock
from oauthd.store import Store
from tests.support.configs import TomlValue
from tests.support.ports import free_port
from tests.support.services import service_missing

REDIS_SERVER = os.environ.get("OAUTHD_TEST_REDIS_SERVER", "/usr/bin/redis-server")
PG_BIN = Path(os.environ.get("OAUTHD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_WITHIN = 20.0  # seconds a server gets to accept connections


def _answers(port: int, request: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(request)
            return sock.recv(64).startswith(expect)
    except OSError:
        return False


class PrivateRedis:
    """`redis-server` with an append-only file fsynced on every write (`appendfsync
    always`): what docs/scaling.md requires for "no login lost", so a SIGKILL loses no
    answered write."""

    def __init__(self, directory: Path) -> None:
        if not os.access(REDIS_SERVER, os.X_OK):
            service_missing(f"redis: no redis-server at {REDIS_SERVER} (apt install redis-server)")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_WITHIN
        while not _answers(self.port, b"PING\r\n", b"+PONG"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def crash(self) -> None:
        """SIGKILL: what is not in the append-only file is lost (nothing answered is)."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)
            self.process = None

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted (by the kernel), nothing is answered."""
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None:
            self.thaw()
            self.crash()


class PrivatePostgres:
    """A PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only (its Unix socket
    in the temp dir), with trust authentication for the `postgres` role."""

    def __init__(self, template: Path | None = None) -> None:
        """`template`: the data dir of an initialised cluster (`init`) to copy instead of
        running initdb again (a second or two each)."""
        if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
            service_missing(f"postgres: no initdb/pg_ctl in {PG_BIN} (apt install postgresql)")
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                service_missing("postgres: running as root and there is no `postgres` user")
            if shutil.which("runuser") is None:
                service_missing("postgres: running as root and there is no runuser")
        self.directory = Path(tempfile.mkdtemp(prefix="oauthd-pg-"))
        if self._as_postgres:
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self.data = self.directory / "data"
        self.template = template
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        self._frozen: list[int] = []

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
                f"\n{self.log()}"
            )

    def init(self) -> None:
        if self.template is not None:  # cp -a keeps the owner (postgres) and the modes
            self._run("cp", "-a", str(self.template), str(self.data))
            return
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",  # initdb's own files only; the server fsyncs its commits as usual
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c max_connections=50"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(int(START_WITHIN)),
            "start",
        )
        self.running = True

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every server process quits at once, without a
        checkpoint (the next start replays the write-ahead log, as after a crash)."""
        self.stop("immediate")

    def stop(self, mode: str = "fast") -> None:
        self.thaw()
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def _server_pids(self) -> list[int]:
        """The postmaster and its children (each connection has a process of its own)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    pids.append(int(stat.parent.name))
        return pids

    def freeze(self) -> None:
        """SIGSTOP to every server process: connections are accepted (by the kernel) but
        nothing is answered, like a server that hangs."""
        self._frozen = self._server_pids()
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = []

    def log(self) -> str:
        path = self.directory / "postgres.log"
        with contextlib.suppress(OSError):
            return path.read_text(errors="replace")[-3000:]
        return ""

    def close(self) -> None:
        try:
            if self.running:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.stop("immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


# -- the backends as the tests use them ------------------------------------------------------


class Backend:
    """A private server, and a store or a daemon's [storage] on it, with `timeout`."""

    name: str
    timeout = 1.0

    async def start(self) -> None:
        raise NotImplementedError

    async def open_store(self, clock: FakeClock, pool_size: int = 5) -> Store:
        raise NotImplementedError

    async def crash(self) -> None:
        raise NotImplementedError

    async def restart(self) -> None:
        raise NotImplementedError

    async def freeze(self) -> None:
        raise NotImplementedError

    async def thaw(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def storage(self) -> dict[str, TomlValue]:
        """The [storage] keys of a daemon on this backend."""
        raise NotImplementedError


class RedisBackend(Backend):
    name = "redis"

    def __init__(self, directory: Path, timeout: float) -> None:
        self.server = PrivateRedis(directory)
        self.timeout = timeout

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)

    async def open_store(self, clock: FakeClock, pool_size: int = 5) -> Store:
        from oauthd.store.redis import RedisStore

        return RedisStore(
            clock, self.server.url, prefix="outage:", pool_size=pool_size, timeout=self.timeout
        )

    async def crash(self) -> None:
        await asyncio.to_thread(self.server.crash)

    async def restart(self) -> None:
        await asyncio.to_thread(self.server.start)

    async def freeze(self) -> None:
        self.server.freeze()

    async def thaw(self) -> None:
        self.server.thaw()

    def close(self) -> None:
        self.server.close()

    def storage(self) -> dict[str, TomlValue]:
        return {
            "backend": "redis",
            "redis_url": self.server.url,
            "redis_prefix": "outage:",
            "timeout": f"{self.timeout:g}s",
        }


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, template: Path, timeout: float) -> None:
        self.server = PrivatePostgres(template)
        self.timeout = timeout

    async def start(self) -> None:
        await asyncio.to_thread(self.server.init)
        await asyncio.to_thread(self.server.start)
        from oauthd.store.postgres_schema import migrate

        await migrate(self.server.dsn, op_timeout=10)

    async def open_store(self, clock: FakeClock, pool_size: int = 5) -> Store:
        from oauthd.store.postgres import PostgresStore

        return await PostgresStore.open(
            self.server.dsn, clock, pool_size=pool_size, op_timeout=self.timeout
        )

    async def crash(self) -> None:
        await asyncio.to_thread(self.server.crash)

    async def restart(self) -> None:
        await asyncio.to_thread(self.server.start)

    async def freeze(self) -> None:
        await asyncio.to_thread(self.server.freeze)

    async def thaw(self) -> None:
        await asyncio.to_thread(self.server.thaw)

    def close(self) -> None:
        self.server.close()

    def storage(self) -> dict[str, TomlValue]:
        return {
            "backend": "postgres",
            "postgres_dsn": self.server.dsn,
            "timeout": f"{self.timeout:g}s",
        }
