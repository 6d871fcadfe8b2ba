"""MCP upstreams for the tests: `FakeUpstream`, the one scriptable stand-in (in the
test's event loop; it records every request, `answer` scripts the replies), and
`DemoUpstream`, the real MCP server of `examples/demo_server.py` (the official `mcp` SDK)
in a subprocess."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import mcp_types as types
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from tests.support.daemon import ROOT, stop_process
from tests.support.ports import free_port, wait_listening

DEMO = ROOT / "examples" / "demo_server.py"


# -- the fake upstream MCP server ------------------------------------------------------------


@dataclass
class Seen:
    """One request as the upstream got it. `body` is None when it was not read completely
    (the answer streams it itself, or the sender gave up half way)."""

    method: str
    raw_path: str  # path and query as they came on the request line
    headers: CIMultiDictProxy[str]
    body: bytes | None = None

    @property
    def session_id(self) -> str | None:
        return self.headers.get("Mcp-Session-Id")


Answer = Callable[[web.Request, Seen], Awaitable[web.StreamResponse]]


async def echo(request: web.Request, seen: Seen) -> web.StreamResponse:
    """The default answer: a JSON-RPC result describing what arrived."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"method": seen.method, "bytes": len(seen.body or b"")},
    }
    return web.json_response(body)


def sse_event(data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: message\ndata: {data}\n\n".encode()


async def start_sse(request: web.Request, **headers: str) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
    )
    await response.prepare(request)
    return response


class FakeUpstream:
    """An MCP server stand-in on 127.0.0.1. Set `answer` to script it; every request is
    recorded in `requests` (the body is read before `answer` runs unless
    `read_body_first` is False). `session_id`, when set, is returned in `Mcp-Session-Id`
    on every answer that does not set one itself. `gone` is set when a handler was cut
    off because its client (oauthd) went away."""

    def __init__(self, answer: Answer | None = None, *, port: int | None = None) -> None:
        self.requests: list[Seen] = []
        self.answer: Answer = answer or echo
        self.read_body_first = True
        self.session_id: str | None = None
        self.gone = asyncio.Event()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/mcp", self._handle)
        self.server = TestServer(app, host="127.0.0.1", port=port or free_port())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/mcp"

    async def start(self) -> None:
        await self.server.start_server()

    async def close(self) -> None:
        await self.server.close()

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def of_method(self, method: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == method]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.raw_path, request.headers)
        self.requests.append(seen)
        try:
            if self.read_body_first and request.body_exists:
                seen.body = await request.read()
            elif not request.body_exists:
                seen.body = b""
            response = await self.answer(request, seen)
        except (asyncio.CancelledError, ConnectionError):
            self.gone.set()
            raise
        if self.session_id and "Mcp-Session-Id" not in response.headers and not response.prepared:
            response.headers["Mcp-Session-Id"] = self.session_id
        return response


async def empty_result(request: web.Request, seen: Seen) -> web.StreamResponse:
    """A JSON-RPC result `{}` for every request."""
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})


@dataclass
class SessionsAnswer:
    """An upstream with MCP sessions: a request without `Mcp-Session-Id` opens one (handed
    out in the answer), a DELETE closes it; both recorded."""

    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    async def __call__(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        if request.method == "DELETE":
            self.closed.append(seen.session_id or "")
            return web.Response(status=204)
        body = await request.json()
        headers = {}
        if seen.session_id is None:
            headers["Mcp-Session-Id"] = f"upstream-session-{len(self.opened) + 1}"
            self.opened.append(headers["Mcp-Session-Id"])
        return web.json_response(
            {"jsonrpc": "2.0", "id": body["id"], "result": {}}, headers=headers
        )


# -- the real MCP server ---------------------------------------------------------------------


class DemoUpstream:
    """`python examples/demo_server.py --port P`: stateful (it hands out `Mcp-Session-Id`)
    unless `stateless`; `name`: what it reports at initialize (None: "oauthd-demo")."""

    def __init__(self, log_path: Path, *, stateless: bool = False, name: str | None = None) -> None:
        """`verify_identity` (set before `start`): oauthd's JWKS URL, for
        `--verify-identity` (every request without a valid signed identity refused), the
        JWKS cached for `jwks_lifespan` seconds."""
        self.verify_identity: str | None = None
        self.jwks_lifespan = 300.0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log_path = log_path
        self.stateless = stateless
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(DEMO), "--port", str(self.port)]
                + (["--stateless"] if self.stateless else [])
                + (["--name", self.name] if self.name else [])
                + self._verification(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        try:
            wait_listening(self.proc, self.port, self.logs)
        except RuntimeError:
            self.stop()
            raise

    def _verification(self) -> list[str]:
        if not self.verify_identity:
            return []
        return [
            "--verify-identity",
            self.verify_identity,
            "--jwks-lifespan",
            f"{self.jwks_lifespan}",
        ]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 5)
            self.proc = None


def text_of(result: types.CallToolResult) -> str:
    """The text of a successful MCP tool call (the official SDK's result)."""
    assert not result.is_error, result
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text
