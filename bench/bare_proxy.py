"""The baseline for bench/proxy.py: a bare aiohttp reverse-proxy hop. One shared
ClientSession; the request body streams up, the response body streams back. No auth, no
header filtering beyond what HTTP needs.

    .venv/bin/python bench/bare_proxy.py --port 9101 --upstream http://127.0.0.1:9100/mcp
"""

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
SESSION, UPSTREAM = web.AppKey("session", aiohttp.ClientSession), web.AppKey("upstream", str)


async def handle(request: web.Request) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    data = request.content.iter_chunked(65536) if request.body_exists else None
    async with request.app[SESSION].request(
        request.method, request.app[UPSTREAM], headers=headers, data=data, allow_redirects=False
    ) as upstream:
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP}
        response = web.StreamResponse(status=upstream.status, headers=out)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(auto_decompress=False, connector=connector) as session:
        app[SESSION] = session
        yield


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/mcp", handle)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
