"""Enterprise identities linked to users of ours (SEP-990: accounts link by the ID-JAG's
issuer and subject).

The first ID-JAG of an (issuer, subject) makes an `AccountLink` (written through the store:
journaled, shared by every instance, audited as `account_linked`); every later one finds
it, so a person keeps one user name (grants, policy rules, `sessions list`) even if the
IdP's email for them changes.

Which user a new link names:
- with `link_by_email = true` on the issuer, and an `email` claim the IdP does not say is
  unverified (`email_verified` false refuses the email, absent is taken as the IdP's
  word): an existing user of that name. "Existing": with local sign-in, a
  `[[login.users]]` whose username is the email; with an identity provider (OIDC,
  GitHub), whose users oauthd does not list, a user who holds a live grant here (one
  who signed in and consented before, under `login.oidc.subject_claim = "email"`).
- otherwise: `user_template` filled in (`{sub}`, `{host}`: the issuer's host,
  `{email}`), default `{sub}@{host}`. The name never takes over a local user (the
  template of another issuer cannot make `alice`): that is refused `no_account`, as is
  everything when `user_template = ""` and no email link applies.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from oauthd.audit import AuditEvent
from oauthd.clock import Clock
from oauthd.config import TrustedIssuerConfig
from oauthd.model import PRINCIPAL_USER, AccountLink, account_link_key
from oauthd.oauth.assertions import AssertionRefused, Refusal, VerifiedAssertion
from oauthd.store import Conflict, Store

VIA_SUBJECT = "subject"
VIA_EMAIL = "email"


class AccountLinks:
    def __init__(
        self, store: Store, clock: Clock, is_local_user: Callable[[str], bool], local: bool
    ) -> None:
        """`is_local_user`: whether a name is a configured local user (read at each call:
        a SIGHUP may change the list); `local`: sign-in is local (`login.provider`)."""
        self._store = store
        self._clock = clock
        self._is_local_user = is_local_user
        self._local = local

    async def user_for(self, issuer: TrustedIssuerConfig, assertion: VerifiedAssertion) -> str:
        """The user of an enterprise identity: its link, made on first use."""
        key = account_link_key(issuer.issuer, assertion.subject)
        link = await self._store.account_links.get(key)
        if link is not None:
            return link.user
        user, via = await self._new_user(issuer, assertion)
        link = AccountLink(issuer.issuer, assertion.subject, user, via, self._clock.now(), None)
        try:
            linked = AuditEvent(
                "account_linked",
                user=user,
                detail={"issuer": issuer.issuer, "subject": assertion.subject, "via": via},
            )
            await self._store.account_links.add(link, audit=linked)
        except Conflict:  # linked meanwhile, by another request or instance
            existing = await self._store.account_links.get(key)
            if existing is not None:
                return existing.user
            raise
        return user

    async def _new_user(
        self, issuer: TrustedIssuerConfig, assertion: VerifiedAssertion
    ) -> tuple[str, str]:
        email = assertion.text("email")
        verified = assertion.claims.get("email_verified", True) is True
        if issuer.link_by_email and email and verified and await self._exists(email):
            return email, VIA_EMAIL
        if not issuer.user_template:
            raise AssertionRefused(
                Refusal.NO_ACCOUNT, "no user of this server is linked to the assertion's subject"
            )
        if "{email}" in issuer.user_template and not email:
            raise AssertionRefused(Refusal.NO_ACCOUNT, "the assertion has no email to name a user")
        user = (
            issuer.user_template.replace("{sub}", assertion.subject)
            .replace("{host}", urlsplit(issuer.issuer).hostname or "")
            .replace("{email}", email or "")
        )
        if self._is_local_user(user):
            raise AssertionRefused(
                Refusal.NO_ACCOUNT,
                "the subject would be named like an existing local user; it is not linked",
            )
        return user, VIA_SUBJECT

    async def _exists(self, name: str) -> bool:
        if self._local:
            return self._is_local_user(name)
        async for grant in self._store.grants.scan():
            if grant.user == name and grant.principal == PRINCIPAL_USER:
                return True
        return False
