"""The authorization-code flow (OAuth 2.1 s4.1 with PKCE S256, RFC 8707, RFC 9207).

`/authorize` creates a `PendingAuthorization` bound to the browser (a cookie secret whose
digest the record keeps); login and consent then act on it; approval issues a single-use
code. Errors about the client or its redirect URI are pages; the others are redirected to
the validated redirect URI with `state` and `iss`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from oauthd import crypto
from oauthd.audit import Audit, AuditEvent
from oauthd.clock import Clock
from oauthd.config import Config, ResourceConfig
from oauthd.model import AuthCode, Client, Consent, Grant, PendingAuthorization, consent_key
from oauthd.oauth import redirects
from oauthd.oauth.clients import ClientRegistry
from oauthd.oauth.errors import (
    OAuthError,
    RedirectTarget,
    page_error,
    redirect_error,
)
from oauthd.oauth.resources import Targets, UnknownTarget, requested_scopes
from oauthd.scopes import FLAT, ScopeHierarchy
from oauthd.store import Conflict, Store, Unavailable

MAX_STATE = 2000
# The client_id of a pending sign-in that leads back to one of our pages (no client_id is
# empty: registration and metadata documents never make one).
PAGE_SIGN_IN = ""


@dataclass(slots=True, frozen=True)
class Flow:
    """A pending authorization with its client, as the pages need them."""

    pending: PendingAuthorization
    client: Client

    @property
    def returns_to(self) -> str | None:
        """For a sign-in at the identity provider that leads back to one of our own pages
        (`oauthd.oauth.page_signin`: no client, no code): that page's path."""
        return self.pending.redirect_uri if self.pending.client_id == PAGE_SIGN_IN else None


def add_query(uri: str, params: Mapping[str, str | None]) -> str:
    """`uri` with `params` appended to its query (existing parameters kept)."""
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def page_client(issuer: str) -> Client:
    """The stand-in client of a sign-in leading back to one of our pages."""
    return Client(
        client_id=PAGE_SIGN_IN,
        client_name=issuer,
        redirect_uris=(),
        grant_types=(),
        response_types=(),
        token_endpoint_auth_method="none",
        application_type="web",
        scope="",
        secret_hash=None,
        source="page",
        created_at=0.0,
    )


