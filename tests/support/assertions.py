"""Signed JWTs of others, for the JWT bearer grant's tests: `Signer` (an issuer's key
pair: its JWKS, JWTs signed with it), `FakeKeySource` (a `KeySetSource` over signers by
URL, counting fetches), the shapes of real platform tokens (`kubernetes_claims`,
`spiffe_claims`, `google_claims`, `id_jag_claims`), `trusted_issuer(...)` for a config
table, and `bearer_env(...)`: an `Env` (tests.support.protocol) whose `AuthServer` takes
those issuers' assertions."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from oauthd.clock import FakeClock
from oauthd.config import Config, ResourceConfig, SubjectRule, TrustedIssuerConfig
from oauthd.config.issuers import DEFAULT_USER_TEMPLATE
from oauthd.oauth.assertions import ID_JAG_TYPE, JWT_BEARER, KeysUnavailable
from oauthd.store import Store
from tests.support.protocol import Env, build_env

K8S_ISSUER = "https://kubernetes.default.svc.cluster.local"
SPIFFE_ISSUER = "https://spire.example.org"
GOOGLE_ISSUER = "https://accounts.google.com"
IDP_ISSUER = "https://idp.example.com"


class Signer:
    """An issuer's signing key (RSA or EC P-256) with its `kid`."""

    def __init__(self, kid: str | None = None, *, ec: bool = False) -> None:
        kid = kid or "key-" + secrets.token_hex(4)
        params = {"kid": kid, "use": "sig"}
        self.key: RSAKey | ECKey = (
            ECKey.generate_key("P-256", parameters=params)
            if ec
            else RSAKey.generate_key(2048, parameters=params)
        )
        self.alg = "ES256" if ec else "RS256"
        self.kid = kid

    def jwks(self, *others: Signer) -> dict[str, Any]:
        """The public JWKS of this key (and `others`)."""
        return {"keys": [s.key.as_dict(private=False) for s in (self, *others)]}

    def sign(self, claims: Mapping[str, Any], *, typ: str | None = None, **header: Any) -> str:
        head: dict[str, Any] = {"alg": self.alg, "kid": self.kid, **header}
        if typ is not None:
            head["typ"] = typ
        return jwt.encode(head, dict(claims), self.key)


class FakeKeySource:
    """A `KeySetSource` serving each signer's JWKS at its URL (`keys[url]`, changeable),
    recording every fetch; with `down`, KeysUnavailable."""

    def __init__(self) -> None:
        self.keys: dict[str, list[Signer]] = {}
        self.discovery: dict[str, str] = {}
        self.fetches: list[tuple[str, str | None]] = []
        self.permitted: list[str] = []  # clients' jwks_uri (the fetcher allows their hosts)
        self.down = False

    def permit(self, url: str) -> None:
        self.permitted.append(url)

    async def key_set(self, url: str, *, kid: str | None = None) -> KeySet:
        self.fetches.append((url, kid))
        if self.down or url not in self.keys:
            raise KeysUnavailable(f"HTTP 503 from {url}")
        return KeySet.import_key_set(self.keys[url][0].jwks(*self.keys[url][1:]))

    async def discovered_jwks_uri(self, issuer: str) -> str:
        if issuer not in self.discovery:
            raise KeysUnavailable("no OpenID configuration")
        return self.discovery[issuer]


def trusted_issuer(issuer: str, kind: str = "workload", **keys: Any) -> TrustedIssuerConfig:
    """A `[[trusted_issuer]]` table: its keys at `<issuer>/jwks` unless `keys` say
    otherwise; a workload's subjects from `subjects={glob: principal}`."""
    subjects = keys.pop("subjects", {})
    defaults: dict[str, Any] = {
        "issuer": issuer,
        "kind": kind,
        "jwks_uri": f"{issuer}/jwks",
        "jwks_file": None,
        "discovery": False,
        "audience": (),
        "resources": (),
        "scopes": (),
        "max_lifetime": 3600.0,
        "require_jti": None,
        "jwks_hosts": (),
        "subject": tuple(SubjectRule(m, p) for m, p in subjects.items()),
        "user_template": DEFAULT_USER_TEMPLATE,
        "link_by_email": False,
    }
    return TrustedIssuerConfig(**{**defaults, **keys})


def bearer_env(
    tmp_path: Path,
    issuers: tuple[TrustedIssuerConfig, ...],
    source: FakeKeySource,
    *,
    store: Store | None = None,
    clock: FakeClock | None = None,
    resources: Callable[[Config], tuple[ResourceConfig, ...]] | None = None,
    **sections: Mapping[str, Any],
) -> Env:
    """An `Env` whose server trusts `issuers`, their keys from `source`; `resources` as
    `tests.support.protocol.build_env`'s."""
    return build_env(
        tmp_path, store, clock, resources=resources, jwks=source, issuers=issuers, **sections
    )


def bearer_form(assertion: str, **extra: str) -> dict[str, str]:
    return {"grant_type": JWT_BEARER, "assertion": assertion, **extra}


def _times(now: float, lifetime: float) -> dict[str, Any]:
    return {"iat": int(now), "exp": int(now + lifetime)}


def kubernetes_claims(audience: str, now: float, namespace: str, account: str) -> dict[str, Any]:
    """A projected service-account token's claims (`kubernetes.io` as the kubelet writes)."""
    return {
        "iss": K8S_ISSUER,
        "sub": f"system:serviceaccount:{namespace}:{account}",
        "aud": [audience],
        "nbf": int(now),
        **_times(now, 3600),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": account, "uid": "7d1c6f1e-1c1b-4e33-9a57-0d3c1f1c2b10"},
            "pod": {"name": f"{account}-7f9c", "uid": "0b7f3c2e-6a3e-4a36-8d9e-5b4f2e0d9a11"},
        },
    }


def spiffe_claims(audience: str, now: float, path: str) -> dict[str, Any]:
    """A JWT-SVID's claims: a SPIFFE ID as `sub`, `aud` a list, no `jti`."""
    return {
        "iss": SPIFFE_ISSUER,
        "sub": f"spiffe://example.org{path}",
        "aud": [audience, "spiffe://example.org/other"],
        **_times(now, 300),
    }


def google_claims(audience: str, now: float, email: str) -> dict[str, Any]:
    """A Google-style identity token of a service account (`email`, `azp`)."""
    return {
        "iss": GOOGLE_ISSUER,
        "sub": "113045127789012345678",
        "aud": audience,
        "azp": "113045127789012345678",
        "email": email,
        "email_verified": True,
        **_times(now, 3600),
    }


def id_jag_claims(
    audience: str, now: float, client_id: str, resource: str, **extra: Any
) -> dict[str, Any]:
    """An ID-JAG's claims (SEP-990): its own `jti`, five minutes of life."""
    return {
        "iss": IDP_ISSUER,
        "sub": "00u1a2b3c4",
        "aud": audience,
        "client_id": client_id,
        "resource": resource,
        "jti": secrets.token_urlsafe(16),
        "scope": "mcp",
        **_times(now, 300),
        **extra,
    }


def sign_id_jag(signer: Signer, claims: Mapping[str, Any]) -> str:
    return signer.sign(claims, typ=ID_JAG_TYPE)
