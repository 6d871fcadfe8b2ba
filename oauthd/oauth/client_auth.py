"""Client authentication at the token, revocation and device endpoints (RFC 6749 s2.3):
a client secret (HTTP Basic or the form) or a signed JWT, `private_key_jwt` (RFC 7523
s2.2, as updated by RFC 7523bis).

A client authenticates with the kind of credential it registered: a secret client with
its secret (Basic or the form, either one: both prove the same secret), a
`private_key_jwt` client with an assertion signed by a key of its registered `jwks` or
`jwks_uri`, a public client with nothing. Every refusal is `invalid_client` and is logged
with its own reason; an assertion's refusal is counted too
(`oauthd_assertions_refused_total{kind="client_assertion"}`).

An assertion must say `iss` = `sub` = the client id, `aud` = the issuer (or the token
endpoint's URL, which RFC 7523 allowed and clients still send), expire at most
MAX_LIFETIME from now, and carry a `jti` that is accepted once (`JtiLedger`: across
restarts and every instance of a shared backend). Its signature is checked before any
claim is believed and before its `jti` is noted, so a forged assertion burns no `jti`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

import orjson
from joserfc.jwk import KeySet

from oauthd import crypto
from oauthd.clock import Clock
from oauthd.metrics import Metrics
from oauthd.model import Client
from oauthd.oauth.assertions import (
    CLIENT_ASSERTION_TYPE,
    AssertionRefused,
    Expectations,
    JtiLedger,
    KeySetSource,
    KeysUnavailable,
    Refusal,
    import_key_set,
    peek,
    verify,
)
from oauthd.oauth.errors import invalid_client, invalid_request
from oauthd.store import Store

log = logging.getLogger("oauthd.clients")

PRIVATE_KEY_JWT = "private_key_jwt"
SECRET_METHODS = frozenset({"client_secret_basic", "client_secret_post"})
MAX_LIFETIME = 300.0  # seconds an assertion may live: RFC 7523bis asks for a short one
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

Lookup = Callable[[str], Awaitable[Client | None]]
Used = Callable[[Client], Awaitable[Client | None]]


class ClientKeySource(KeySetSource, Protocol):
    """The JWKS fetcher as client authentication uses it: a client's `jwks_uri` host is
    permitted when the client uses it (only an operator can register one)."""

    def permit(self, url: str) -> None: ...


@dataclass(slots=True, frozen=True)
class ClientCredentials:
    """How a client identified itself at the token, revoke or device endpoint.
    `client_id` is "" for an assertion sent without one (its `sub` names the client)."""

    client_id: str
    secret: str | None
    method: str  # "client_secret_basic" | "client_secret_post" | "private_key_jwt" | "none"
    assertion: str | None = None
    assertion_type: str | None = None


def credentials_from(
    form: Mapping[str, str], authorization: str | None
) -> ClientCredentials | None:
    """Client credentials from an HTTP Basic header, a client assertion or the form (RFC
    6749 s2.3.1, RFC 7521 s4.2); more than one method at once is `invalid_request`."""
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    basic = scheme.lower() == "basic"
    if "client_assertion" in form or "client_assertion_type" in form:
        if basic or "client_secret" in form:
            raise invalid_request("use one client authentication method, not several")
        return ClientCredentials(
            form.get("client_id", ""),
            None,
            PRIVATE_KEY_JWT,
            form.get("client_assertion", ""),
            form.get("client_assertion_type", ""),
        )
    if basic:  # a bare "Basic" is an attempt too: it gets the challenge
        return _basic(form, encoded)
    form_id = form.get("client_id")
    if not form_id:
        return None
    form_secret = form.get("client_secret")
    if form_secret is not None:
        return ClientCredentials(form_id, form_secret, "client_secret_post")
    return ClientCredentials(form_id, None, "none")


def _basic(form: Mapping[str, str], encoded: str) -> ClientCredentials:
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_client("malformed HTTP Basic credentials", challenge=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or ("client_id" in form and form["client_id"] != unquote(client_id)):
        raise invalid_client("malformed HTTP Basic credentials", challenge=True)
    return ClientCredentials(unquote(client_id), unquote(secret), "client_secret_basic")


async def check_introspection_client(
    credentials: ClientCredentials | None, client_id: str, secret: str | None
) -> None:
    """`invalid_client` unless `credentials` are the introspection client configured in
    [introspection] (a client id and a secret, no registered client)."""
    if (
        credentials is None
        or not client_id
        or secret is None
        or credentials.secret is None
        or not crypto.texts_match(credentials.client_id, client_id)
        or not crypto.texts_match(credentials.secret, secret)
    ):
        raise invalid_client(
            "introspection needs the client credential configured in [introspection]",
            challenge=credentials is not None and credentials.method == "client_secret_basic",
        )


def registered_jwks(document: object) -> str:
    """A client's JWKS as registered (JSON text): public signing keys only. ValueError
    saying why not: not a JWKS, a key that cannot be read, or a private key (refused, not
    stripped: whoever sent it has leaked it, and should make a new one)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS must be a JSON object with a "keys" array')
    for key in document["keys"]:
        if isinstance(key, dict) and _PRIVATE_MEMBERS & key.keys():
            raise ValueError(
                f"the JWKS holds a private or symmetric key (kid {key.get('kid')!r}): "
                "register the public keys only"
            )
    try:
        import_key_set(document)
    except KeysUnavailable as exc:
        raise ValueError(str(exc)) from None
    return orjson.dumps(document).decode()


