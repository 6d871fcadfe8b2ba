"""The identity headers: who is calling, as the upstream MCP server learns it.

One builder (`stamp`) serves both kinds of request oauthd sends upstream: a relayed client
request and the DELETE that closes an ended grant's MCP session. A client can never set
these headers itself: `upstream_request_headers` drops them from what it sent. With
`signed_identity`, `stamp` adds the grant's signed identity JWT (`Authority.
identity_assertion`: reused while fresh, so that most requests sign nothing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDict

from oauthd.config import Config, UpstreamConfig
from oauthd.model import Grant
from oauthd.peers import client_address
from oauthd.proxy.headers import upstream_request_headers
from oauthd.proxy.request_keys import ACCESS_REQUEST_ID
from oauthd.proxy.sessions import SESSION_HEADER

IdpTokenSource = Callable[[Grant], Awaitable[str | None]]


class AssertionSource(Protocol):
    def __call__(self, grant: Grant, *, ended: bool = False) -> str: ...


class Identity:
    def __init__(
        self,
        config: Config,
        idp_token: IdpTokenSource,
        authorization: str | None = None,
        upstream: UpstreamConfig | None = None,
        assertion: AssertionSource | None = None,
    ) -> None:
        """`upstream`: the resource's upstream whose headers these are (by default the
        first resource's: `[upstream]` in the shorthand); `assertion`: the signed identity
        of a grant, sent when the upstream has `signed_identity`."""
        up = upstream or config.resources[0].upstream
        self._user_header = up.user_header
        self._client_header = up.client_header
        self._scopes_header = up.scopes_header
        self._idp_token_header = up.idp_token_header
        self._principal_header = up.principal_header
        self._signed_header = up.signed_identity_header
        self._assertion = assertion if up.signed_identity else None
        self._names = (
            up.user_header,
            up.client_header,
            up.scopes_header,
            up.idp_token_header,
            up.principal_header,
            up.signed_identity_header,
        )
        self.forwards_idp_token = up.forward_idp_token
        self._idp_token = idp_token
        self._forwarded_proto, _, self._forwarded_host = config.server.issuer.partition("://")
        self._authorization = authorization  # `upstream.authorization`, read at start
        self._trusted_proxies = config.server.trusted_proxies

    def stamp(
        self, headers: MutableMapping[str, str], grant: Grant, *, ended: bool = False
    ) -> None:
        """Set the user, client, scopes and principal of `grant`, its signed identity (with
        `signed_identity`), and the static credential if any (an upstream that needs it
        refuses a request without it). `ended`: the grant has ended."""
        headers[self._user_header] = grant.user
        headers[self._client_header] = grant.client_id
        headers[self._scopes_header] = " ".join(grant.token_scopes)
        headers[self._principal_header] = grant.principal
        if self._assertion is not None:
            headers[self._signed_header] = self._assertion(grant, ended=ended)
        if self._authorization:
            headers["Authorization"] = self._authorization

    def request_headers(self, request: web.Request, grant: Grant) -> CIMultiDict[str]:
        """What goes upstream with a relayed request: the client's own headers that may
        cross (headers.py), where it came from (X-Forwarded-*), who it is, and the request
        id of oauthd's log lines and audit records (`X-Request-Id`: the upstream's logs
        and a call's `call_decided` record name the same request)."""
        headers = upstream_request_headers(request.headers, self._names)
        request_id = request.get(ACCESS_REQUEST_ID)
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        headers["X-Forwarded-For"] = client_address(
            request.remote, request.headers, self._trusted_proxies
        )
        headers["X-Forwarded-Proto"] = self._forwarded_proto
        headers["X-Forwarded-Host"] = self._forwarded_host
        self.stamp(headers, grant)
        return headers

    async def add_idp_token(self, headers: MutableMapping[str, str], grant: Grant) -> None:
        """With `forward_idp_token`: the user's identity-provider access token, if any."""
        token = await self._idp_token(grant)
        if token:
            headers[self._idp_token_header] = token

    def session_close_headers(self, grant: Grant, session_id: str) -> dict[str, str]:
        """The headers of the DELETE that closes `session_id` of an ended grant."""
        headers = {SESSION_HEADER: session_id}
        self.stamp(headers, grant, ended=True)
        return headers
