"""A small issuer of signed JWTs on 127.0.0.1 over plain HTTP: its JWKS at `/jwks` and its
OpenID configuration at `/.well-known/openid-configuration`, both changeable while it runs
(`document`, `headers`, `status`, the signers), every request counted by path.

As `running_key_server()` it is the key endpoint of the JWKS fetcher's tests; as the
enterprise IdP of the interop tests it also issues ID-JAGs (`issue_id_jag`) and workload
tokens (`issue_workload_token`) signed with its current key."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from oauthd.oauth.assertions import ID_JAG_TYPE
from tests.support.assertions import Signer


class KeyServer:
    def __init__(self) -> None:
        self.signers: list[Signer] = [Signer("idp-1")]
        self.hits: Counter[str] = Counter()
        self.headers: dict[str, str] = {"Cache-Control": "max-age=300"}
        self.status = 200
        self.body: bytes | None = None  # instead of the JWKS
        self.discovery_issuer: str | None = None  # None: the server's own
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}/jwks"

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits["/jwks"] += 1
        body = (
            self.body if self.body is not None else _json(self.signers[0].jwks(*self.signers[1:]))
        )
        return web.Response(
            body=body, status=self.status, headers=self.headers, content_type="application/json"
        )

    async def _discovery(self, request: web.Request) -> web.Response:
        self.hits["/.well-known/openid-configuration"] += 1
        doc = {"issuer": self.discovery_issuer or self.issuer, "jwks_uri": self.jwks_uri}
        return web.Response(body=_json(doc), headers=self.headers, content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- as an issuer ---------------------------------------------------------------------

    def issue_id_jag(
        self, audience: str, resource: str, client_id: str, subject: str, **claims: Any
    ) -> str:
        """An ID-JAG (SEP-990) for `subject`, as the IdP's token exchange would issue it."""
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "client_id": client_id,
            "resource": resource,
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return self.signers[0].sign(body, typ=ID_JAG_TYPE)

    def issue_workload_token(self, audience: str, subject: str, *, issuer: str = "") -> str:
        """A Kubernetes-style service-account token for `subject` (`issuer`: the `iss`,
        by default this server's)."""
        now = int(time.time())
        body = {
            "iss": issuer or self.issuer,
            "sub": subject,
            "aud": [audience],
            "iat": now,
            "exp": now + 600,
        }
        return self.signers[0].sign(body)


def _json(doc: object) -> bytes:
    return orjson.dumps(doc)


@asynccontextmanager
async def running_key_server() -> AsyncIterator[KeyServer]:
    server = KeyServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()
