"""The one place where errors become HTTP responses.

Store trouble (`Unavailable`) is a 503 with Retry-After; anything unexpected is a 500
`server_error` naming the request id, with the traceback only in the log."""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from oauthd.log import request_id_var
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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
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