class ClientAuthenticator:
    """`lookup`: the registered client (or metadata document) of an id; `used`: notes a
    client's use once it proved who it is (None: it was removed meanwhile); `keys`: where
    the keys of clients registered with a `jwks_uri` come from (None: such clients cannot
    authenticate)."""

    def __init__(
        self,
        issuer: str,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        lookup: Lookup,
        used: Used,
        keys: ClientKeySource | None = None,
    ) -> None:
        self._expect = Expectations(frozenset({issuer, f"{issuer}/token"}), MAX_LIFETIME)
        self._ledger = JtiLedger(store, clock)
        self._clock = clock
        self._metrics = metrics
        self._lookup = lookup
        self._used = used
        self._keys = keys

    async def authenticate(self, credentials: ClientCredentials | None) -> Client:
        """The client, authenticated as it registered; `invalid_client` otherwise."""
        if credentials is None:
            raise invalid_client("client authentication is required (client_id)")
        if credentials.method == PRIVATE_KEY_JWT:
            client = await self._by_assertion(credentials)
        else:
            client = await self._by_secret(credentials)
        used = await self._used(client)  # only once it proved who it is
        if used is None:
            raise self._refused(credentials, "unknown_client", "unknown client_id: register again")
        return used

    # -- secrets -------------------------------------------------------------------------------

    async def _by_secret(self, credentials: ClientCredentials) -> Client:
        client = await self._lookup(credentials.client_id)
        if client is None:
            raise self._refused(credentials, "unknown_client", "unknown client_id: register again")
        method = client.token_endpoint_auth_method
        if method == "none":
            if credentials.secret:
                raise self._refused(
                    credentials, "wrong_method", "this client is public: send no client secret"
                )
            return client
        if method == PRIVATE_KEY_JWT:
            raise self._refused(
                credentials,
                "wrong_method",
                "this client authenticates with private_key_jwt (a client_assertion)",
            )
        if credentials.secret is None or not crypto.secret_matches(
            credentials.secret, client.secret_hash
        ):
            raise self._refused(credentials, "bad_secret", "client authentication failed")
        return client

    def _refused(self, credentials: ClientCredentials, reason: str, description: str) -> Exception:
        log.info(
            "client authentication refused",
            extra={
                "event": "token.client_auth_refused",
                "reason": reason,
                "client_id": credentials.client_id[:200],
                "auth_method": credentials.method,
            },
        )
        return invalid_client(description, challenge=credentials.method == "client_secret_basic")

    # -- assertions ----------------------------------------------------------------------------

    async def _by_assertion(self, credentials: ClientCredentials) -> Client:
        client_id = credentials.client_id
        try:
            if credentials.assertion_type != CLIENT_ASSERTION_TYPE:
                raise AssertionRefused(
                    Refusal.MALFORMED, f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}"
                )
            unverified = peek(credentials.assertion or "")
            client_id = client_id or str(unverified.claims.get("sub") or "")
            client = await self._assertion_client(client_id)
            keys = await self._key_set(client, unverified.kid)
            checked = verify(credentials.assertion or "", keys, self._expect, self._clock.now())
            if checked.issuer != client_id or checked.subject != client_id:
                raise AssertionRefused(
                    Refusal.CLIENT_MISMATCH, "the assertion's iss and sub must be the client_id"
                )
            if checked.jti is None:
                raise AssertionRefused(Refusal.MISSING_CLAIM, "the assertion has no jti claim")
            await self._ledger.claim(client_id, checked.jti, checked.expires_at)
        except AssertionRefused as exc:
            raise self._assertion_refused(client_id, exc) from None
        return client

    async def _assertion_client(self, client_id: str) -> Client:
        if not client_id:
            raise AssertionRefused(Refusal.MISSING_CLAIM, "the assertion has no sub claim")
        client = await self._lookup(client_id)
        if client is None:
            raise AssertionRefused(Refusal.UNKNOWN_ISSUER, "unknown client_id: register again")
        if client.token_endpoint_auth_method != PRIVATE_KEY_JWT:
            raise AssertionRefused(
                Refusal.UNKNOWN_KEY,
                f"this client has no registered keys: it authenticates with "
                f"{client.token_endpoint_auth_method}",
            )
        return client

    async def _key_set(self, client: Client, kid: str | None) -> KeySet:
        try:
            if client.jwks is not None:
                return import_key_set(orjson.loads(client.jwks))
            if client.jwks_uri is None or self._keys is None:
                raise KeysUnavailable("this client has no usable keys")
            self._keys.permit(client.jwks_uri)
            return await self._keys.key_set(client.jwks_uri, kid=kid)
        except (KeysUnavailable, orjson.JSONDecodeError) as exc:
            raise AssertionRefused(
                Refusal.KEYS_UNAVAILABLE, f"the client's keys cannot be had ({exc})"
            ) from None

    def _assertion_refused(self, client_id: str, exc: AssertionRefused) -> Exception:
        self._metrics.assertion_refused("client_assertion", exc.reason)
        log.info(
            "client assertion refused",
            extra={
                "event": "token.client_assertion_refused",
                "reason": exc.reason.value,
                "client_id": client_id[:200],
                "description": exc.description,
            },
        )
        return invalid_client(exc.description)
