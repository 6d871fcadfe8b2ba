"""oauth/client_auth.py: how clients authenticate at /token (and /revoke): secrets, and
private_key_jwt (RFC 7523 s2.2 with 7523bis); every refusal `invalid_client`, logged and
counted with its own reason."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import KeySet

from oauthd.model import Client
from oauthd.oauth import NewClient
from oauthd.oauth.assertions import import_key_set
from oauthd.oauth.client_auth import ClientCredentials, credentials_from, registered_jwks
from oauthd.oauth.errors import OAuthError
from tests.support.jwts import CLIENT_ASSERTION_TYPE, Signer, assertion_claims
from tests.support.protocol import ISSUER, Env, build_env, refused

SIGNER = Signer.rsa()
JWKS_URI = "https://keys.example.net/client.jwks"


class FakeKeys:
    """A `ClientKeySource` serving one JWKS at JWKS_URI; notes what was permitted."""

    def __init__(self, signer: Signer) -> None:
        self.keys = import_key_set(signer.jwks())
        self.permitted: list[str] = []

    def permit(self, url: str) -> None:
        self.permitted.append(url)

    async def key_set(self, url: str, *, kid: str | None = None) -> KeySet:
        assert url in self.permitted, "fetched before it was permitted"
        return self.keys

    async def discovered_jwks_uri(self, issuer: str) -> str:
        raise AssertionError("not used for clients")


async def jwt_client(env: Env, signer: Signer = SIGNER, **changes: Any) -> Client:
    spec = NewClient(
        "robot", ("client_credentials",), "private_key_jwt", jwks=signer.jwks_text(), **changes
    )
    return (await env.server.add_client(spec)).client


def form(assertion: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
        **extra,
    }


async def token(env: Env, body: dict[str, str]) -> dict[str, Any]:
    result = await env.server.token(body, credentials_from(body, None))
    return result.body()


def signed(env: Env, client: Client, signer: Signer = SIGNER, **changes: Any) -> str:
    return signer.sign(assertion_claims(client.client_id, ISSUER, env.clock.now(), **changes))


async def test_a_signed_assertion_authenticates(env: Env) -> None:
    client = await jwt_client(env)
    body = await token(env, form(signed(env, client)))
    assert body["token_type"] == "Bearer" and "refresh_token" not in body
    # the token endpoint's URL is accepted as the audience, and client_id may be sent too
    endpoint = signed(env, client, aud=f"{ISSUER}/token")
    assert await token(env, form(endpoint, client_id=client.client_id))


async def test_ec_keys_and_a_jwks_uri(tmp_path: Path) -> None:
    signer = Signer.ec()
    keys = FakeKeys(signer)
    env = build_env(tmp_path, jwks=keys)
    spec = NewClient("robot", ("client_credentials",), "private_key_jwt", jwks_uri=JWKS_URI)
    client = (await env.server.add_client(spec)).client
    assert keys.permitted == [JWKS_URI]
    assert await token(env, form(signed(env, client, signer)))


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("wrong audience", {"aud": "https://elsewhere.example"}, "wrong_audience"),
    ("expired", {"iat": -400, "exp": -100}, "expired"),
    ("too long-lived", {"exp": 3600}, "lifetime_too_long"),
    ("iss is not the client", {"iss": "someone-else"}, "client_mismatch"),
    ("no jti", {"jti": None}, "missing_claim"),
]


@pytest.mark.parametrize(
    ("changes", "reason"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
async def test_bad_assertions_are_invalid_client(
    env: Env, changes: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await jwt_client(env)
    now = int(env.clock.now())
    timed = {k: now + v if k in ("iat", "exp") else v for k, v in changes.items()}
    caplog.set_level(logging.INFO, "oauthd.clients")
    error = await refused(token(env, form(signed(env, client, **timed))))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert "WWW-Authenticate" not in error.headers
    line = next(
        r for r in caplog.records if getattr(r, "event", "") == "token.client_assertion_refused"
    )
    assert line.reason == reason  # type: ignore[attr-defined]
    assert (
        env.server.metrics._assertions_refused.labels("client_assertion", reason)._value.get() == 1
    )


async def test_sub_must_be_the_client_id_sent(env: Env) -> None:
    client = await jwt_client(env)
    other = await jwt_client(env)
    error = await refused(token(env, form(signed(env, other), client_id=client.client_id)))
    assert error.error == "invalid_client" and "iss and sub" in error.description


async def test_a_bad_signature_and_an_unknown_key(env: Env) -> None:
    client = await jwt_client(env)
    stranger = Signer.rsa()
    stranger.kid = SIGNER.kid  # claims to be the registered key
    error = await refused(token(env, form(signed(env, client, stranger))))
    assert error.error == "invalid_client" and "signature" in error.description
    error = await refused(token(env, form(signed(env, client, Signer.rsa()))))
    assert error.error == "invalid_client" and "not known" in error.description


async def test_a_jti_is_accepted_once(env: Env) -> None:
    client = await jwt_client(env)
    assertion = signed(env, client)
    await token(env, form(assertion))
    error = await refused(token(env, form(assertion)))
    assert error.error == "invalid_client" and "used before" in error.description


async def test_the_client_uses_the_method_it_registered(env: Env) -> None:
    jwt = await jwt_client(env)
    secret_client = await env.server.add_client(
        NewClient("s", ("client_credentials",), "client_secret_basic")
    )
    # a private_key_jwt client sending a secret
    sent = ClientCredentials(jwt.client_id, "guess", "client_secret_post")
    error = await refused(env.server.token({"grant_type": "client_credentials"}, sent))
    assert error.error == "invalid_client" and "private_key_jwt" in error.description
    # a secret client sending an assertion
    error = await refused(token(env, form(signed(env, secret_client.client))))
    assert error.error == "invalid_client" and "no registered keys" in error.description
    # unknown client, wrong assertion type
    ghost = dataclasses.replace(jwt, client_id="ghost")
    assert (await refused(token(env, form(signed(env, ghost))))).error == "invalid_client"
    wrong_type = {**form(signed(env, jwt)), "client_assertion_type": "urn:x"}
    assert (await refused(token(env, wrong_type))).error == "invalid_client"


async def test_secrets_still_work_and_fail_as_before(env: Env) -> None:
    made = await env.server.add_client(
        NewClient("s", ("client_credentials",), "client_secret_basic")
    )
    assert made.secret is not None
    good = ClientCredentials(made.client.client_id, made.secret, "client_secret_basic")
    assert await env.server.token({"grant_type": "client_credentials"}, good)
    posted = ClientCredentials(made.client.client_id, made.secret, "client_secret_post")
    assert await env.server.token({"grant_type": "client_credentials"}, posted)
    wrong = ClientCredentials(made.client.client_id, "wrong", "client_secret_basic")
    error = await refused(env.server.token({"grant_type": "client_credentials"}, wrong))
    assert error.error == "invalid_client" and error.headers["WWW-Authenticate"].startswith("Basic")


def test_one_method_at_a_time() -> None:
    both = {"client_assertion": "x", "client_assertion_type": CLIENT_ASSERTION_TYPE}
    with pytest.raises(OAuthError) as caught:
        credentials_from({**both, "client_secret": "s"}, None)
    assert caught.value.error == "invalid_request"
    with pytest.raises(OAuthError):
        credentials_from(both, "Basic YTpi")
    creds = credentials_from(both, None)
    assert creds is not None and (creds.method, creds.client_id) == ("private_key_jwt", "")


def test_registered_keys_are_public() -> None:
    assert '"kty":"RSA"' in registered_jwks(SIGNER.jwks())
    with pytest.raises(ValueError, match="private"):
        registered_jwks(SIGNER.private_jwks())
    with pytest.raises(ValueError, match="keys"):
        registered_jwks({"keys": 1})


async def test_revocation_accepts_an_assertion(env: Env) -> None:
    client = await jwt_client(env)
    body = await token(env, form(signed(env, client)))
    revoke = {
        "token": body["access_token"],
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": signed(env, client),
    }
    await env.server.revoke(revoke, credentials_from(revoke, None))
    assert await env.server.verify_bearer(body["access_token"]) is None
