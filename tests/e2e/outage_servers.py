"""Private backend servers that a test may crash, freeze and start again: a `redis-server`
and a PostgreSQL cluster of the test's own, on free loopback ports, in temp dirs removed
afterwards. The shared servers (6379, 5432) serve other tests and are never touched.
`RedisBackend` and `PostgresBackend` (a `Backend`) each open a store on themselves
(`open_store`) or give a daemon's [storage] keys (`storage`), with `timeout`.

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
import subprocess
import tempfile
from pathlib import Path

from oauthd.clock import FakeClock
from oauthd.store import Store
from tests.support.configs import TomlValue
from tests.support.ports import START_WITHIN, free_port, wait_listening
from tests.support.services import service_missing

REDIS_SERVER = os.environ.get("OAUTHD_TEST_REDIS_SERVER", "/usr/bin/redis-server")
PG_BIN = Path(os.environ.get("OAUTHD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
TIMEOUT = 1.0  # storage.timeout in the outage tests
RECOVER_WITHIN = 10.0  # seconds from the server's return to /readyz 200 (measured: ~1 s)


class RedisBackend:
    """A private `redis-server` with an append-only file fsynced on every write
    (`appendfsync always`): what docs/scaling.md requires for "no login lost", so a
    SIGKILL loses no answered write."""

    name = "redis"

    def __init__(self, directory: Path, timeout: float) -> None:
        if not os.access(REDIS_SERVER, os.X_OK):
            service_missing(f"redis: no redis-server at {REDIS_SERVER} (apt install redis-server)")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
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
        wait_listening(self.process, self.port, self.log, b"PING\r\n", b"+PONG")

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    restart = start

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def _crash(self) -> None:
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)
            self.process = None

    async def crash(self) -> None:
        """SIGKILL: what is not in the append-only file is lost (nothing answered is)."""
        await asyncio.to_thread(self._crash)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    async def freeze(self) -> None:
        """SIGSTOP: connections are still accepted (by the kernel), nothing is answered."""
        self._signal(signal.SIGSTOP)

    async def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None:
            self._signal(signal.SIGCONT)
            self._crash()

    async def open_store(self, clock: FakeClock, pool_size: int = 5) -> Store:
        from oauthd.store.redis import RedisStore

        return RedisStore(
            clock, self.url, prefix="outage:", pool_size=pool_size, timeout=self.timeout
        )

    def storage(self) -> dict[str, TomlValue]:
        """The [storage] keys of a daemon on this server."""
        return {
            "backend": "redis",
            "redis_url": self.url,
            "redis_prefix": "outage:",
            "timeout": f"{self.timeout:g}s",
        }


class PostgresBackend:
    """A PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only (its Unix socket
    in the temp dir), with trust authentication for the `postgres` role."""

    name = "postgres"

    def __init__(self, template: Path | None = None, timeout: float = 1.0) -> None:
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
        self.timeout = timeout
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

    def _start(self) -> None:
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

    async def start(self) -> None:
        """initdb (or the template's copy), start, and migrate to the current schema."""
        await asyncio.to_thread(self.init)
        await self.restart()
        from oauthd.store.postgres_schema import migrate

        await migrate(self.dsn, op_timeout=10)

    async def restart(self) -> None:
        await asyncio.to_thread(self._start)

    async def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every server process quits at once, without a
        checkpoint (the next start replays the write-ahead log, as after a crash)."""
        await asyncio.to_thread(self.stop, "immediate")

    def stop(self, mode: str = "fast") -> None:
        self._thaw()
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

    async def freeze(self) -> None:
        """SIGSTOP to every server process: connections are accepted (by the kernel) but
        nothing is answered, like a server that hangs. Listed and stopped again until no
        new process shows up: a connection being opened meanwhile forks a backend after
        the listing, which would go on answering (seen under load)."""
        self._frozen = []
        while new := [
            p for p in await asyncio.to_thread(self._server_pids) if p not in self._frozen
        ]:
            self._frozen += new
            for pid in new:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)

    async def thaw(self) -> None:
        self._thaw()

    def _thaw(self) -> None:
        self._kill(signal.SIGCONT)
        self._frozen = []

    def _kill(self, sig: signal.Signals) -> None:
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

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

    async def open_store(self, clock: FakeClock, pool_size: int = 5) -> Store:
        from oauthd.store.postgres import PostgresStore

        return await PostgresStore.open(
            self.dsn, clock, pool_size=pool_size, op_timeout=self.timeout
        )

    def storage(self) -> dict[str, TomlValue]:
        """The [storage] keys of a daemon on this server."""
        return {"backend": "postgres", "postgres_dsn": self.dsn, "timeout": f"{self.timeout:g}s"}


Backend = RedisBackend | PostgresBackend
