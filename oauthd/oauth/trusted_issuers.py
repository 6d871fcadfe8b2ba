"""The configured `[[trusted_issuer]]`s as the JWT bearer grant uses them: which issuer an
assertion names, where its keys are, and what its assertions must say (`Expectations`).

Keys of a `jwks_file` are read once, with the config; a `jwks_uri` (or the one OpenID
discovery names) goes through the `KeySetSource` (`oauthd.outbound.jwks`: cache per HTTP
cache headers, an unknown `kid` fetched again at most once per refresh interval)."""

from __future__ import annotations

import orjson
from joserfc.jwk import KeySet

from oauthd.config import Config, TrustedIssuerConfig
from oauthd.config.issuers import ENTERPRISE
from oauthd.oauth.assertions import (
    ID_JAG_TYPE,
    AssertionRefused,
    Expectations,
    KeySetSource,
    KeysUnavailable,
    Refusal,
    import_key_set,
)

# What every assertion must carry; an ID-JAG also names its client and resource (MCP
# ext-auth: the ID-JAG carries the `resource` it was issued for).
_WORKLOAD_CLAIMS = ("iss", "sub", "exp", "aud")
_ID_JAG_CLAIMS = ("iss", "sub", "exp", "aud", "client_id", "resource")


class TrustedIssuers:
    def __init__(self, config: Config, source: KeySetSource | None) -> None:
        self._by_issuer = {i.issuer: i for i in config.trusted_issuer}
        self._static: dict[str, KeySet] = {
            i.issuer: import_key_set(orjson.loads(i.jwks_file.document))
            for i in config.trusted_issuer
            if i.jwks_file is not None
        }
        self._source = source
        self._audience = config.server.issuer

    def __bool__(self) -> bool:
        return bool(self._by_issuer)

    def get(self, issuer: str | None) -> TrustedIssuerConfig | None:
        """The trusted issuer an assertion's `iss` names exactly; None if none."""
        return None if issuer is None else self._by_issuer.get(issuer)

    async def keys(self, issuer: TrustedIssuerConfig, kid: str | None) -> KeySet:
        """The issuer's public keys (fetched again once when `kid` is not among them);
        KEYS_UNAVAILABLE when there are none to be had."""
        static = self._static.get(issuer.issuer)
        if static is not None:
            return static
        if self._source is None:
            raise AssertionRefused(Refusal.KEYS_UNAVAILABLE, "the issuer's keys cannot be fetched")
        try:
            url = issuer.jwks_uri or await self._source.discovered_jwks_uri(issuer.issuer)
            return await self._source.key_set(url, kid=kid)
        except KeysUnavailable as exc:
            raise AssertionRefused(
                Refusal.KEYS_UNAVAILABLE, f"the issuer's keys are not available ({exc})"
            ) from None

    def expectations(self, issuer: TrustedIssuerConfig) -> Expectations:
        enterprise = issuer.kind == ENTERPRISE
        return Expectations(
            audiences=frozenset(issuer.audience or (self._audience,)),
            max_lifetime=issuer.max_lifetime,
            typ=ID_JAG_TYPE if enterprise else None,
            require_jti=issuer.jti_required,
            required_claims=_ID_JAG_CLAIMS if enterprise else _WORKLOAD_CLAIMS,
        )
