"""Upstream identity providers, the I/O side: OpenID Connect (discovery, code + PKCE, nonce,
id_token signature and claims) and GitHub (OAuth 2 + the user API). authlib builds the
OAuth requests; joserfc (authlib's JOSE library) checks the id_token; aiohttp talks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from oauthd.config import GithubConfig, LoginConfig, OidcConfig
from oauthd.keyring import Keyring
from oauthd.oauth import IdentityProvider, UpstreamError, UpstreamIdentity

TIMEOUT = aiohttp.ClientTimeout(total=10)
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
DISCOVERY_TTL = 3600.0


async def _json(response: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
    if response.status != 200:
        raise UpstreamError(f"{what} answered HTTP {response.status}")
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        raise UpstreamError(f"{what} did not answer JSON") from None
    if not isinstance(body, dict):
        raise UpstreamError(f"{what} did not answer a JSON object")
    return body


class _Client:
    """A shared session and the provider's client credentials (the secret from the
    keyring, as read at start or at the last SIGHUP; None: the client_id alone)."""

    def __init__(self, client_id: str, keyring: Keyring) -> None:
        self.client_id = client_id
        self._keyring = keyring
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=20)
            )
        return self._session

    def token_auth(self) -> tuple[dict[str, str], dict[str, str]]:
        """(headers, form fields) that authenticate oauthd at the provider's token endpoint:
        HTTP Basic with a secret (client_secret_basic), else the client_id alone."""
        secret = self._keyring.idp_secret
        if secret is None:
            return {"Accept": "application/json"}, {"client_id": self.client_id}
        # RFC 6749 s2.3.1: both parts are form-urlencoded before the Basic encoding
        basic = aiohttp.encode_basic_auth(quote(self.client_id, safe=""), quote(secret, safe=""))
        return {"Authorization": basic, "Accept": "application/json"}, {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _refresh_at(self, endpoint: str, refresh_token: str) -> dict[str, Any]:
        auth_headers, extra = self.token_auth()
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
        try:
            async with self.session.post(endpoint, data=form, headers=auth_headers) as response:
                tokens = await _json(response, "the provider's token endpoint")
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach the identity provider: {exc}") from None
        if not isinstance(tokens.get("access_token"), str):
            raise UpstreamError("the provider refused to refresh the token")
        return _kept_tokens(tokens)


class OidcProvider(_Client):
    def __init__(self, config: OidcConfig, keyring: Keyring) -> None:
        super().__init__(config.client_id, keyring)
        self.config = config
        self._discovered: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._keys: KeySet | None = None

    async def _discovery(self) -> dict[str, Any]:
        if self._discovered is None or time.monotonic() - self._discovered_at > DISCOVERY_TTL:
            url = f"{self.config.issuer}/.well-known/openid-configuration"
            try:
                async with self.session.get(url) as response:
                    doc = await _json(response, "the provider's discovery document")
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"cannot reach the identity provider: {exc}") from None
            if doc.get("issuer") != self.config.issuer:
                raise UpstreamError("the provider's discovery document names another issuer")
            self._discovered, self._discovered_at, self._keys = doc, time.monotonic(), None
        return self._discovered

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        doc = await self._discovery()
        return await self._refresh_at(doc["token_endpoint"], refresh_token)

    async def authorization_endpoint(self) -> str:
        return str((await self._discovery())["authorization_endpoint"])

    async def authorization_url(
        self, *, state: str, nonce: str, code_challenge: str, redirect_uri: str
    ) -> str:
        doc = await self._discovery()
        return str(
            prepare_grant_uri(
                doc["authorization_endpoint"],
                self.client_id,
                "code",
                redirect_uri,
                " ".join(self.config.scopes),
                state,
                nonce=nonce,
                code_challenge=code_challenge,
                code_challenge_method="S256",
            )
        )

    async def identify(
        self, *, code: str, code_verifier: str, nonce: str, redirect_uri: str
    ) -> UpstreamIdentity:
        doc = await self._discovery()
        tokens = await self._exchange(doc["token_endpoint"], code, code_verifier, redirect_uri)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise UpstreamError("the provider sent no id_token")
        claims = await self._validated_claims(doc, id_token, nonce)
        username = claims.get(self.config.subject_claim)
        if not isinstance(username, str) or not username:
            raise UpstreamError(f"the id_token has no {self.config.subject_claim!r} claim")
        if self.config.subject_claim == "email" and claims.get("email_verified") is False:
            raise UpstreamError("the e-mail address is not verified at the provider")
        groups = claimed_groups(claims, self.config.groups_claim)
        return UpstreamIdentity(username, _kept_tokens(tokens), groups)

    async def _exchange(
        self, endpoint: str, code: str, verifier: str, redirect_uri: str
    ) -> dict[str, Any]:
        auth_headers, extra = self.token_auth()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            **extra,
        }
        try:
            async with self.session.post(endpoint, data=form, headers=auth_headers) as response:
                return await _json(response, "the provider's token endpoint")
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach the identity provider: {exc}") from None

    async def _key_set(self, doc: Mapping[str, Any], refresh: bool) -> KeySet:
        if self._keys is None or refresh:
            try:
                async with self.session.get(doc["jwks_uri"]) as response:
                    self._keys = KeySet.import_key_set(await _json(response, "the provider's JWKS"))  # type: ignore[arg-type]
            except (aiohttp.ClientError, JoseError, ValueError) as exc:
                raise UpstreamError(f"cannot load the provider's signing keys: {exc}") from None
        return self._keys

    async def _validated_claims(
        self, doc: Mapping[str, Any], id_token: str, nonce: str
    ) -> dict[str, Any]:
        for refresh in (False, True):  # keys rotate: reload once on an unknown key
            keys = await self._key_set(doc, refresh)
            try:
                token = jwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS)
                break
            except JoseError as exc:
                if refresh:
                    raise UpstreamError(f"the id_token signature is not valid: {exc}") from None
        registry = jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": self.config.issuer},
            aud={"essential": True, "value": self.client_id},
            nonce={"essential": True, "value": nonce},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(token.claims)
        except JoseError as exc:
            raise UpstreamError(f"the id_token is not acceptable: {exc}") from None
        return dict(token.claims)


class GithubProvider(_Client):
    def __init__(self, config: GithubConfig, keyring: Keyring) -> None:
        super().__init__(config.client_id, keyring)
        self.config = config

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        return await self._refresh_at(self.config.token_url, refresh_token)

    async def authorization_endpoint(self) -> str:
        return self.config.authorize_url

    async def authorization_url(
        self, *, state: str, nonce: str, code_challenge: str, redirect_uri: str
    ) -> str:
        return str(
            prepare_grant_uri(
                self.config.authorize_url,
                self.client_id,
                "code",
                redirect_uri,
                " ".join(self.config.scopes),
                state,
                code_challenge=code_challenge,
                code_challenge_method="S256",
            )
        )

    async def identify(
        self, *, code: str, code_verifier: str, nonce: str, redirect_uri: str
    ) -> UpstreamIdentity:
        auth_headers, extra = self.token_auth()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
            **extra,
        }
        headers = {"Accept": "application/json"}
        try:
            async with self.session.post(
                self.config.token_url, data=form, headers={**headers, **auth_headers}
            ) as response:
                tokens = await _json(response, "GitHub's token endpoint")
            access = tokens.get("access_token")
            if not isinstance(access, str):
                raise UpstreamError(str(tokens.get("error_description") or "no access token"))
            user_headers = {**headers, "Authorization": f"Bearer {access}"}
            async with self.session.get(self.config.user_url, headers=user_headers) as response:
                user = await _json(response, "GitHub's user API")
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach GitHub: {exc}") from None
        username = user.get(self.config.username_field)
        if not isinstance(username, str) or not username:
            raise UpstreamError(f"the user document has no {self.config.username_field!r}")
        return UpstreamIdentity(username, _kept_tokens(tokens))


MAX_GROUPS = 256  # a claim longer than this is cut: groups go into every grant record


def claimed_groups(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The user's groups from the ID token's `claim` (`login.oidc.groups_claim`): an array
    of strings, or one string (one group); "" names no claim: no groups. Anything else in
    the claim (numbers, objects) is ignored, not an error: policy then sees no groups."""
    value = claims.get(claim) if claim else None
    if isinstance(value, str):
        return (value,) if value else ()
    if not isinstance(value, list):
        return ()
    groups = dict.fromkeys(g for g in value if isinstance(g, str) and g)
    return tuple(groups)[:MAX_GROUPS]


def _kept_tokens(tokens: Mapping[str, Any]) -> dict[str, Any]:
    """What the proxy may need later: the access token, its refresh token and expiry."""
    kept = {
        k: tokens[k]
        for k in ("access_token", "refresh_token", "token_type", "scope")
        if isinstance(tokens.get(k), str)
    }
    if isinstance(tokens.get("expires_in"), int | float):
        kept["expires_at"] = time.time() + float(tokens["expires_in"])
    return kept


def identity_provider(login: LoginConfig, keyring: Keyring) -> IdentityProvider | None:
    """The configured provider's client (its client secret taken from `keyring` at each
    use), or None for local sign-in."""
    if login.provider == "oidc":
        return OidcProvider(login.oidc, keyring)
    if login.provider == "github":
        return GithubProvider(login.github, keyring)
    return None
