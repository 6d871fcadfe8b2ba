"""A small upstream MCP server for trying oauthd (built with the official `mcp` SDK).

Run it from the repository root with the venv: `python examples/demo_server.py` listens on
http://127.0.0.1:9000/mcp (streamable HTTP), the upstream of `config.example.toml`.
`--stateless` serves without protocol sessions (no `Mcp-Session-Id`), as 2026-07-28
clients expect; 2026-07-28 requests are served in both modes. `--name` sets the name it
reports at initialize (to tell two of them apart behind one oauthd).

`--verify-identity JWKS_URL` (oauthd's `/.well-known/jwks.json`) makes it refuse (401) every
request without a valid signed identity (a resource's `signed_identity = true`), checked
with PyJWT's caching `PyJWKClient`: signature, `typ`, `iss`, `aud`, `exp`. `whoami` then
also returns the verified claims. See docs/signed-identity.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer

# The identity headers oauthd adds (its default [upstream] *_header names).
USER_HEADER = "X-Forwarded-User"
CLIENT_HEADER = "X-Forwarded-Client-Id"
SCOPES_HEADER = "X-Forwarded-Scopes"
PRINCIPAL_HEADER = "X-Forwarded-Principal"
IDENTITY_HEADER = "X-Oauthd-Identity"  # signed_identity_header's default
IDENTITY_TYPE = "oauthd-identity+jwt"
identity_header = IDENTITY_HEADER  # --identity-header

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
def whoami(ctx: Context) -> dict[str, Any]:
    """Who oauthd says is calling (from its forwarded headers; with --verify-identity,
    also the claims of its signed identity, verified before the request got here)."""
    headers = ctx.headers or {}
    answer: dict[str, Any] = {
        "user": headers.get(USER_HEADER, ""),
        "client_id": headers.get(CLIENT_HEADER, ""),
        "scopes": headers.get(SCOPES_HEADER, ""),
        "principal": headers.get(PRINCIPAL_HEADER, ""),
        # oauthd must never pass the client's access token upstream.
        "authorization_received": "authorization" in headers,
    }
    token = headers.get(identity_header.lower()) or headers.get(identity_header)
    if token:
        import jwt

        answer["identity"] = jwt.decode(token, options={"verify_signature": False})
        answer["identity_kid"] = jwt.get_unverified_header(token).get("kid")
    return answer


@mcp.tool()
def trace_context(ctx: Context) -> dict[str, str]:
    """The W3C trace context this request arrived with (its `traceparent` and `tracestate`
    headers; "" when absent): what oauthd forwarded of the caller's trace."""
    headers = ctx.headers or {}
    return {
        "traceparent": headers.get("traceparent", ""),
        "tracestate": headers.get("tracestate", ""),
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
    return "oauthd demo MCP server: tools echo, add, whoami, countdown, trace_context."


@mcp.prompt()
def greet(name: str) -> str:
    """Ask the model to greet someone."""
    return f"Say hello to {name}."


ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def verifying(
    app: ASGIApp, jwks_url: str, issuer: str, audience: str, header: str, lifespan: float
) -> ASGIApp:
    """`app` behind a check of oauthd's signed identity: 401 without a valid one. The
    JWKS is cached for `lifespan` seconds: at most oauthd's `keys.jwks_max_age`, which is
    what makes a rotation seamless (a next key is published that long before it signs)."""
    import jwt

    keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=lifespan)
    wanted = header.lower().encode()

    def check(token: str) -> dict[str, Any]:
        if jwt.get_unverified_header(token).get("typ") != IDENTITY_TYPE:
            raise jwt.InvalidTokenError("not an oauthd identity")
        key = keys.get_signing_key_from_jwt(token)
        return dict(
            jwt.decode(
                token,
                key,
                algorithms=["ES256", "RS256"],
                issuer=issuer,
                audience=audience,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        )

    async def guarded(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        found = [v for k, v in scope["headers"] if k == wanted]
        try:
            if len(found) != 1:
                raise jwt.InvalidTokenError(f"expected one {header} header")
            await anyio.to_thread.run_sync(check, found[0].decode())
        except (jwt.PyJWTError, ValueError) as exc:
            print(f"identity refused: {exc!r}", file=sys.stderr, flush=True)
            body = json.dumps({"error": "invalid_identity", "detail": str(exc)}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return guarded


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
    parser.add_argument(
        "--verify-identity",
        metavar="JWKS_URL",
        help="refuse requests without a valid signed identity, checked against this JWKS",
    )
    parser.add_argument("--identity-header", default=IDENTITY_HEADER, metavar="NAME")
    parser.add_argument(
        "--jwks-lifespan",
        type=float,
        default=300,
        metavar="SECONDS",
        help="how long the JWKS is cached: at most oauthd's keys.jwks_max_age (300)",
    )
    parser.add_argument(
        "--identity-issuer", metavar="URL", help="expected iss (default: the JWKS URL's origin)"
    )
    parser.add_argument(
        "--identity-audience", metavar="URL", help="expected aud (default: issuer + /mcp)"
    )
    args = parser.parse_args()
    # The SDK takes the name only at construction; the tools above are registered on the
    # low-level server, whose name is what initialize reports.
    mcp._lowlevel_server.name = args.name
    if not args.verify_identity:
        mcp.run(
            "streamable-http",
            host=args.host,
            port=args.port,
            streamable_http_path="/mcp",
            stateless_http=args.stateless,
        )
        return
    global identity_header
    identity_header = args.identity_header
    issuer = args.identity_issuer or args.verify_identity.split("/.well-known/")[0]
    audience = args.identity_audience or issuer + "/mcp"
    import uvicorn

    app = mcp.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=args.stateless, host=args.host
    )
    guarded = verifying(
        app, args.verify_identity, issuer, audience, args.identity_header, args.jwks_lifespan
    )
    uvicorn.run(guarded, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
