"""The one place where errors become HTTP responses.

An `OAuthError` becomes JSON, a redirect to the client (with `state` and `iss`) or an HTML
page, as it says. Store trouble (`Unavailable`) is a 503 with Retry-After; anything
unexpected is a 500 `server_error` naming the request id, with the traceback only in the
log."""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from oauthd.http import pages
from oauthd.http.keys import CONFIG
from oauthd.log import request_id_var
from oauthd.oauth.authorize import add_query
from oauthd.oauth.errors import Delivery, OAuthError
from oauthd.store import Unavailable

log = logging.getLogger("oauthd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": error, "error_description": description}
    return web.json_response(body, status=status, headers={**NO_STORE, **(headers or {})})


def unavailable(exc: Unavailable) -> web.Response:
    retry = str(max(1, math.ceil(exc.retry_after)))
    return json_error(
        503,
        "temporarily_unavailable",
        "the service cannot save state right now; retry later",
        {"Retry-After": retry},
    )


PAGE_TITLES = {
    "invalid_client": "This application is not known here",
    "too_many_requests": "Too many attempts",
    "access_denied": "Access denied",
    "login_required": "Please sign in",
}


def oauth_error(request: web.Request, error: OAuthError) -> web.Response:
    if error.delivery is Delivery.REDIRECT and error.redirect is not None:
        target = error.redirect
        location = add_query(
            target.redirect_uri,
            {
                "error": error.error,
                "error_description": error.description,
                "state": target.state,
                "iss": request.app[CONFIG].server.issuer,
            },
        )
        status = 302 if request.method == "GET" else 303
        return web.Response(status=status, headers={"Location": location, **NO_STORE})
    if error.delivery is Delivery.PAGE:
        title = PAGE_TITLES.get(error.error, "This sign-in link is not valid")
        page = pages.render_error(pages.ErrorView(title, error.description, error.status))
        return web.Response(
            text=page, status=error.status, content_type="text/html", headers=pages.PAGE_HEADERS
        )
    return json_error(error.status, error.error, error.description, error.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except OAuthError as exc:
        log.info(
            "request refused",
            extra={
                "event": "oauth.error",
                "error": exc.error,
                "description": exc.description,
                "path": request.path,
            },
        )
        response = oauth_error(request, exc)
    except Unavailable as exc:
        log.warning(
            "request refused: store unavailable",
            extra={"event": "http.unavailable", "reason": exc.reason},
        )
        response = unavailable(exc)
    except Exception:
        log.exception("unhandled error", extra={"event": "http.error", "path": request.path})
        response = json_error(500, "server_error", f"internal error (request id {request_id})")
    finally:
        request_id_var.reset(token)
    response.headers.setdefault("X-Request-Id", request_id)
    return response
