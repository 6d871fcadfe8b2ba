"""#11 item 5: a code exchange or refresh answered 503 because a backend write timed out,
although the write landed (Redis/PostgreSQL: the command reached the server, its answer did
not come back in time), is safe to retry: the retry gets tokens and nobody's session ends.

The fault is deterministic here: the table method runs, then raises `Unavailable`, as a
backend call that timed out after the server applied it does. `tests/store/test_redis.py`
and `tests/store/test_postgres.py` show the same through a pausing TCP proxy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from oauthd.store import Unavailable
from tests.support.protocol import Env, Issued, Started, refused


def lands_then_times_out(monkeypatch: pytest.MonkeyPatch, table: Any, method: str) -> list[str]:
    """The next call of `table.method` is applied, then raises `Unavailable` (once)."""
    real: Callable[..., Awaitable[Any]] = getattr(table, method)
    fired: list[str] = []

    async def call(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        if not fired:
            fired.append(method)
            raise Unavailable("redis: no answer within 2s")
        return result

    monkeypatch.setattr(table, method, call)
    return fired


def _form(code: str, started: Started) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": started.verifier,
        "redirect_uri": started.pending.redirect_uri,
    }


async def _alive(env: Env, access_token: str) -> bool:
    return await env.server.verify_bearer(access_token) is not None


@pytest.mark.parametrize(("kind", "method"), [("codes", "update"), ("grants", "add")])
async def test_a_code_exchange_whose_write_landed_is_retried_with_success(
    env: Env, monkeypatch: pytest.MonkeyPatch, kind: str, method: str
) -> None:
    """The claim of the code (or the grant's creation) reached the backend, the answer did
    not: the client got a 503 and retries well after the grace window."""
    registration = await env.register()
    started = await env.begin(registration.client)
    code = (await env.approved(started))["code"]
    fired = lands_then_times_out(monkeypatch, getattr(env.store, kind), method)
    with pytest.raises(Unavailable):
        await env.token(registration, _form(code, started))
    assert fired
    env.clock.advance(env.config.tokens.refresh_grace + 30)

    tokens = await env.token(registration, _form(code, started))
    assert await _alive(env, tokens.access_token)
    issued = Issued(registration, started.verifier, started.pending.redirect_uri, tokens, {})
    assert (await env.refresh(issued)).access_token  # the session goes on
    if kind == "codes":  # the claim landed: the retry re-issues the grant the code names
        assert await env.store.grants.count() == 1
    # (a grant whose creation landed unclaimed is an orphan nobody holds a token of; it
    # expires with its refresh lifetime)


async def test_a_retried_exchange_voids_the_first_pair_and_presenting_it_ends_the_family(
    env: Env,
) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    code = (await env.approved(started))["code"]
    first = await env.token(registration, _form(code, started))  # answer lost
    second = await env.token(registration, _form(code, started))
    assert second.access_token.split(".")[0] == first.access_token.split(".")[0]
    assert not await _alive(env, first.access_token)
    issued = Issued(registration, started.verifier, started.pending.redirect_uri, first, {})
    error = await refused(env.refresh(issued))  # the voided refresh token: a second holder
    assert "the session is revoked" in error.description
    assert not await _alive(env, second.access_token)


async def test_a_code_whose_grant_was_revoked_is_never_a_retry(env: Env) -> None:
    """The grant is written before the code is claimed for it, so a claimed code whose grant
    is gone means the grant was ended: replaying the code must not bring it back."""
    registration = await env.register()
    started = await env.begin(registration.client)
    code = (await env.approved(started))["code"]
    tokens = await env.token(registration, _form(code, started))
    grant_id = tokens.access_token.split(".")[0]
    assert await env.server.tokens.revoke_grant(grant_id, by="account") is not None
    error = await refused(env.token(registration, _form(code, started)))
    assert error.error == "invalid_grant"
    assert await env.store.grants.get(grant_id) is None
    assert await env.store.grants.count() == 0


async def test_a_refresh_whose_rotation_landed_is_retried_with_success(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await env.code_flow()
    lands_then_times_out(monkeypatch, env.store.grants, "update")
    with pytest.raises(Unavailable):
        await env.refresh(issued)
    env.clock.advance(env.config.tokens.refresh_grace + 30)
    retried = await env.refresh(issued)
    assert await _alive(env, retried.access_token)
    assert (await env.refresh(issued, retried.refresh_token)).access_token
