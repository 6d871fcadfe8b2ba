"""The JSON side of the authorization server: discovery, registration, token, revocation,
introspection and device authorization. Each handler parses, calls `AuthServer`, renders."""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from aiohttp import web

from oauthd.http.errors import NO_STORE, Handler, Routes, Wrapper
from oauthd.http.forms import read_form, read_json_object
from oauthd.http.keys import AUTH, CONFIG, METRICS, TRACING, client_address
from oauthd.metrics_requests import grant_label
from oauthd.oauth import JWKS_PATH, OAuthError, credentials_from, registration_response
from oauthd.store import Unavailable

T = TypeVar("T")
PR_METADATA = "/.well-known/oauth-protected-resource"
TOKEN_HEADERS = {**NO_STORE, "Content-Type": "application/json; charset=utf-8"}  # as json_response
CORS_PATHS = frozenset(
    {
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        PR_METADATA,
        JWKS_PATH,
        "/register",
        "/token",
        "/revoke",
        "/device_authorization",
    }
)


async def as_metadata(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[AUTH].authorization_server_metadata(), headers={"Cache-Control": "max-age=300"}
    )


async def pr_metadata(request: web.Request) -> web.Response:
    """RFC 9728 s3.1: a resource's document is at the well-known path followed by the
    resource's path; the bare well-known path answers for the default resource."""
    path = request.path[len(PR_METADATA) :]
    doc = request.app[AUTH].protected_resource_metadata(path)
    if doc is None:  # only mounted paths get here
        raise web.HTTPNotFound()
    return web.json_response(doc, headers={"Cache-Control": "max-age=300"})


async def jwks(request: web.Request) -> web.Response:
    """The public keys of oauthd's signing key ring (RFC 7517), cached by verifiers for
    `keys.jwks_max_age`: a rotation publishes the next key at least that long before it
    signs."""
    cache = f"public, max-age={int(request.app[CONFIG].keys.jwks_max_age)}"
    return web.json_response(request.app[AUTH].jwks(), headers={"Cache-Control": cache})


async def register(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    registration = await request.app[AUTH].register(body, client_address(request))
    return web.json_response(registration_response(registration), status=201, headers=NO_STORE)


async def token(request: web.Request) -> web.Response:
    """A token request by grant type: counted with its answer's status class, and with
    tracing on, in a span `token <grant type>` (a grant type oauthd does not know:
    `other`). The answer is built directly with orjson (no `json_response`)."""
    form = await read_form(request)
    credentials = credentials_from(form, request.headers.get("Authorization"))
    label = grant_label(form.get("grant_type"))
    call = request.app[AUTH].token(form, credentials, address=client_address(request))
    tracing = request.app.get(TRACING)
    if tracing is None:
        result = await _counted(request, label, call)
    else:
        with tracing.span(f"token {label}", {"oauthd.grant_type": label}):
            result = await _counted(request, label, call)
    return web.Response(body=orjson.dumps(result.body()), headers=TOKEN_HEADERS)


async def _counted(request: web.Request, label: str, call: Awaitable[T]) -> T:
    status = 500
    try:
        result = await call
        status = 200
        return result
    except OAuthError as exc:
        status = exc.status
        raise
    except Unavailable:
        status = 503
        raise
    finally:
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.token_request(label, status)


async def revoke(request: web.Request) -> web.Response:
    form = await read_form(request)
    credentials = credentials_from(form, request.headers.get("Authorization"))
    await request.app[AUTH].revoke(form, credentials, address=client_address(request))
    return web.Response(status=200, headers=NO_STORE)


async def introspect(request: web.Request) -> web.Response:
    form = await read_form(request)
    credentials = credentials_from(form, request.headers.get("Authorization"))
    return web.json_response(
        await request.app[AUTH].introspect(form, credentials, address=client_address(request)),
        headers=NO_STORE,
    )


async def device_authorization(request: web.Request) -> web.Response:
    form = await read_form(request)
    credentials = credentials_from(form, request.headers.get("Authorization"))
    body = await request.app[AUTH].device_authorization(
        form, credentials, address=client_address(request)
    )
    return web.json_response(body, headers=NO_STORE)


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)


def with_cors(handler: Handler) -> Handler:
    """Browser-based clients (the MCP Inspector) call discovery, /register and /token from
    another origin. No cookies are involved there, so any origin may."""

    @functools.wraps(handler)
    async def cors(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = "*"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, MCP-Protocol-Version"
            )
            response.headers["Access-Control-Max-Age"] = "86400"
        return response

    return cors


def add_routes(app: web.Application) -> None:
    routes = Routes(app)

    metadata_paths = (PR_METADATA, *(PR_METADATA + r.path for r in app[CONFIG].resources))
    cors_paths = CORS_PATHS | set(metadata_paths)

    def cors_for(path: str) -> Wrapper | None:
        return with_cors if path in cors_paths else None

    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        routes.get(path, as_metadata, cors_for(path))
    for path in metadata_paths:
        routes.get(path, pr_metadata, cors_for(path))
    routes.get(JWKS_PATH, jwks, cors_for(JWKS_PATH))
    for path, handler in (
        ("/register", register),
        ("/token", token),
        ("/revoke", revoke),
        ("/introspect", introspect),
        ("/device_authorization", device_authorization),
    ):
        routes.post(path, handler, cors_for(path))
    for path in cors_paths:
        routes.add("OPTIONS", path, preflight, with_cors)
