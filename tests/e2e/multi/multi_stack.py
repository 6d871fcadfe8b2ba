"""Several `oauthd serve` processes on one shared backend (redis or postgres), behind a
round-robin balancer (multi_balancer.py), in front of one demo upstream MCP server
(issue #6: instances that behave as one daemon).

    cluster = await Cluster.start(directory, backend, upstream_url)
    await cluster.add_instances(3)
    cluster.balance(cluster.instances[:2])  # the instances the balancer takes turns with
    cluster.issuer                           # the balancer: the one issuer of every instance
    cluster.instances[0].url                 # one instance, directly
    await cluster.stop()

Plain module (tests/multi has no `__init__.py`; pytest puts this folder on sys.path), named
so that it shadows nothing. The processes come from tests/interop/interop_harness.py (the
conftest puts that folder on sys.path).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from tests.e2e.multi.multi_balancer import RoundRobin
from tests.support.daemon import (
    PASSWORD_HASH,
    START_TIMEOUT,
    STOP_TIMEOUT,
    USER,
    _spawn,
    _stop_process,
    free_port,
    oauthd_command,
)
from tests.support.postgres import create_schema, drop_schema, postgres_probe, schema_dsn
from tests.support.redis_backend import REDIS_URL, redis_cleanup, redis_probe
from tests.support.services import StateRef, service_missing

INTROSPECTOR = "multi-introspector"


# -- the shared backends ----------------------------------------------------------------------


class SharedBackend(Protocol):
    name: str

    def storage_toml(self) -> str: ...

    async def prepare(self, config: Path) -> None: ...

    async def cleanup(self) -> None: ...


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string


@dataclass
class RedisBackend:
    """One key prefix of the test Redis server, deleted afterwards."""

    namespace: str
    name: str = "redis"

    def storage_toml(self) -> str:
        return (
            f'backend = "redis"\nredis_url = {_toml_string(REDIS_URL)}\n'
            f'redis_prefix = "{self.namespace}:"\n'
        )

    async def prepare(self, config: Path) -> None:
        return None

    async def cleanup(self) -> None:
        await redis_cleanup(StateRef(Path(), self.namespace))  # (only the prefix matters)


@dataclass
class PostgresBackend:
    """A schema of its own on the test PostgreSQL server, created by `oauthd migrate` and
    dropped afterwards."""

    namespace: str
    name: str = "postgres"

    @property
    def schema(self) -> str:
        return self.namespace.replace("-", "_")

    def storage_toml(self) -> str:
        return f'backend = "postgres"\npostgres_dsn = {_toml_string(schema_dsn(self.schema))}\n'

    async def prepare(self, config: Path) -> None:
        await create_schema(self.schema)
        done = await asyncio.to_thread(
            subprocess.run,
            [*oauthd_command(), "migrate", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    async def cleanup(self) -> None:
        await drop_schema(self.schema)


async def shared_backend(name: str) -> SharedBackend:
    """A fresh namespace on the named server; skips (or fails in CI) when it is absent."""
    namespace = f"oauthd-multi-{uuid.uuid4().hex[:16]}"
    if name == "redis":
        if (reason := await redis_probe()) is not None:
            service_missing(f"redis: {reason}")
        return RedisBackend(namespace)
    if (reason := await postgres_probe()) is not None:
        service_missing(f"postgres: {reason}")
    return PostgresBackend(namespace)


# -- one oauthd process -------------------------------------------------------------------------


class Instance:
    """`oauthd serve` on a port of its own, with its config, log and admin socket
    (`admin.sock`) in a directory of its own."""

    def __init__(self, name: str, directory: Path, config_text: Callable[[int], str]) -> None:
        self.name = name
        self.directory = directory
        directory.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "config.toml"
        self.config.write_text(config_text(self.port))
        self.log_path = directory / "oauthd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = _spawn(
            [*oauthd_command(), "serve", "--config", str(self.config)],
            self.log_path,
            self.directory,
        )
        deadline = time.monotonic() + START_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
                try:
                    async with http.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {START_TIMEOUT} s:\n{self.log()}")

    async def stop(self) -> int | None:
        """SIGTERM (SIGKILL past the timeout); the exit status, None if it was not running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        return await asyncio.to_thread(_stop_process, proc, signal.SIGTERM, STOP_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- the cluster ---------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Instances sharing one backend, issuer, encryption key, introspection client and
    upstream (their configs differ in the port, and maybe in `[tokens]`); the balancer
    listens on the issuer's port."""

    directory: Path
    backend: SharedBackend
    upstream_url: str
    balancer: RoundRobin
    instances: list[Instance] = field(default_factory=list)
    no_grace: list[Instance] = field(default_factory=list)  # see conftest.no_grace_pair
    introspection_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.balancer.port}"

    @property
    def resource(self) -> str:
        return f"{self.issuer}/mcp"

    @classmethod
    async def start(cls, directory: Path, backend: SharedBackend, upstream_url: str) -> Cluster:
        """The balancer, on the issuer's port; no instance yet (`add_instances`)."""
        cluster = cls(directory, backend, upstream_url, RoundRobin(free_port()))
        (directory / "encryption.key").write_text(secrets.token_hex(32))
        (directory / "introspection.secret").write_text(cluster.introspection_secret)
        try:
            await cluster.balancer.start()
        except BaseException:  # half started (its client session, its runner): stop that
            await cluster.balancer.stop()
            raise
        return cluster

    async def add_instances(self, count: int, **tokens: str) -> list[Instance]:
        """Start `count` more instances (`tokens`: [tokens] keys for these, e.g. a grace)."""
        added = [
            Instance(
                f"i{len(self.instances) + n + 1}",
                self.directory / f"i{len(self.instances) + n + 1}",
                lambda port: self.config_text(port, tokens),
            )
            for n in range(count)
        ]
        self.instances.extend(added)
        if len(self.instances) == count:  # the first: the backend needs its schema
            await self.backend.prepare(added[0].config)
        # Every start runs to its end before a failure is raised, so that `stop` (which
        # stops all of `self.instances`) never races a start still under way.
        outcomes = await asyncio.gather(
            *(instance.start() for instance in added), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return added

    def config_text(self, port: int, tokens: dict[str, str]) -> str:
        token_keys = "".join(f"{k} = {_toml_string(v)}\n" for k, v in tokens.items())
        return f"""\
[server]
listen = "127.0.0.1:{port}"
issuer = "{self.issuer}"
shutdown_timeout = "2s"

[upstream]
url = "{self.upstream_url}"
connect_timeout = "5s"
read_timeout = "60s"

[storage]
{self.backend.storage_toml()}timeout = "5s"

[tokens]
{token_keys}
[oauth]
registrations_per_minute = 1000

[introspection]
client_id = "{INTROSPECTOR}"
client_secret = "file:{self.directory / "introspection.secret"}"

[login]
encryption_key = "file:{self.directory / "encryption.key"}"

[[login.users]]
username = "{USER}"
password_hash = "{PASSWORD_HASH}"

[admin]
socket = "admin.sock"
"""

    def balance(self, pool: Iterable[Instance]) -> None:
        self.balancer.pool = list(pool)
        self.balancer.served.clear()

    async def stop(self) -> None:
        """The balancer and every instance, each even if stopping another one failed; then
        the first failure, if any."""
        try:
            await self.balancer.stop()
        finally:
            outcomes = await asyncio.gather(
                *(instance.stop() for instance in self.instances), return_exceptions=True
            )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def logs(self) -> str:
        return "\n".join(f"--- {i.name} ---\n{i.log()[-8000:]}" for i in self.instances)
