"""`AuthServer`: the protocol's door. HTTP code parses a request into plain values, calls
one method here, and renders the result or the `OAuthError`. The rooms outside the
protocol (`http/`, `proxy/`, `admin/`) use only its public methods; its attributes are
the protocol's own parts (tests reach them, other rooms do not: `tests/test_layers.py`)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Coroutine, Mapping
from typing import Any, TypeVar

from oauthd import crypto
from oauthd.audit import reasons
from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.keyring import Keyring
from oauthd.metrics import Metrics
from oauthd.model import PRINCIPAL_SERVICE, AccountSession, DeviceFlow, Grant, PendingAuthorization
from oauthd.oauth import metadata
from oauthd.oauth.access_only import AccessOnlyGrants
from oauthd.oauth.access_tokens import minters
from oauthd.oauth.account import Accounts, ConnectedApp
from oauthd.oauth.authorize import Authorizer, Flow, page_client
from oauthd.oauth.bearer_refusal import bearer_refusal
from oauthd.oauth.client_auth import ClientCredentials, ClientKeySource, check_introspection_client
from oauthd.oauth.client_credentials import ClientCredentialsGrant
from oauthd.oauth.clients import ClientRegistry, DocumentFetcher, Registration
from oauthd.oauth.consent import ConsentRequest, ScopeDescriptions, finish_consent
from oauthd.oauth.device import DeviceFlows
from oauthd.oauth.errors import OAuthError, invalid_request, page_error
from oauthd.oauth.identity_jwt import IdentityAssertions
from oauthd.oauth.jwt_bearer import JwtBearerGrant
from oauthd.oauth.known_browsers import KnownBrowsers
from oauthd.oauth.operator_clients import OperatorClients
from oauthd.oauth.page_signin import PageSignIns
from oauthd.oauth.ratelimit import TOTAL, Limiter, Limits, too_many
from oauthd.oauth.signin import SignIns
from oauthd.oauth.signing import KeyRing, key_ring
from oauthd.oauth.token_endpoint import TokenEndpoint
from oauthd.oauth.tokens import BearerCheck, GrantEndedListener, TokenResponse, Tokens
from oauthd.oauth.upgrade import Upgrades
from oauthd.oauth.upstream import IdentityProvider, UpstreamLogin, UpstreamTokens
from oauthd.store import Store
from oauthd.users import Users

GRANT_ENDED_GRACE = 5.0  # seconds the shutdown waits for grant-ended listeners
# The client address of a caller that has none (the protocol's own tests): its failed
# client authentications are limited together.
NO_ADDRESS = "unknown"

T = TypeVar("T")


def _close(call: Awaitable[Any]) -> None:
    """Close a coroutine that will not be awaited (no "never awaited" warning)."""
    if isinstance(call, Coroutine):
        call.close()


class AuthServer(metadata.Discovery):
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        users: Users,
        fetcher: DocumentFetcher | None = None,
        provider: IdentityProvider | None = None,
        *,
        keyring: Keyring,
        metrics: Metrics | None = None,
        device_key: bytes | None = None,
        browser_key: bytes | None = None,
        keys: KeyRing | None = None,
        jwks: ClientKeySource | None = None,
    ) -> None:
        """`keyring`: the resolved keys and secrets (`oauthd.keyring.read_keyring`); the
        introspection secret is read from it at each use, so a SIGHUP rotates it.
        `device_key`: the HMAC key of device user codes (`oauthd.keyring.device_code_key`);
        `browser_key`: the one of known-browser cookies (`oauthd.keyring.known_browser_key`);
        None: a key for this process only (also for `keys`, the signing key ring, which
        its owner loads: `KeyRing.running`). `jwks`: the JWKS fetcher (trusted issuers' and
        clients' `jwks_uri`s)."""
        self.config = config
        self._keyring = keyring
        sealer = keyring.sealer
        self.store, self.users, self.metrics = store, users, metrics or Metrics()
        self._clock = clock
        self.clients = ClientRegistry(config, store, clock, fetcher, self.metrics, jwks)
        # `oauthd clients add`: add_client(NewClient), ClientRefused saying why not
        self.add_client = OperatorClients(config, store, clock, jwks).add
        self.keys = keys or key_ring(config, store, crypto.Sealer(os.urandom(32)), clock)
        self.tokens = Tokens(config, store, clock, self.metrics, minters(config, self.keys))
        self.assertions = IdentityAssertions(self.keys, config.server.issuer, clock, self.tokens)
        self.authorizer = Authorizer(config, store, clock, self.clients, sealer, self.tokens.scopes)
        self.devices = DeviceFlows(config, store, clock, self.tokens, device_key or os.urandom(32))
        self.token_endpoint = self._token_endpoint(config, store, clock, sealer, jwks)
        self.upstream: UpstreamLogin | None = None
        self.upstream_tokens: UpstreamTokens | None = None  # the IdP's tokens of a grant
        if provider is not None and sealer is not None:
            self.upstream = UpstreamLogin(
                store, self.authorizer, provider, sealer, config.server.issuer, self.metrics
            )
            self.upstream_tokens = UpstreamTokens(store, provider, sealer, clock.now)
        self.limiter, self.limits = Limiter(store.counters, clock), Limits.from_config(config)
        ttl = config.login.known_browser_ttl
        browsers = KnownBrowsers(browser_key or os.urandom(32), clock, ttl)
        self.sign_ins = SignIns(self.limiter, self.limits, browsers, self.metrics, store)
        self._accounts = Accounts(store, self.tokens, clock)
        self.page_sign_ins = PageSignIns(config, store, clock, self._accounts)
        upgrades = Upgrades(config, store, clock, self.clients, self.tokens.scopes)
        # The /upgrade page: what approving adds; the approval (durable, `grant_upgraded`).
        self.upgrade_offer, self.upgrade_grant = upgrades.offer, upgrades.upgrade
        self._descriptions = ScopeDescriptions(config)
        # Scopes in words (`[oauth] scope_descriptions`), for the pages that name them.
        self.describe_scopes = self._descriptions.describe
        # The live grant of a bearer token, or None: the tokens' own method, unwrapped (the
        # proxy calls it on every request; a forwarding coroutine cost 0.5 % of its work)
        self.verify_bearer: BearerCheck = self.tokens.verify_bearer

    def _token_endpoint(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        sealer: crypto.Sealer | None,
        keys: ClientKeySource | None,
    ) -> TokenEndpoint:
        tokens = self.tokens
        self.access_only = AccessOnlyGrants(config, store, clock, tokens)
        machines = ClientCredentialsGrant(tokens.targets, tokens.scopes, self.access_only)
        self.jwt_bearer = JwtBearerGrant.build(
            config, store, clock, tokens, self.metrics, keys, self.is_user
        )
        return TokenEndpoint(
            store, self.clients, tokens, self.devices, sealer, machines, self.jwt_bearer
        )

    # -- while serving (SIGHUP) -----------------------------------------------------------

    def replace_users(self, users: Users) -> None:
        """Use this list of local users from the next sign-in on."""
        self.users = users

    def groups_of(self, grant: Grant) -> frozenset[str]:
        """The groups of a grant's user, for policy rules: a local user's configured
        `groups` (the list of the last SIGHUP); for a user of an identity provider, the
        groups its sign-in carried (`Grant.groups`, from `login.oidc.groups_claim`); a
        service principal (a client acting for itself) has none."""
        if grant.principal == PRINCIPAL_SERVICE:
            return frozenset()
        if self.config.login.provider != "local":
            return frozenset(grant.groups)
        return self.users.groups_of(grant.user)

    async def drain(self) -> None:
        """At shutdown, before the proxy closes: let the work started by ended grants
        (closing their MCP sessions upstream) finish, for at most GRANT_ENDED_GRACE."""
        await self.tokens.settle(GRANT_ENDED_GRACE)

    def reload_secrets(self, config: Config) -> list[str]:
        """Read the rotatable secrets again (`Keyring.reload`): the keys whose value
        changed; ConfigError naming the key, and no change, if one cannot be read."""
        return self._keyring.reload(config)

    # -- discovery (the documents: `metadata.Discovery`) and signed identity --------------

    def identity_assertion(self, grant: Grant, *, ended: bool = False) -> str:
        """The signed identity JWT of `grant` for its resource's upstream (no I/O: reused
        while fresh, `oauthd.oauth.assertions`); the proxy asks for it on every request."""
        return self.assertions.assertion(grant, ended=ended)

    # -- clients -------------------------------------------------------------------------

    async def register(self, body: Mapping[str, Any], address: str) -> Registration:
        wait = await self.limiter.admit(self.limits.registration, address)
        if wait is not None:
            raise too_many("too many registrations from this address; retry later", wait)
        return await self.clients.register(body)

    async def remove_idle_clients(self) -> int:
        """Housekeeping: remove the registrations idle past `oauth.idle_client_lifetime`
        that hold no live grant (`RegistryHygiene.remove_idle`); how many."""
        return await self.clients.hygiene.remove_idle()

    async def _client_authenticated(self, address: str, call: Awaitable[T]) -> T:
        """`call`'s result; its failed client authentication (`invalid_client`) counted
        per client address: once the limit is used up, this process refuses that address
        with 429 before anything is checked (`Limiter.known_over`: no I/O when all is
        well, so a working client's /token costs no counter)."""
        limit = self.limits.client_auth
        wait = self.limiter.known_over(limit, address)
        if wait is not None:
            _close(call)
            raise too_many("too many failed client authentications; retry later", wait)
        try:
            return await call
        except OAuthError as exc:
            if exc.error == "invalid_client":
                await self.limiter.count(limit, address)
            raise

    # -- tokens --------------------------------------------------------------------------

    async def token(
        self,
        form: Mapping[str, str],
        credentials: ClientCredentials | None,
        *,
        address: str = NO_ADDRESS,
    ) -> TokenResponse:
        """`address`: the client's, for the limit on failed client authentication."""
        return await self._client_authenticated(
            address, self.token_endpoint.handle(form, credentials)
        )

    async def revoke(
        self,
        form: Mapping[str, str],
        credentials: ClientCredentials | None,
        *,
        address: str = NO_ADDRESS,
    ) -> None:
        token = form.get("token")
        if not token:
            raise invalid_request("token is required")
        client = await self._client_authenticated(address, self.clients.authenticate(credentials))
        await self.tokens.revoke(client, token)

    async def introspect(
        self,
        form: Mapping[str, str],
        credentials: ClientCredentials | None,
        *,
        address: str = NO_ADDRESS,
    ) -> dict[str, Any]:
        wanted, secret = self.config.introspection.client_id, self._keyring.introspection_secret
        check = check_introspection_client(credentials, wanted, secret)
        await self._client_authenticated(address, check)
        token = form.get("token")
        if not token:
            raise invalid_request("token is required")
        return await self.tokens.introspect(token, self.config.server.issuer)

    async def bearer_refusal(self, token: str, resource: str) -> tuple[str, Grant | None]:
        """Why `verify_bearer` refused `token` at `resource`: a reason code, and the live
        grant it names if any."""
        return await bearer_refusal(self.store.grants, self._clock.now(), token, resource)

    def on_grant_ended(self, listener: GrantEndedListener) -> None:
        """Call `listener(grant)` (awaited) whenever a grant is revoked or ends by
        refresh-token reuse detection."""
        self.tokens.grant_ended.append(listener)

    async def revoke_grant(self, grant_id: str, *, by: str) -> Grant | None:
        """End a grant as `/revoke` does (counted, audited, listeners called) and forget
        its user's consent to its client for its resource, so that the app has to ask
        again; None if there is no such grant."""
        grant = await self.tokens.revoke_grant(grant_id, by=by)
        if grant is not None:
            await self.authorizer.forget_consent(grant, reasons.grant_ended_by(by))
        return grant

    async def upstream_access_token(self, grant: Grant) -> str | None:
        """The user's identity-provider access token (refreshed if expired), if any."""
        if self.upstream_tokens is None:
            return None
        return await self.upstream_tokens.access_token(grant)

    async def device_authorization(
        self,
        form: Mapping[str, str],
        credentials: ClientCredentials | None,
        *,
        address: str = NO_ADDRESS,
    ) -> dict[str, Any]:
        client = await self._client_authenticated(address, self.clients.authenticate(credentials))
        return await self.devices.start(client, form)

    # -- the browser's steps -------------------------------------------------------------

    async def check_login(
        self,
        username: str,
        password: str,
        address: str,
        client_id: str | None = None,
        *,
        browser_cookie: str | None = None,
    ) -> str:
        """The user, if the password is right and no sign-in limit it counts under is
        used up (`oauthd.oauth.signin`: a known browser's own, or the user's and the
        address's for unknown browsers); a page error otherwise. Counted and audited,
        with the client whose sign-in page it was, if any. `browser_cookie`: the
        browser's known-browser cookie, if it sent one."""
        return await self.sign_ins.check(
            self.users,
            username,
            password,
            address,
            client_id=client_id,
            browser_cookie=browser_cookie,
        )

    def remember_browser(self, user: str) -> str:
        """The known-browser cookie to give the browser that just signed in as `user`."""
        return self.sign_ins.browsers.issue(user)

    @property
    def known_browser_ttl(self) -> float:
        return self.sign_ins.browsers.ttl

    async def find_device_flow(self, typed: str, address: str) -> DeviceFlow | None:
        """The pending device flow for a typed user code; wrong guesses are limited per
        address and over every address together (a 429 page with Retry-After once
        either is used up). Each lookup is counted before it is made and taken back if
        the code was right, so concurrent guesses get no more lookups than the limit."""
        limits = self.limits
        wait = await self.limiter.admit(limits.device_address, address)
        if wait is None:
            wait = await self.limiter.admit(limits.device_total, TOTAL)
            if wait is not None:
                await self.limiter.take_back(limits.device_address, address)
        if wait is not None:
            raise too_many("Too many wrong codes. Wait a minute and try again.", wait, page=True)
        flow = await self.devices.find(typed)
        if flow is not None:  # a right code is no guess
            await self.limiter.take_back(limits.device_address, address)
            await self.limiter.take_back(limits.device_total, TOTAL)
        return flow

    async def begin_authorization(
        self, params: Mapping[str, str], browser_secret: str
    ) -> PendingAuthorization:
        """Check an /authorize request and keep it, bound to this browser."""
        return await self.authorizer.begin(params, browser_secret)

    async def flow(self, pending_id: str, browser_secret: str | None) -> Flow:
        """The pending authorization of this browser, with its client; a page error else."""
        return await self.authorizer.flow(pending_id, browser_secret)

    async def signed_in(self, flow: Flow, user: str) -> tuple[Flow, bool]:
        """The flow with its (local) user and the user's groups set, and whether that user
        already consented to all it asks (then `finish(..., remembered=True)` needs no
        page)."""
        flow = await self.authorizer.logged_in(flow, user, self.users.groups(user))
        return flow, await self.authorizer.has_consent(flow)

    async def consent_request(self, flow: Flow) -> ConsentRequest:
        """What the consent page asks for `flow`: its resource, and the scopes in words
        (on a step-up only those not allowed before)."""
        pending = flow.pending
        consented = await self.authorizer.consented(flow)
        return self._descriptions.request(
            self.authorizer.targets.name_of(pending.resource),
            self.authorizer.resource_path(pending),
            pending.scopes,
            consented,
            self.authorizer.added_scopes(flow, consented),
        )

    async def device_pending(
        self, flow: DeviceFlow, browser_secret: str, user_code: str
    ) -> PendingAuthorization:
        """The pending authorization through which this browser approves a device flow."""
        return await self.devices.pending_for(flow, browser_secret, user_code)

    def is_user(self, name: str) -> bool:
        """Whether `name` is a configured local user (a reload may have removed it)."""
        return name in self.users

    # -- sign-in through an upstream identity provider ----------------------------------

    @property
    def signs_in_upstream(self) -> bool:
        """True when people sign in at an identity provider instead of with a password."""
        return self.upstream is not None

    def _upstream_login(self) -> UpstreamLogin:
        if self.upstream is None:
            raise page_error("invalid_request", "Sign-in through an identity provider is off.", 404)
        return self.upstream

    async def upstream_form_target(self) -> str:
        """Where the consent form may send the browser (the provider's endpoint)."""
        return await self._upstream_login().form_target()

    async def begin_upstream_login(self, flow: Flow) -> str:
        """The provider URL to send the browser to, after consent."""
        return await self._upstream_login().begin(flow)

    async def upstream_flow(self, state: str, browser_secret: str | None) -> Flow:
        """The flow a provider callback belongs to (for a refusal at the provider)."""
        return await self._upstream_login().flow_of(state, browser_secret)

    async def complete_upstream_login(
        self, state: str, code: str, browser_secret: str | None
    ) -> Flow:
        """Redeem the provider's code: the flow, signed in as the provider's user."""
        return await self._upstream_login().complete(state, code, browser_secret)

    async def begin_page_sign_in(self, return_to: str, browser_secret: str) -> str:
        """The provider URL whose sign-in leads this browser back to `return_to` (a page of
        ours, `/upgrade?...`) with an /account session (`oauthd.oauth.page_signin`)."""
        login = self._upstream_login()
        pending = await self.page_sign_ins.begin(return_to, browser_secret)
        return await login.begin(Flow(pending, page_client(self.config.server.issuer)))

    async def finish_page_sign_in(self, flow: Flow) -> str:
        """A provider callback for a flow with `returns_to`: the cookie value of a new
        /account session of the provider's user (the pending sign-in is used up)."""
        return await self.page_sign_ins.finish(flow)

    # -- a person's own grants ("Connected apps") ------------------------------------------

    async def sign_in_to_account(self, user: str) -> tuple[str, AccountSession]:
        """A new /account session of `user` (signed in with `check_login`): the cookie
        value and the session (`Accounts.sign_in`)."""
        return await self._accounts.sign_in(user)

    async def account_session(self, cookie: str | None) -> AccountSession | None:
        """The live /account session of a cookie value, if its user is still configured
        (a user removed by a reload is signed out at once; the provider's users are known
        only to the provider)."""
        session = await self._accounts.session(cookie)
        if session is None or not (self.signs_in_upstream or self.is_user(session.user)):
            return None
        return session

    async def sign_out_of_account(self, session: AccountSession) -> None:
        await self._accounts.sign_out(session)

    async def connected_apps(self, user: str) -> list[ConnectedApp]:
        return await self._accounts.connected_apps(user)

    async def revoke_connected_app(self, user: str, grant_id: str) -> Grant | None:
        """End `user`'s grant as `revoke_grant` does (its consent forgotten too); None if
        there is no such grant of this user."""
        grant = await self._accounts.owned(user, grant_id)
        return None if grant is None else await self.revoke_grant(grant.id, by="account")

    async def finish(self, flow: Flow, allow: bool, *, remembered: bool = False) -> str | None:
        """Record the consent decision (`remembered`: an earlier one, applied). For a code
        flow: the URL to send the browser to; for a device approval: None."""
        return await finish_consent(
            self.store, self.authorizer, self.devices, flow, allow, remembered
        )
