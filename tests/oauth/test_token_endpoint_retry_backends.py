"""#11 item 5 on the shared backends: a refresh or code exchange answered 503 because its
write timed out, although the write landed, is safe to retry.

A `PausingProxy` sits in front of Redis (PostgreSQL): it lets the write's transaction
through (`EXEC`, `COMMIT`) and holds the server's answer back, so the store times out and
raises `Unavailable` (HTTP 503) while the server has applied the change. The retry after
the grace window gets tokens, and the session lives (before: the retry was reuse, and the
session or the login was revoked)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from oauthd.clock import FakeClock
from oauthd.store import Store, Unavailable
from tests.support.pausing_proxy import PausingProxy
from tests.support.protocol import Env, build_env
from tests.support.services import service_missing

TIMEOUT = 0.5  # the store's timeout: the held answer is given up on after this


@contextlib.asynccontextmanager
async def redis_through(proxy: PausingProxy, namespace: str) -> AsyncIterator[tuple[Store, bytes]]:
    from oauthd.store.redis import RedisStore
    from tests.support.redis_backend import redis_probe

    if (problem := await redis_probe()) is not None:
        service_missing(problem)
    clock = FakeClock()
    store = RedisStore(
        clock, f"redis://127.0.0.1:{proxy.port}/0", prefix=f"{namespace}:", timeout=TIMEOUT
    )
    try:
        yield store, b"EXEC"
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def postgres_through(
    proxy: PausingProxy, namespace: str
) -> AsyncIterator[tuple[Store, bytes]]:
    from psycopg.conninfo import make_conninfo

    from oauthd.store.postgres import PostgresStore
    from oauthd.store.postgres_schema import migrate
    from tests.support.postgres import (
        DSN,
        create_schema,
        drop_schema,
        postgres_probe,
        schema_dsn,
        schema_name,
    )

    if (problem := await postgres_probe()) is not None:
        service_missing(problem)
    schema = schema_name(namespace)
    await create_schema(schema)
    await migrate(schema_dsn(schema))
    proxied = make_conninfo(DSN, host="127.0.0.1", port=proxy.port)
    store = await PostgresStore.open(schema_dsn(schema, proxied), FakeClock(), op_timeout=TIMEOUT)
    try:
        yield store, b"COMMIT"
    finally:
        await store.close()
        await drop_schema(schema)


BACKENDS = {"redis": redis_through, "postgres": postgres_through}


@pytest.fixture(params=sorted(BACKENDS))
async def proxied(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Env, PausingProxy, bytes]]:
    opener = BACKENDS[request.param]
    target = urlsplit(_server_url(request.param))
    proxy = PausingProxy(target.hostname or "127.0.0.1", target.port or 0)
    await proxy.start()
    namespace = f"oauthd-retry-{tmp_path.name[-12:]}-{id(proxy):x}"
    try:
        async with opener(proxy, namespace) as (store, marker):
            clock = store.clock  # type: ignore[attr-defined]
            yield build_env(tmp_path, store, clock), proxy, marker
    finally:
        await proxy.close()


def _server_url(backend: str) -> str:
    """Where the test's server of `backend` listens (what the proxy forwards to)."""
    if backend == "redis":
        from tests.support.redis_backend import REDIS_URL

        return REDIS_URL
    from psycopg.conninfo import conninfo_to_dict

    from tests.support.postgres import DSN

    parts = conninfo_to_dict(DSN)
    return f"postgresql://{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}"


async def answered_503_but_landed(
    proxy: PausingProxy, marker: bytes, call: Callable[[], Awaitable[Any]]
) -> None:
    proxy.hold_answers_after(marker)
    with pytest.raises(Unavailable):
        await call()
    assert proxy.held == 1, "the write never reached the server: the test is void"


async def test_a_refresh_whose_rotation_landed_after_a_timeout_is_retried_with_success(
    proxied: tuple[Env, PausingProxy, bytes],
) -> None:
    env, proxy, marker = proxied
    issued = await env.code_flow()
    grant_id = issued.tokens.access_token.split(".")[0]
    await answered_503_but_landed(proxy, marker, lambda: env.refresh(issued))
    landed = await env.store.grants.get(grant_id)
    assert landed is not None and landed.rotated_at is not None, "the rotation landed"

    env.clock.advance(env.config.tokens.refresh_grace + 30)
    retried = await env.refresh(issued)
    assert await env.server.verify_bearer(retried.access_token) is not None
    assert (await env.refresh(issued, retried.refresh_token)).access_token


async def test_a_code_exchange_whose_claim_landed_after_a_timeout_is_retried_with_success(
    proxied: tuple[Env, PausingProxy, bytes],
) -> None:
    env, proxy, marker = proxied
    registration = await env.register()
    started = await env.begin(registration.client)
    code = (await env.approved(started))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": started.verifier,
        "redirect_uri": started.pending.redirect_uri,
    }
    await answered_503_but_landed(proxy, marker, lambda: env.token(registration, form))
    claimed = await env.store.codes.get(code.split(".")[0])
    assert claimed is not None and claimed.grant_id, "the claim landed"

    env.clock.advance(env.config.tokens.refresh_grace + 30)
    tokens = await env.token(registration, form)
    assert await env.server.verify_bearer(tokens.access_token) is not None
