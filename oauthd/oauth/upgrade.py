"""In-place upgrade of a grant (issue #12 item 5): the signed-in owner of a grant approves
scopes its current access token lacks, and the same token carries them from then on.

The proxy's 403 `insufficient_scope` names the page (`upgrade_url`). Standard step-up
(the client runs a new authorization with the wider scope) needs a client that follows
the challenge; this serves the clients that do not. The rules are those of consent: only
the grant's own user may approve, only scopes the grant's resource offers (as at
/authorize, a client's registered `scope` is what it gets by default, not a limit), and
the user's remembered consent for that client gains what was added.

An unknown grant, an ended one and another user's are one answer (`NO_SUCH_GRANT`), so
the page says nothing about whether a grant id exists."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from oauthd.audit import AuditEvent
from oauthd.clock import Clock
from oauthd.config import Config, ResourceConfig
from oauthd.model import Consent, Grant
from oauthd.oauth.authorize import widen_consent
from oauthd.oauth.clients import ClientRegistry
from oauthd.oauth.errors import OAuthError, page_error
from oauthd.oauth.resources import Targets
from oauthd.scopes import ScopeHierarchy
from oauthd.store import Store

UPGRADE_PATH = "/upgrade"
NO_SUCH_GRANT = (
    "There is no access of your account to upgrade here: the link is wrong, the app's "
    "access has ended, or it belongs to another account."
)


def upgrade_url(issuer: str, grant_id: str, scopes: tuple[str, ...] | list[str]) -> str:
    """The page where the owner of grant `grant_id` approves `scopes` (space-separated in
    `scope`), for the `upgrade_url` of a 403 `insufficient_scope` answer."""
    query = urlencode({"grant": grant_id, "scope": " ".join(scopes)}, quote_via=quote)
    return f"{issuer}{UPGRADE_PATH}?{query}"


@dataclass(slots=True, frozen=True)
class UpgradeOffer:
    """What the page shows: whose app, which resource, and the scopes the grant's current
    access token does not amount to (hierarchy honoured), in the order asked; empty when
    it holds all of them already."""

    grant_id: str
    client_id: str
    client_name: str
    resource: ResourceConfig
    added: tuple[str, ...]
    unverified: bool = False  # the name is the app's own claim (dynamic registration)


def _widened(grant: Grant, added: tuple[str, ...], hierarchy: ScopeHierarchy) -> Grant:
    """`grant` whose scopes and current access token carry `added` too. A narrowed token
    (`access_scopes`) stays narrowed, plus what was added."""
    scopes = (*grant.scopes, *hierarchy.missing(frozenset(grant.scopes), added))
    if grant.access_scopes is None:
        return dataclasses.replace(grant, scopes=scopes)
    token = (*grant.access_scopes, *hierarchy.missing(frozenset(grant.access_scopes), added))
    return dataclasses.replace(
        grant, scopes=scopes, access_scopes=None if token == scopes else token
    )


def _fewest(
    hierarchy: ScopeHierarchy, held: tuple[str, ...], wanted: tuple[str, ...]
) -> tuple[str, ...]:
    """The scopes of `wanted` that `held` does not amount to, less those another added
    one implies (asked `files:write files:read`, `files:write` is added)."""
    added = list(hierarchy.missing(frozenset(held), wanted))
    for scope in tuple(added):
        rest = frozenset((*held, *(s for s in added if s != scope)))
        if hierarchy.covers(rest, (scope,)):
            added.remove(scope)
    return tuple(added)


async def remember_added(
    store: Store, grant: Grant, path: str, added: tuple[str, ...], now: float, ttl: float
) -> None:
    """The user's remembered consent for the grant's client and resource (at `path`)
    gains `added`."""
    asked = Consent(grant.user, grant.client_id, added, 0.0, None, resource=path)
    await widen_consent(store, asked, now, ttl)


class Upgrades:
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        clients: ClientRegistry,
        hierarchy: ScopeHierarchy,
    ) -> None:
        self._config = config
        self._clients = clients
        self._store = store
        self._clock = clock
        self._hierarchy = hierarchy

    async def offer(self, user: str, grant_id: str, scopes: tuple[str, ...]) -> UpgradeOffer:
        """What approving `scopes` for `user`'s grant would add; a page error for a grant
        that is not the user's (`NO_SUCH_GRANT`), no scope, or a scope that the grant's
        resource does not offer."""
        grant = await self._store.grants.get(grant_id) if grant_id else None
        if grant is None or grant.user != user:
            raise page_error("invalid_request", NO_SUCH_GRANT, 404)
        return await self._offer(grant, scopes)

    async def _offer(self, grant: Grant, scopes: tuple[str, ...]) -> UpgradeOffer:
        wanted = tuple(dict.fromkeys(scopes))
        if not wanted:
            raise page_error("invalid_scope", "The link names no scope to add.")
        resource = self._config.resource_named(grant.resource)
        if resource is None:
            raise page_error("invalid_request", "This app's server is no longer served here.")
        unoffered = [s for s in wanted if s not in resource.scopes]
        if unoffered:
            raise page_error(
                "invalid_scope", f"{resource.name} does not offer the scope {unoffered[0]!r}."
            )
        try:  # a metadata document's client may need fetching again
            client = await self._clients.find(grant.client_id)
        except OAuthError:
            client = None
        if client is None:
            raise page_error("invalid_client", "This app is no longer registered.")
        added = _fewest(self._hierarchy, grant.token_scopes, wanted)
        unverified = client.source == "dcr"
        return UpgradeOffer(
            grant.id, grant.client_id, client.client_name, resource, added, unverified
        )

    async def upgrade(self, user: str, grant_id: str, scopes: tuple[str, ...]) -> UpgradeOffer:
        """Give `user`'s grant `scopes` (checked as `offer` does): its scopes and its
        current access token gain what they lack, so the token in use passes a check
        needing them; refreshes keep them. Journaled through `grants.update` before this
        returns, then the user's remembered consent gains them, and it is audited. The
        offer made (its `added` empty: nothing was changed)."""
        offer = await self.offer(user, grant_id, scopes)
        if not offer.added:
            return offer
        added = offer.added
        hierarchy = self._hierarchy

        def widen(grant: Grant) -> Grant:  # pure: shared backends may run it again
            return grant if grant.user != user else _widened(grant, added, hierarchy)

        def event(grant: Grant) -> AuditEvent:
            # written only when `widen` changed it: a grant of `user`
            return AuditEvent.of_grant(
                "grant_upgraded", grant, grant.resource, detail={"scopes": " ".join(added)}
            )

        grant = await self._store.grants.update(grant_id, widen, audit=event)
        if grant is None:  # ended meanwhile
            raise page_error("invalid_request", NO_SUCH_GRANT, 404)
        now, ttl = self._clock.now(), self._config.tokens.consent_ttl
        path = Targets(self._config).path_of(grant.resource)
        await remember_added(self._store, grant, path, added, now, ttl)
        return offer
