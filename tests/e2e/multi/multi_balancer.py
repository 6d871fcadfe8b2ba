"""The load balancer of the multi-instance tests: a reverse proxy in the test process, on
the issuer's port, that sends each request to the next instance (round robin), streaming
the answers back (SSE), and remembers which instance served what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web
from yarl import URL

# Hop-by-hop headers (RFC 9110 s7.6.1) and what the balancer's own HTTP stack sets.
_NOT_RELAYED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class Member(Protocol):
    """An instance behind the balancer."""

    name: str
    url: str


@dataclass(frozen=True, slots=True)
class Served:
    """One request the balancer relayed: to which instance, and its answer's status."""

    instance: str
    method: str
    path: str
    status: int
    session_id: str | None  # the Mcp-Session-Id the request carried
    bearer: str  # the access token it carried ("" for none)


class RoundRobin:
    """A reverse proxy on the issuer's port that sends each request to the next instance of
    `pool`, streaming the answer back as it comes (SSE). It keeps no cookies: the browser's
    cookie reaches whichever instance serves the next page."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.pool: list[Member] = []
        self.served: list[Served] = []
        self._turn = 0
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        # handler_cancellation: a client that goes away ends the relayed stream too.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        try:
            if self._runner is not None:
                await self._runner.cleanup()
        finally:  # the client session closes even if the server's cleanup failed
            if self._http is not None:
                await self._http.close()

    def _next(self) -> Member:
        assert self.pool, "no instance to balance over"
        instance = self.pool[self._turn % len(self.pool)]
        self._turn += 1
        return instance

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        instance = self._next()
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_RELAYED]
        async with self._http.request(
            request.method,
            URL(instance.url + request.raw_path, encoded=True),
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        ) as answer:
            self.served.append(
                Served(
                    instance.name,
                    request.method,
                    request.path,
                    answer.status,
                    request.headers.get("Mcp-Session-Id"),
                    request.headers.get("Authorization", "").removeprefix("Bearer "),
                )
            )
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for name, value in answer.headers.items():
                if name.lower() not in _NOT_RELAYED:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
