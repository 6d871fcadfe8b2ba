"""oauthd's app in process: on a `TestServer` at the config's listen port, in the test's
event loop, with a fake clock, and an API client of it (`Running.client`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestServer

from oauthd.assembly import STORE, create_app
from oauthd.clock import FakeClock
from oauthd.config import Config
from oauthd.http.keys import AUTH
from oauthd.log import flush_lines
from oauthd.oauth import AuthServer
from oauthd.store import Store
from oauthd.tracing import Tracing
from tests.support.configs import introspection_secret, make_config
from tests.support.http_client import OauthdClient
from tests.support.ports import free_port


@dataclass
class Running:
    """The app and an API client of it (`client`). `restart()` stops the app and starts a
    new one on the same port, config, clock and state dir."""

    config: Config
    clock: FakeClock = field(default_factory=lambda: FakeClock(time.time()))
    server: TestServer | None = None
    tracing: Tracing | None = None  # the app's tracer (None: `[tracing]`'s)
    client: OauthdClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = OauthdClient(self.base, self.config.server.issuer)

    @classmethod
    async def start_in(cls, directory: Path, **sections: Any) -> Self:
        """`make_config(directory, <a free port>, **sections)`, started."""
        running = cls(make_config(directory, free_port(), **sections))
        await running.start()
        return running

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.config.server.listen.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.config.server.issuer}/mcp"

    @property
    def app(self) -> web.Application:
        assert self.server is not None
        return self.server.app

    @property
    def auth(self) -> AuthServer:
        return self.app[AUTH]

    @property
    def store(self) -> Store:
        return self.app[STORE]

    @property
    def introspection_secret(self) -> str:
        return introspection_secret(self.config)

    async def start(self) -> None:
        port = self.config.server.listen.port
        app = create_app(self.config, clock=self.clock, tracing=self.tracing)
        self.server = TestServer(app, host="127.0.0.1", port=port)
        await self.server.start_server()
        # As in the daemon: a client that goes away cancels its handler. aiohttp's
        # TestServer sets this itself (passing it again is a TypeError); make sure it did.
        assert self.server.runner is not None
        assert self.server.runner._kwargs.get("handler_cancellation") is True

    async def stop(self) -> None:
        """Stop the app (the store writes its final snapshot), and write the log lines
        that wait in `write_line`'s buffer, as the daemon does at shutdown."""
        if self.server is not None:
            await self.server.close()
            self.server = None
        flush_lines()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def close(self) -> None:
        await self.client.close()
        await self.stop()


Start = Callable[..., Awaitable[Running]]
R = TypeVar("R", bound=Running)


@asynccontextmanager
async def starter(
    directory: Path, cls: type[R], **defaults: Any
) -> AsyncIterator[Callable[..., Awaitable[R]]]:
    """`await start(**sections)`: a started `cls` (`make_config`'s arguments, over
    `defaults`), each in a directory of its own under `directory`; all closed at the end."""
    started: list[R] = []

    async def start(**sections: Any) -> R:
        own = directory / f"oauthd-{len(started)}"
        own.mkdir()
        started.append(await cls.start_in(own, **{**defaults, **sections}))
        return started[-1]

    try:
        yield start
    finally:
        for running in started:
            await running.close()
