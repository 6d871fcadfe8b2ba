"""A minimal MCP upstream for the proxy benchmark: POST /mcp reads the request body and
answers one small, fixed JSON-RPC result (the same bytes for every request and every
proxy in front of it).

    .venv/bin/python bench/upstream_stub.py --port 9100
"""

from __future__ import annotations

import argparse

from aiohttp import web

BODY = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"pong"}]}}'


async def mcp(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/mcp", mcp)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
