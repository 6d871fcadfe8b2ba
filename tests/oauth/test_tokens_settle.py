"""`Tokens.settle` (via `AuthServer.drain`) at shutdown: grant-ended listeners still
running get a bounded time to finish, then are cancelled; none outlives the shutdown."""

from __future__ import annotations

import asyncio

from oauthd.model import Grant
from tests.support.protocol import Env


async def end_a_grant(env: Env) -> None:
    issued = await env.code_flow()
    grant_id = issued.tokens.access_token.split(".")[0]
    assert await env.server.tokens.end_grant(grant_id) is not None


async def test_a_quick_listener_finishes(env: Env) -> None:
    finished: list[str] = []

    async def close_sessions(grant: Grant) -> None:
        await asyncio.sleep(0.01)
        finished.append(grant.user)

    env.server.on_grant_ended(close_sessions)
    await end_a_grant(env)
    assert finished == []
    await env.server.tokens.settle(5.0)
    assert len(finished) == 1


async def test_a_slow_listener_is_cancelled_after_the_grace(env: Env) -> None:
    cancelled = asyncio.Event()

    async def hangs(grant: Grant) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    env.server.on_grant_ended(hangs)
    await end_a_grant(env)
    await asyncio.wait_for(env.server.tokens.settle(0.05), timeout=5)
    assert cancelled.is_set()


async def test_nothing_running_returns_at_once(env: Env) -> None:
    await asyncio.wait_for(env.server.drain(), timeout=1)
