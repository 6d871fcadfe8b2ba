"""The floor of bench/token_endpoint.py: a minimal aiohttp refresh endpoint. Refresh tokens are
`<grant id>.<secret>`; only the SHA-256 of each secret is kept (in a dict), compared in
constant time; every refresh rotates both tokens and answers with orjson. No client
authentication beyond the client id, no audit, no disk. POST /seed makes a grant (set-up,
not measured):

    .venv/bin/python bench/minimal_refresh.py --port 9201
"""

import argparse
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson
from aiohttp import web

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(slots=True)
class Grant:
    client_id: str
    refresh_hash: bytes
    access_hash: bytes


GRANTS: dict[str, Grant] = {}


def _mint(grant_id: str) -> tuple[str, bytes]:
    secret = secrets.token_urlsafe(32)
    return f"{grant_id}.{secret}", hashlib.sha256(secret.encode()).digest()


def _answer(grant_id: str, grant: Grant) -> web.Response:
    access, grant.access_hash = _mint(grant_id)
    refresh, grant.refresh_hash = _mint(grant_id)
    body = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": refresh,
        "scope": "mcp",
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json", headers=NO_STORE)


def _refused(error: str) -> web.Response:
    body = orjson.dumps({"error": error})
    return web.Response(status=400, body=body, content_type="application/json", headers=NO_STORE)


async def token(request: web.Request) -> web.Response:
    form = await request.post()
    if form.get("grant_type") != "refresh_token":
        return _refused("unsupported_grant_type")
    grant_id, _, secret = str(form.get("refresh_token", "")).partition(".")
    grant = GRANTS.get(grant_id)
    if (
        grant is None
        or grant.client_id != form.get("client_id")
        or not hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), grant.refresh_hash)
    ):
        return _refused("invalid_grant")
    return _answer(grant_id, grant)


async def seed(request: web.Request) -> web.Response:
    grant_id = secrets.token_urlsafe(16)
    grant = GRANTS[grant_id] = Grant("bench-client", b"", b"")
    return _answer(grant_id, grant)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_post("/seed", seed)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
