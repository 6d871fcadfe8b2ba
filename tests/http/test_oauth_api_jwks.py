"""The JWKS document at `/.well-known/jwks.json` (`jwks_uri` in the metadata): the ring's
public keys only, cacheable for `keys.jwks_max_age`; the same keys after a restart."""

from __future__ import annotations

from tests.support.app import Running, Start

JWKS = "/.well-known/jwks.json"


async def test_the_jwks_document_and_its_headers(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(keys={"jwks_max_age": 120})
    answer = await oauthd.client.call("GET", JWKS)
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "public, max-age=120"
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    [key] = answer.json()["keys"]
    assert key.keys() == {"kty", "crv", "x", "y", "kid", "alg", "use"}  # no "d"
    assert (key["kid"], key["alg"], key["use"], key["crv"]) == ("k1", "ES256", "sig", "P-256")


async def test_rs256_and_the_default_max_age(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(keys={"algorithm": "RS256"})
    answer = await oauthd.client.call("GET", JWKS)
    assert answer.headers["Cache-Control"] == "public, max-age=300"
    [key] = answer.json()["keys"]
    assert key.keys() == {"kty", "n", "e", "kid", "alg", "use"}
    assert key["alg"] == "RS256"


async def test_the_metadata_names_it(oauthd: Running) -> None:
    doc = (await oauthd.client.call("GET", "/.well-known/oauth-authorization-server")).json()
    assert doc["jwks_uri"] == f"{oauthd.config.server.issuer}{JWKS}"


async def test_a_restart_keeps_the_keys(oauthd: Running) -> None:
    before = (await oauthd.client.call("GET", JWKS)).json()
    await oauthd.restart()
    assert (await oauthd.client.call("GET", JWKS)).json() == before