class Authorizer:
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        clients: ClientRegistry,
        sealer: crypto.Sealer | None = None,
        scopes: ScopeHierarchy = FLAT,
    ) -> None:
        self._hierarchy = scopes
        self._sealer = sealer
        self._config = config
        self._store = store
        self._clock = clock
        self._clients = clients
        self.issuer = config.server.issuer
        self.targets = Targets(config)

    # -- /authorize ------------------------------------------------------------------------

    async def begin(self, params: Mapping[str, str], browser_secret: str) -> PendingAuthorization:
        client = await self._client_for_page(params.get("client_id", ""))
        redirect_uri = self._redirect_uri(client, params.get("redirect_uri"))
        state = params.get("state")
        target = RedirectTarget(redirect_uri, state)
        if state is not None and len(state) > MAX_STATE:
            raise page_error("invalid_request", "the state parameter is too long")
        self._check_response_type(params, client, target)
        challenge = self._code_challenge(params, target)
        resource = self._resource(params.get("resource"), target)
        scopes = self._scopes(params.get("scope"), client, resource, target)
        now = self._clock.now()
        pending = PendingAuthorization(
            id=crypto.new_key(),
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            resource=self.targets.identifier(resource),
            state=state,
            code_challenge=challenge,
            user=None,
            browser_hash=crypto.hash_secret(browser_secret),
            device_key=None,
            upstream=None,
            created_at=now,
            expires_at=now + self._config.tokens.pending_ttl,
            redirect_uri_given="redirect_uri" in params,
        )
        await self._store.pending.add(pending)
        return pending

    async def _client_for_page(self, client_id: str) -> Client:
        try:
            client = await self._clients.find(client_id)
        except OAuthError as exc:
            raise page_error("invalid_client", exc.description) from None
        if client is None:
            raise page_error(
                "invalid_client",
                "This application is not registered here (unknown client_id). "
                "Ask it to register again.",
            )
        return client

    def _redirect_uri(self, client: Client, requested: str | None) -> str:
        if requested is None:
            if len(client.redirect_uris) == 1 and not redirects.is_loopback_redirect(
                client.redirect_uris[0]
            ):
                return client.redirect_uris[0]
            raise page_error("invalid_request", "redirect_uri is required for this client")
        if not redirects.redirect_matches(client.redirect_uris, requested):
            raise page_error(
                "invalid_request",
                "The redirect_uri does not match any URI registered for this application.",
            )
        return requested

    def _check_response_type(
        self, params: Mapping[str, str], client: Client, target: RedirectTarget
    ) -> None:
        if params.get("response_type") != "code":
            raise self._redirected(
                "unsupported_response_type", 'response_type must be "code"', target
            )
        if "authorization_code" not in client.grant_types:
            raise self._redirected(
                "unauthorized_client",
                "this client may not use the authorization code grant",
                target,
            )

    def _code_challenge(self, params: Mapping[str, str], target: RedirectTarget) -> str:
        challenge = params.get("code_challenge")
        if not challenge:
            raise self._redirected("invalid_request", "PKCE code_challenge is required", target)
        if params.get("code_challenge_method") != "S256":
            raise self._redirected("invalid_request", "code_challenge_method must be S256", target)
        if len(challenge) != 43 or not crypto.is_pkce_value(challenge):
            raise self._redirected("invalid_request", "malformed code_challenge", target)
        return challenge

    def _scopes(
        self, scope: str | None, client: Client, resource: ResourceConfig, target: RedirectTarget
    ) -> tuple[str, ...]:
        try:
            return requested_scopes(client, resource, scope)
        except ValueError as exc:
            raise self._redirected("invalid_scope", str(exc), target) from None

    def _resource(self, resource: str | None, target: RedirectTarget) -> ResourceConfig:
        try:
            return self.targets.named(resource)
        except UnknownTarget as exc:
            raise self._redirected("invalid_target", str(exc), target) from None

    def _redirected(self, error: str, description: str, target: RedirectTarget) -> OAuthError:
        return redirect_error(error, description, target)

    # -- the pages' steps ------------------------------------------------------------------

    async def flow(
        self, pending_id: str, browser_secret: str | None, *, pages: bool = False
    ) -> Flow:
        """The pending flow, if this browser started it; a page error otherwise. A sign-in
        leading back to one of our pages is found only with `pages` (the provider's
        callback): the login and consent pages never see one."""
        pending = await self._store.pending.get(pending_id) if pending_id else None
        if pending is None:
            raise page_error(
                "invalid_request",
                "This sign-in request has expired or was already used. Start again from the "
                "application.",
            )
        if browser_secret is None or not crypto.secret_matches(
            browser_secret, pending.browser_hash
        ):
            raise page_error(
                "invalid_request",
                "This sign-in request belongs to another browser window. Start again from the "
                "application.",
                403,
            )
        if pending.client_id == PAGE_SIGN_IN and pages:
            return Flow(pending, page_client(self.issuer))
        client = await self._clients.find(pending.client_id)
        if client is None:
            raise page_error("invalid_client", "This application is no longer registered.")
        return Flow(pending, client)

    async def logged_in(self, flow: Flow, user: str, groups: tuple[str, ...] = ()) -> Flow:
        def set_user(p: PendingAuthorization) -> PendingAuthorization:
            return dataclasses.replace(p, user=user, groups=groups)

        pending = await self._store.pending.update(flow.pending.id, set_user)
        if pending is None:
            raise page_error("invalid_request", "This sign-in request has expired.")
        return Flow(pending, flow.client)

    def resource_path(self, pending: PendingAuthorization) -> str:
        """The path of the resource a flow asks for (what its consent names)."""
        return self.targets.path_of(pending.resource)

    async def consented(self, flow: Flow) -> tuple[str, ...]:
        """The scopes the flow's user already allowed its client at its resource (none
        before sign-in)."""
        user = flow.pending.user
        if user is None:
            return ()
        key = consent_key(user, flow.client.client_id, self.resource_path(flow.pending))
        consent = await self._store.consents.get(key)
        return consent.scopes if consent is not None else ()

    async def has_consent(self, flow: Flow) -> bool:
        """True if the user already allowed this client these scopes at this resource.
        Never for a device approval: its user code may have been sent by someone else
        (RFC 8628 s5.4), so the page that shows the code and asks is never skipped."""
        if flow.pending.user is None or flow.pending.device_key is not None:
            return False
        return self._hierarchy.covers(frozenset(await self.consented(flow)), flow.pending.scopes)

    def added_scopes(self, flow: Flow, consented: tuple[str, ...]) -> tuple[str, ...]:
        """What the flow asks beyond `consented` (a step-up asks only for these)."""
        return self._hierarchy.missing(frozenset(consented), flow.pending.scopes)

    async def remember_consent(self, flow: Flow, audit: Audit | None = None) -> None:
        user = flow.pending.user
        assert user is not None
        path = self.resource_path(flow.pending)
        await widen_consent(
            self._store,
            Consent(user, flow.client.client_id, flow.pending.scopes, 0.0, None, resource=path),
            self._clock.now(),
            self._config.tokens.consent_ttl,
            audit,
        )

    async def forget_consent(self, grant: Grant, reason: str) -> None:
        """The app of an ended grant has to ask again (for the grant's resource)."""
        path = self.targets.path_of(grant.resource)
        withdrawn = AuditEvent(
            "consent_withdrawn",
            user=grant.user,
            client_id=grant.client_id,
            resource=path,
            reason=reason,
        )
        key = consent_key(grant.user, grant.client_id, path)
        await self._store.consents.delete(key, audit=withdrawn)

    async def approve(self, flow: Flow) -> str:
        """Issue the code; return the redirect URL. The pending request is used up."""
        pending = await self._store.pending.take(flow.pending.id)
        if pending is None or pending.user is None:
            raise page_error("invalid_request", "This sign-in request has expired.")
        minted = crypto.mint_token()
        now = self._clock.now()
        await self._store.codes.add(
            AuthCode(
                code_key=minted.key,
                secret_hash=minted.secret_hash,
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                user=pending.user,
                scopes=pending.scopes,
                resource=pending.resource,
                code_challenge=pending.code_challenge,
                grant_id=None,
                upstream_tokens=self._reseal(pending.upstream, pending.id, minted.key),
                created_at=now,
                expires_at=now + self._config.tokens.code_ttl,
                redirect_uri_given=pending.redirect_uri_given,
                groups=pending.groups,
            )
        )
        return add_query(
            pending.redirect_uri, {"code": minted.token, "state": pending.state, "iss": self.issuer}
        )

    def _reseal(self, sealed: bytes | None, old_owner: str, new_owner: str) -> bytes | None:
        """Upstream tokens move from the pending request to the code, re-bound to it."""
        if sealed is None or self._sealer is None:
            return None
        try:
            opened = self._sealer.open(sealed, old_owner)
        except ValueError:  # sealed under an earlier login.encryption_key
            raise page_error(
                "invalid_request", "This sign-in can no longer be completed. Start again."
            ) from None
        return self._sealer.seal(opened, new_owner)

    async def deny(self, flow: Flow) -> str:
        pending = await self._store.pending.take(flow.pending.id) or flow.pending
        return self.error_redirect(
            OAuthError("access_denied", "the user denied access"),
            RedirectTarget(pending.redirect_uri, pending.state),
        )

    def error_redirect(self, error: OAuthError, target: RedirectTarget) -> str:
        return add_query(
            target.redirect_uri,
            {
                "error": error.error,
                "error_description": error.description,
                "state": target.state,
                "iss": self.issuer,
            },
        )


async def widen_consent(
    store: Store, asked: Consent, now: float, ttl: float, audit: Audit | None = None
) -> None:
    """The remembered consent of `asked`'s user, client and resource gains `asked.scopes`
    and lives `ttl` from `now`: one atomic update (a consent and an upgrade at once both
    count), or a new record when there is none."""

    def widened(current: Consent) -> Consent:  # pure: a shared backend may run it again
        scopes = tuple(dict.fromkeys((*current.scopes, *asked.scopes)))
        return dataclasses.replace(current, scopes=scopes, created_at=now, expires_at=now + ttl)

    fresh = dataclasses.replace(asked, created_at=now, expires_at=now + ttl)
    for _ in range(3):  # an add that lost to a concurrent one updates that one
        if await store.consents.update(asked.key, widened, audit=audit) is not None:
            return
        try:
            await store.consents.add(fresh, audit=audit)
            return
        except Conflict:
            continue
    raise Unavailable("the remembered consent changed under every try", retry_after=1.0)
