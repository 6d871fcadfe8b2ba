"""oauth/operator_clients.py: what `oauthd clients add` may create."""

from __future__ import annotations

from pathlib import Path

import pytest

from oauthd.oauth import ClientRefused, NewClient
from oauthd.oauth.assertions import JWT_BEARER
from tests.support.jwts import Signer
from tests.support.protocol import FILES, SCOPES, Env, build_env, two_resources

KEYS = Signer.rsa()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return build_env(tmp_path, resources=two_resources)


async def test_a_secret_client(env: Env) -> None:
    made = await env.server.add_client(
        NewClient("ci", ("client_credentials", JWT_BEARER), "client_secret_post", resource=FILES)
    )
    client = made.client
    assert made.secret and client.secret_hash and client.source == "admin"
    assert client.expires_at is None and client.resource == FILES
    assert client.scope == " ".join(SCOPES)  # no --scope: every scope offered
    assert await env.store.clients.get(client.client_id) == client
    # the registry's hygiene leaves it alone (it sweeps "dcr" registrations only)
    env.clock.advance(400 * 86400)
    assert await env.server.remove_idle_clients() == 0
    assert await env.store.clients.get(client.client_id) is not None


async def test_a_key_client(env: Env) -> None:
    made = await env.server.add_client(
        NewClient(
            "robot",
            ("client_credentials",),
            "private_key_jwt",
            jwks=KEYS.jwks_text(),
            scopes=("mcp",),
        )
    )
    assert made.secret is None and made.client.secret_hash is None
    assert made.client.jwks is not None and made.client.scope == "mcp"


REFUSED = [
    ("no name", NewClient(" ", ("client_credentials",), "client_secret_basic"), "name"),
    ("no grant", NewClient("x", (), "client_secret_basic"), "grant type"),
    (
        "a person's grant",
        NewClient("x", ("authorization_code",), "client_secret_basic"),
        "authorization_code",
    ),
    ("public", NewClient("x", ("client_credentials",), "none"), "confidential"),
    (
        "keys without pkjwt",
        NewClient("x", ("client_credentials",), "client_secret_basic", jwks="{}"),
        "takes no keys",
    ),
    (
        "pkjwt without keys",
        NewClient("x", ("client_credentials",), "private_key_jwt"),
        "exactly one",
    ),
    (
        "both keys",
        NewClient(
            "x",
            ("client_credentials",),
            "private_key_jwt",
            jwks="{}",
            jwks_uri="https://k.example/j",
        ),
        "exactly one",
    ),
    ("not JSON", NewClient("x", ("client_credentials",), "private_key_jwt", jwks="{"), "not JSON"),
    (
        "a private key",
        NewClient(
            "x",
            ("client_credentials",),
            "private_key_jwt",
            jwks=str(KEYS.private_jwks()).replace("'", '"'),
        ),
        "private",
    ),
    (
        "http jwks_uri",
        NewClient("x", ("client_credentials",), "private_key_jwt", jwks_uri="http://k.example/j"),
        "https",
    ),
    (
        "unknown scope",
        NewClient("x", ("client_credentials",), "client_secret_basic", scopes=("admin",)),
        "not offered",
    ),
    (
        "unknown resource",
        NewClient("x", ("client_credentials",), "client_secret_basic", resource="/nope"),
        "unknown resource",
    ),
]


@pytest.mark.parametrize(("spec", "says"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_refused_with_the_reason(env: Env, spec: NewClient, says: str) -> None:
    with pytest.raises(ClientRefused, match=says):
        await env.server.add_client(spec)
    assert [c async for c in env.store.clients.scan()] == []
