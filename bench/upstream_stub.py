"""A minimal MCP upstream for the proxy benchmark: POST /mcp reads the request body and
answers one small, fixed JSON-RPC result (the same bytes for every request and every
proxy in front of it). With `--sessions`, an `initialize` request is also answered with a
fresh `Mcp-Session-Id` header, as a stateful MCP server does. POST /v1/traces takes OTLP
spans and drops them (a collector for the runs with tracing on).

    .venv/bin/python bench/upstream_stub.py --port 9100 [--sessions]
"""

from __future__ import annotations

import argparse
import uuid

from aiohttp import web

BODY = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"pong"}]}}'


async def mcp(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


async def mcp_with_sessions(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {"Mcp-Session-Id": uuid.uuid4().hex} if b'"initialize"' in body else None
    return web.Response(body=BODY, content_type="application/json", headers=headers)


async def traces(request: web.Request) -> web.Response:
    """An OTLP/HTTP collector that keeps nothing (oauthd's `--tracing` runs export here)."""
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", action="store_true", help="session ids on initialize")
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/mcp", mcp_with_sessions if args.sessions else mcp)
    app.router.add_post("/v1/traces", traces)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
