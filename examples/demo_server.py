"""A small upstream MCP server for trying oauthd (built with the official `mcp` SDK).

Run it from the repository root with the venv: `python examples/demo_server.py` listens on
http://127.0.0.1:9000/mcp (streamable HTTP), the upstream of `config.example.toml`.
`--stateless` serves without protocol sessions (no `Mcp-Session-Id`), as 2026-07-28
clients expect; 2026-07-28 requests are served in both modes. `--name` sets the name it
reports at initialize (to tell two of them apart behind one oauthd).
"""

from __future__ import annotations

import argparse

import anyio
from mcp.server.mcpserver import Context, MCPServer

# The identity headers oauthd adds (its default [upstream] *_header names).
USER_HEADER = "X-Forwarded-User"
CLIENT_HEADER = "X-Forwarded-Client-Id"
SCOPES_HEADER = "X-Forwarded-Scopes"

DEFAULT_NAME = "oauthd-demo"
mcp = MCPServer(DEFAULT_NAME, instructions="Demo tools behind oauthd.")


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def whoami(ctx: Context) -> dict[str, str | bool]:
    """Who oauthd says is calling (from its forwarded headers)."""
    headers = ctx.headers or {}
    return {
        "user": headers.get(USER_HEADER, ""),
        "client_id": headers.get(CLIENT_HEADER, ""),
        "scopes": headers.get(SCOPES_HEADER, ""),
        # oauthd must never pass the client's access token upstream.
        "authorization_received": "authorization" in headers,
    }


@mcp.tool()
async def countdown(n: int, delay: float, ctx: Context) -> str:
    """Count down from n, one progress notification every `delay` seconds."""
    for step in range(1, n + 1):
        await anyio.sleep(delay)
        await ctx.report_progress(step, n, f"{n - step} to go")
    return "done"


@mcp.resource("demo://about")
def about() -> str:
    """What this server is."""
    return "oauthd demo MCP server: tools echo, add, whoami, countdown."


@mcp.prompt()
def greet(name: str) -> str:
    """Ask the model to greet someone."""
    return f"Say hello to {name}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--name", default=DEFAULT_NAME, help="the server name at initialize")
    parser.add_argument(
        "--stateless",
        action="store_true",
        help="no protocol sessions (no Mcp-Session-Id, a fresh transport per request)",
    )
    args = parser.parse_args()
    # The SDK takes the name only at construction; the tools above are registered on the
    # low-level server, whose name is what initialize reports.
    mcp._lowlevel_server.name = args.name
    mcp.run(
        "streamable-http",
        host=args.host,
        port=args.port,
        streamable_http_path="/mcp",
        stateless_http=args.stateless,
    )


if __name__ == "__main__":
    main()
