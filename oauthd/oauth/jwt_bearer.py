"""The JWT bearer grant (RFC 7523 s2.1, `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`)
for assertions of a `[[trusted_issuer]]`:

- a workload identity token (SEP-1933: a Kubernetes service-account token, a SPIFFE
  JWT-SVID, a cloud identity token) from a `kind = "workload"` issuer. No client needs to
  authenticate (the platform vouches for the workload); a client that does is checked and
  named in the grant. The subject maps to a service principal (`[[trusted_issuer.subject]]`)
  and the request must name its `resource` (RFC 8707).
- an Identity Assertion JWT Authorization Grant (SEP-990, JOSE `typ: oauth-id-jag+jwt`)
  from a `kind = "enterprise"` IdP, redeemed by the confidential client it names
  (`client_id`), for the resource it names (`resource`). No consent page: the IdP decided.
  The person is linked to a user of ours by (iss, sub) (`oauth/account_links.py`).

Either way the grant is access-only (`AccessOnlyGrants`): the client asks again with a
fresh assertion. Every refusal has its own `Refusal`: the log line
`token.assertion_refused` (kind, reason, issuer, client; never the assertion) and the
metric `oauthd_assertions_refused_total{kind,reason}` name it; the client gets
`invalid_grant` (RFC 7523 s3.1) with a description, `invalid_scope` for scopes,
`invalid_target` for a resource, `invalid_client` when its authentication fails.

A `jti` is claimed (single use, `JtiLedger`) last, after every other check passed, so
that an assertion refused for a wrong scope may be sent again with the right one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from oauthd.clock import Clock
from oauthd.config import Config, ResourceConfig, TrustedIssuerConfig
from oauthd.config.issuers import ENTERPRISE
from oauthd.metrics import Metrics
from oauthd.model import PRINCIPAL_SERVICE, PRINCIPAL_USER, Client
from oauthd.oauth.access_only import AccessOnlyGrants
from oauthd.oauth.account_links import AccountLinks
from oauthd.oauth.assertions import (
    ID_JAG_TYPE,
    JWT_BEARER,
    AssertionRefused,
    JtiLedger,
    KeySetSource,
    Refusal,
    VerifiedAssertion,
    peek,
    verify,
)
from oauthd.oauth.errors import OAuthError, invalid_client, invalid_request
from oauthd.oauth.resources import Targets, UnknownTarget, canonical_resource
from oauthd.oauth.tokens import TokenResponse, Tokens
from oauthd.oauth.trusted_issuers import TrustedIssuers
from oauthd.scopes import ScopeHierarchy
from oauthd.store import Store

log = logging.getLogger("oauthd.token")

KIND_WORKLOAD = "workload"
KIND_ID_JAG = "id_jag"

Authenticate = Callable[[], Awaitable[Client]]


class Refused(AssertionRefused):
    """A refusal whose OAuth error is not `invalid_grant` (a scope, a resource)."""

    def __init__(self, reason: Refusal, description: str, error: str) -> None:
        super().__init__(reason, description)
        self.error = error


@dataclass(slots=True)
class _Attempt:
    """What is known of a request so far, for the refusal's log line."""

    kind: str = KIND_WORKLOAD
    issuer: str | None = None
    client_id: str | None = None


@dataclass(slots=True, frozen=True)
class _Accepted:
    user: str
    principal: str
    resource: ResourceConfig
    scopes: tuple[str, ...]


