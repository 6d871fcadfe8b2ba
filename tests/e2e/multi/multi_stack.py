"""Several `oauthd serve` processes (`OauthdProcess`es) on one shared backend (redis or
postgres), behind a round-robin balancer (multi_balancer.py) on the issuer's port, in front
of one demo upstream MCP server (issue #6: instances that behave as one daemon)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.multi.multi_balancer import RoundRobin
from tests.support.configs import INTROSPECTION_ID, TomlValue, write_secret
from tests.support.daemon import OauthdProcess, proxy_daemon
from tests.support.ports import free_port


async def every_one(calls: Iterable[Awaitable[object]]) -> None:
    """Run `calls` together, each to its end; then raise the first failure, if any."""
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


@dataclass
class Cluster:
    """Instances sharing one backend, issuer, encryption key, introspection client and
    upstream (their configs differ in the port, and maybe in `[tokens]`); the balancer
    listens on the issuer's port."""

    directory: Path
    storage: dict[str, TomlValue]  # the shared backend's [storage] keys
    upstream_url: str
    balancer: RoundRobin
    instances: list[OauthdProcess] = field(default_factory=list)
    no_grace: list[OauthdProcess] = field(default_factory=list)  # see conftest.no_grace_pair
    limited: list[OauthdProcess] = field(default_factory=list)  # see conftest.limited_pair
    introspection_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.balancer.port}"

    @property
    def resource(self) -> str:
        return f"{self.issuer}/mcp"

    @classmethod
    async def start(
        cls, directory: Path, storage: dict[str, TomlValue], upstream_url: str
    ) -> Cluster:
        """The balancer, on the issuer's port; no instance yet (`add_instances`)."""
        cluster = cls(directory, storage, upstream_url, RoundRobin(free_port()))
        write_secret(directory / "encryption.key", secrets.token_hex(32))
        write_secret(directory / "introspection.secret", cluster.introspection_secret)
        try:
            await cluster.balancer.start()
        except BaseException:  # half started (its client session, its runner): stop that
            await cluster.balancer.stop()
            raise
        return cluster

    async def add_instances(
        self, count: int, oauth: dict[str, TomlValue] | None = None, **tokens: str
    ) -> list[OauthdProcess]:
        """Start `count` more instances (`tokens`: [tokens] keys for these, e.g. a grace;
        `oauth`: their [oauth] keys, by default a registration limit no test reaches)."""
        oauth = {"registrations_per_minute": 1000} if oauth is None else oauth
        added = [
            self._instance(f"i{len(self.instances) + n + 1}", tokens, oauth) for n in range(count)
        ]
        self.instances.extend(added)
        # Every start runs to its end before a failure is raised, so that `stop` (which
        # stops all of `self.instances`) never races a start still under way.
        await every_one(instance.start() for instance in added)
        return added

    def _instance(
        self, name: str, tokens: dict[str, str], oauth: dict[str, TomlValue]
    ) -> OauthdProcess:
        """`oauthd serve` on a port of its own, with its config, log and admin socket
        (`admin.sock`) in a directory of its own."""
        directory = self.directory / name
        directory.mkdir()
        return proxy_daemon(
            directory,
            self.upstream_url,
            issuer=self.issuer,
            name=name,
            storage={**self.storage, "timeout": "5s"},
            tokens=dict(tokens),
            oauth=oauth,
            introspection={
                "client_id": INTROSPECTION_ID,
                "client_secret": f"file:{self.directory / 'introspection.secret'}",
            },
            login={"encryption_key": f"file:{self.directory / 'encryption.key'}"},
            admin={"socket": "admin.sock"},
        )

    def balance(self, pool: Iterable[OauthdProcess]) -> None:
        self.balancer.pool = list(pool)
        self.balancer.served.clear()

    async def stop(self) -> None:
        """The balancer and every instance, each even if stopping another one failed; then
        the first failure, if any."""
        try:
            await self.balancer.stop()
        finally:
            await every_one(instance.stop() for instance in self.instances)

    def logs(self) -> str:
        return "\n".join(f"--- {i.name} ---\n{i.log()[-8000:]}" for i in self.instances)
