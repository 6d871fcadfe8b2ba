"""The JSON side of the authorization server: discovery, registration, token, revocation,
introspection and device authorization. Each handler parses, calls `AuthServer`, renders."""

from __future__ import annotations

from aiohttp import web

from oauthd.http.errors import NO_STORE, Handler
from oauthd.http.forms import read_form, read_json_object
from oauthd.http.keys import AUTH
from oauthd.oauth.clients import credentials_from, registration_response

CORS_PATHS = frozenset(
    {
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/register",
        "/token",
        "/revoke",
        "/device_authorization",
    }
)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def as_metadata(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[AUTH].authorization_server_metadata(), headers={"Cache-Control": "max-age=300"}
    )


async def pr_metadata(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[AUTH].protected_resource_metadata(), headers={"Cache-Control": "max-age=300"}
    )


async def register(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    registration = await request.app[AUTH].register(body, client_address(request))
    return web.json_response(registration_response(registration), status=201, headers=NO_STORE)


async def token(request: web.Request) -> web.Response:
    form = await read_form(request)
    credentials = credentials_from(form, request.headers.get("Authorization"))
    result = await request.app[AUTH].token(form, credentials)
    return web.json_response(result.body(), headers=NO_STORE)


async def revoke(request: web.Request) -> web.Response:
    form = await read_form(request)
    credentials = credentials_from(form, request.headers.get("Authorization"))
    await request.app[AUTH].revoke(form, credentials)
    return web.Response(status=200, headers=NO_STORE)


async def introspect(request: web.Request) -> web.Response:
    form = await read_form(request)
    credentials = credentials_from(form, request.headers.get("Authorization"))
    return web.json_response(
        await request.app[AUTH].introspect(form, credentials), headers=NO_STORE
    )


async def device_authorization(request: web.Request) -> web.Response:
    form = await read_form(request)
    credentials = credentials_from(form, request.headers.get("Authorization"))
    body = await request.app[AUTH].device_authorization(form, credentials)
    return web.json_response(body, headers=NO_STORE)


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Browser-based clients (the MCP Inspector) call discovery, /register and /token from
    another origin. No cookies are involved there, so any origin may."""
    response = await handler(request)
    if request.path in CORS_PATHS:
        response.headers["Access-Control-Allow-Origin"] = "*"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, MCP-Protocol-Version"
            )
            response.headers["Access-Control-Max-Age"] = "86400"
    return response


def add_routes(app: web.Application) -> None:
    router = app.router
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        router.add_get(path, as_metadata)
    for path in (
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ):
        router.add_get(path, pr_metadata)
    router.add_post("/register", register)
    router.add_post("/token", token)
    router.add_post("/revoke", revoke)
    router.add_post("/introspect", introspect)
    router.add_post("/device_authorization", device_authorization)
    for path in CORS_PATHS:
        router.add_route("OPTIONS", path, preflight)
