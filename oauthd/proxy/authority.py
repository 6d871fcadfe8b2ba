"""What the proxy needs of the protocol, and no more: a narrow view of `AuthServer` (the
door, design.md section 1), which `AuthServer` satisfies as it is."""

from __future__ import annotations

from typing import Protocol

from oauthd.model import Grant
from oauthd.oauth import BearerCheck, GrantEndedListener


class Authority(Protocol):
    verify_bearer: BearerCheck  # the live grant an access token belongs to, or None

    async def bearer_refusal(self, token: str, resource: str) -> tuple[str, Grant | None]:
        """Why `verify_bearer` refused `token` (a reason code), and the grant it names."""

    async def upstream_access_token(self, grant: Grant) -> str | None:
        """The user's identity-provider access token, if there is one."""

    def identity_assertion(self, grant: Grant, *, ended: bool = False) -> str:
        """The signed identity JWT of `grant` for its resource's upstream (no I/O);
        `ended`: for the DELETE of an ended grant (nothing kept for it)."""

    def groups_of(self, grant: Grant) -> frozenset[str]:
        """The groups of the grant's user, for policy rules (empty when none)."""

    def on_grant_ended(self, listener: GrantEndedListener) -> None:
        """Call `listener(grant)` whenever a grant is revoked or ends."""