class JwtBearerGrant:
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        issuers: TrustedIssuers,
        grants: AccessOnlyGrants,
        links: AccountLinks,
    ) -> None:
        self.issuers = issuers
        self._clock = clock
        self._metrics = metrics
        self._grants = grants
        self._links = links
        self._ledger = JtiLedger(store, clock)
        self._targets = Targets(config)
        self._hierarchy = ScopeHierarchy(dict(config.oauth.scope_implies))
        self._allowed_paths = {
            i.issuer: frozenset(_path(config, name) for name in i.resources)
            for i in config.trusted_issuer
        }

    @classmethod
    def build(
        cls,
        config: Config,
        store: Store,
        clock: Clock,
        tokens: Tokens,
        metrics: Metrics,
        key_source: KeySetSource | None,
        is_local_user: Callable[[str], bool],
    ) -> JwtBearerGrant:
        """The grant over the configured trusted issuers (keys through `key_source`)."""
        local = config.login.provider == "local"
        links = AccountLinks(store, clock, is_local_user, local)
        issuers = TrustedIssuers(config, key_source)
        grants = AccessOnlyGrants(config, store, clock, tokens)
        return cls(config, store, clock, metrics, issuers, grants, links)

    async def redeem(
        self, form: Mapping[str, str], client_given: bool, authenticate: Authenticate
    ) -> TokenResponse:
        """The token response for `form`'s assertion. `client_given`: the request carries
        client credentials (then they are checked, for a workload too);
        `authenticate()`: the authenticated client allowed this grant, or OAuthError."""
        assertion = form.get("assertion")
        if not assertion:
            raise invalid_request("assertion is required")
        attempt = _Attempt()
        try:
            return await self._redeem(form, assertion, client_given, authenticate, attempt)
        except AssertionRefused as refused:
            self._refused(attempt, refused)
            error = refused.error if isinstance(refused, Refused) else "invalid_grant"
            raise OAuthError(error, refused.description) from None

    async def _redeem(
        self,
        form: Mapping[str, str],
        assertion: str,
        client_given: bool,
        authenticate: Authenticate,
        attempt: _Attempt,
    ) -> TokenResponse:
        unverified = peek(assertion)
        id_jag = _is_id_jag(unverified.header.get("typ"))
        attempt.kind = KIND_ID_JAG if id_jag else KIND_WORKLOAD
        issuer = self.issuers.get(unverified.issuer)
        if issuer is None:
            raise AssertionRefused(Refusal.UNKNOWN_ISSUER, "the assertion's issuer is not trusted")
        attempt.issuer = issuer.issuer
        enterprise = issuer.kind == ENTERPRISE
        if id_jag and not enterprise:
            raise AssertionRefused(
                Refusal.WRONG_TYPE, "this issuer is trusted for workload tokens, not ID-JAGs"
            )
        client = await authenticate() if enterprise or client_given else None
        if client is not None:
            attempt.client_id = client.client_id
        if enterprise and (client is None or client.token_endpoint_auth_method == "none"):
            raise invalid_client("an ID-JAG is redeemed by a confidential client (authenticated)")
        keys = await self.issuers.keys(issuer, unverified.kid)
        expect = self.issuers.expectations(issuer)
        verified = verify(assertion, keys, expect, self._clock.now())
        if enterprise:
            assert client is not None
            accepted = await self._enterprise(issuer, verified, client, form)
        else:
            accepted = self._workload(issuer, verified, client, form)
        if issuer.jti_required and verified.jti is not None:
            # not otherwise: a platform token (Kubernetes' carry a jti) is reused all its life
            await self._ledger.claim(issuer.issuer, verified.jti, verified.expires_at)
        return await self._grants.issue(
            accepted.user,
            client.client_id if client is not None else issuer.issuer,
            accepted.scopes,
            self._targets.identifier(accepted.resource),
            grant_type=JWT_BEARER,
            principal=accepted.principal,
        )

    # -- workload identity --------------------------------------------------------------

    def _workload(
        self,
        issuer: TrustedIssuerConfig,
        verified: VerifiedAssertion,
        client: Client | None,
        form: Mapping[str, str],
    ) -> _Accepted:
        principal = issuer.principal_of(verified.subject)
        if principal is None:
            raise AssertionRefused(
                Refusal.SUBJECT_NOT_ALLOWED,
                "the assertion's subject is not mapped to a principal of this server",
            )
        requested = form.get("resource")
        if not requested:
            raise invalid_request("resource is required (RFC 8707): the resource to access")
        resource = self._allowed_resource(issuer, self._named(requested))
        scopes = self._scopes(issuer, resource, form.get("scope"), client, None)
        return _Accepted(principal, PRINCIPAL_SERVICE, resource, scopes)

    # -- enterprise (ID-JAG) ------------------------------------------------------------

    async def _enterprise(
        self,
        issuer: TrustedIssuerConfig,
        verified: VerifiedAssertion,
        client: Client,
        form: Mapping[str, str],
    ) -> _Accepted:
        if verified.claims.get("client_id") != client.client_id:
            raise AssertionRefused(
                Refusal.CLIENT_MISMATCH, "the assertion was issued to another client (client_id)"
            )
        resource = self._allowed_resource(issuer, self._id_jag_resource(verified, form))
        ceiling = verified.claims.get("scope")
        if ceiling is not None and not isinstance(ceiling, str):
            raise AssertionRefused(Refusal.MALFORMED, "the scope claim must be a string")
        granted = None if ceiling is None else tuple(ceiling.split())
        scopes = self._scopes(issuer, resource, form.get("scope"), client, granted)
        user = await self._links.user_for(issuer, verified)
        return _Accepted(user, PRINCIPAL_USER, resource, scopes)

    def _id_jag_resource(
        self, verified: VerifiedAssertion, form: Mapping[str, str]
    ) -> ResourceConfig:
        """The resource the ID-JAG names (a string, or an array of them), and the request
        asks for (when it names one, it must be one of the ID-JAG's)."""
        claim = verified.claims.get("resource")
        named = [claim] if isinstance(claim, str) else claim
        if not isinstance(named, list) or not named or not all(isinstance(r, str) for r in named):
            raise AssertionRefused(Refusal.MALFORMED, "the resource claim must be a URI or URIs")
        ours = [self._targets.of(r) for r in named]
        if any(r is None for r in ours):
            raise AssertionRefused(
                Refusal.UNKNOWN_RESOURCE, "the assertion names a resource this server does not have"
            )
        requested = form.get("resource")
        if requested:
            wanted = self._named(requested)
            if wanted not in ours:
                raise AssertionRefused(
                    Refusal.UNKNOWN_RESOURCE, "the assertion was not issued for this resource"
                )
            return wanted
        if len(ours) != 1:
            raise invalid_request("resource is required: the assertion names several")
        found = ours[0]
        assert found is not None
        return found

    # -- shared ---------------------------------------------------------------------------

    def _named(self, requested: str) -> ResourceConfig:
        try:
            return self._targets.named(requested)
        except UnknownTarget as exc:
            raise OAuthError("invalid_target", str(exc)) from None

    def _allowed_resource(
        self, issuer: TrustedIssuerConfig, resource: ResourceConfig
    ) -> ResourceConfig:
        allowed = self._allowed_paths[issuer.issuer]
        if allowed and resource.path not in allowed:
            raise Refused(
                Refusal.UNKNOWN_RESOURCE,
                f"this issuer's assertions do not give access to {resource.path}",
                "invalid_target",
            )
        return resource

    def _scopes(
        self,
        issuer: TrustedIssuerConfig,
        resource: ResourceConfig,
        scope: str | None,
        client: Client | None,
        granted: tuple[str, ...] | None,
    ) -> tuple[str, ...]:
        """The scopes to issue: those asked (none: the ID-JAG's, else the resource's
        `required_scopes`, else all allowed), each within what the resource offers, the
        issuer allows (`scopes`), the ID-JAG grants (`scope` claim) and the client
        registered (for a grant without consent, a registered scope is a limit), the
        scope hierarchy honoured."""
        allowed = [s for s in resource.scopes if self._within(s, issuer.scopes)]
        allowed = [s for s in allowed if self._within(s, granted or ())] if granted else allowed
        if client is not None and client.scope.split():
            allowed = [s for s in allowed if self._within(s, tuple(client.scope.split()))]
        if scope is not None and scope.strip():
            wanted = tuple(dict.fromkeys(scope.split()))
        elif granted:
            wanted = tuple(s for s in granted if s in allowed)
        else:
            needed = tuple(s for s in resource.required_scopes if s in allowed)
            wanted = needed or tuple(allowed)
        beyond = [s for s in wanted if s not in allowed]
        if beyond or not wanted:
            what = f"scope {beyond[0]!r} is" if beyond else "no scope is"
            raise Refused(
                Refusal.SCOPE_NOT_ALLOWED,
                f"{what} allowed for this assertion at {resource.name} ({resource.path})",
                "invalid_scope",
            )
        return wanted

    def _within(self, scope: str, ceiling: tuple[str, ...]) -> bool:
        """`scope` is within `ceiling` (empty: no limit), with what its scopes imply."""
        return not ceiling or scope in self._hierarchy.closure(frozenset(ceiling))

    def _refused(self, attempt: _Attempt, refused: AssertionRefused) -> None:
        self._metrics.assertion_refused(attempt.kind, refused.reason)
        log.info(
            "assertion refused",
            extra={
                "event": "token.assertion_refused",
                "kind": attempt.kind,
                "reason": str(refused.reason),
                "issuer": attempt.issuer,
                "client_id": attempt.client_id,
                "description": refused.description,
            },
        )


def _is_id_jag(typ: object) -> bool:
    return isinstance(typ, str) and typ.lower().removeprefix("application/") == ID_JAG_TYPE


def _path(config: Config, name: str) -> str:
    resource = config.resource_named(name)
    return resource.path if resource is not None else canonical_resource(name)
