"""After `login.encryption_key` changed (docs/operations.md, key rotation), upstream tokens
sealed under the old key cannot be opened: a sign-in in progress and an unredeemed code are
refused like any other stale request, never a 500."""

from __future__ import annotations

import dataclasses
import os

from oauthd import crypto
from tests.support.protocol import RESOURCE, Env, refused


def _keys() -> tuple[crypto.Sealer, crypto.Sealer]:
    return crypto.Sealer(os.urandom(32)), crypto.Sealer(os.urandom(32))


async def test_a_code_sealed_under_the_old_key_is_invalid_grant(env: Env) -> None:
    old, new = _keys()
    registration = await env.register()
    started = await env.begin(registration.client)
    code = (await env.approved(started))["code"]
    key = code.split(".")[0]
    sealed = old.seal(b'{"access_token": "idp"}', key)
    await env.store.codes.update(key, lambda c: dataclasses.replace(c, upstream_tokens=sealed))
    env.server.token_endpoint._sealer = new  # the daemon restarted with a new key
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": started.verifier,
        "redirect_uri": started.pending.redirect_uri,
        "resource": RESOURCE,
    }
    error = await refused(env.token(registration, form))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert "sign in again" in error.description


async def test_a_sign_in_sealed_under_the_old_key_must_start_again(env: Env) -> None:
    old, new = _keys()
    registration = await env.register()
    started = await env.begin(registration.client)
    flow = await env.signed_in(started)
    pending_id = flow.pending.id
    sealed = old.seal(b'{"access_token": "idp"}', pending_id)
    pending = await env.store.pending.update(
        pending_id, lambda p: dataclasses.replace(p, upstream=sealed)
    )
    assert pending is not None
    env.server.authorizer._sealer = new
    error = await refused(env.server.finish(dataclasses.replace(flow, pending=pending), True))
    assert error.error == "invalid_request" and "Start again" in error.description
    assert await env.store.codes.count() == 0
