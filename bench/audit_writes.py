"""The cost of audited writes on the shared backends: store writes/s with 64 concurrent
writers, each write without `audit=` and with it (the record in the same atomic step, the
chain's sealing serialised per instance: oauthd/store/audit.py).

Per backend and per write kind (`add`: Redis one Lua script, PostgreSQL one CTE; `update`:
a WATCH/MULTI loop, a transaction), one unmeasured warm-up, then ROUNDS rounds of
`--seconds` each, alternating unaudited and audited; the median writes/s is printed as a
Markdown table with the ratio audited / unaudited.

Usage:
    .venv/bin/python bench/audit_writes.py                        # both backends
    .venv/bin/python bench/audit_writes.py --backends redis --seconds 3

Needs a Redis at OAUTHD_TEST_REDIS_URL and a PostgreSQL at OAUTHD_TEST_POSTGRES_DSN (the
tests' servers, default 127.0.0.1); it writes under a unique prefix / schema and removes
it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.support

from oauthd.audit import AuditEvent
from oauthd.clock import SystemClock
from oauthd.store import Store
from oauthd.store.audit import TrailSettings
from tests.support.records import make_grant

WRITERS = 64
ROUNDS = 3
SERIAL = itertools.count()  # grant ids, unique over the run
EVENT = AuditEvent("token_refreshed", user="bench", client_id="bench", grant="abcd1234")


async def open_redis(namespace: str) -> tuple[Store, Callable[[], Awaitable[None]]]:
    from oauthd.store.redis import RedisStore
    from tests.support.redis_backend import REDIS_URL, redis_cleanup
    from tests.support.services import StateRef

    store = RedisStore(
        SystemClock(),
        REDIS_URL,
        prefix=f"{namespace}:",
        pool_size=WRITERS,
        timeout=10,
        audit=TrailSettings("bench"),
    )
    return store, lambda: redis_cleanup(StateRef(Path("."), namespace))


async def open_postgres(namespace: str) -> tuple[Store, Callable[[], Awaitable[None]]]:
    from oauthd.store.postgres import PostgresStore
    from oauthd.store.postgres_schema import migrate
    from tests.support.postgres import create_schema, drop_schema, schema_dsn, schema_name

    schema = schema_name(namespace)
    await create_schema(schema)
    await migrate(schema_dsn(schema))
    store = await PostgresStore.open(
        schema_dsn(schema),
        SystemClock(),
        pool_size=WRITERS,
        op_timeout=10,
        audit=TrailSettings("bench"),
    )
    return store, lambda: drop_schema(schema)


async def rate(store: Store, kind: str, audit: AuditEvent | None, seconds: float) -> float:
    """Writes/s of WRITERS concurrent writers for `seconds`."""
    done = 0
    stop = time.monotonic() + seconds
    keys = [make_grant(expires_at=None) for _ in range(WRITERS)]
    if kind == "update":
        for grant in keys:
            await store.grants.put(grant)

    def bump(grant: Any) -> Any:
        return dataclasses.replace(grant, last_used_at=grant.last_used_at + 1)

    async def writer(number: int) -> None:
        nonlocal done
        while time.monotonic() < stop:
            if kind == "add":
                await store.grants.add(make_grant(id=f"b-{next(SERIAL)}"), audit=audit)
            else:
                await store.grants.update(keys[number].key, bump, audit=audit)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    return done / (time.monotonic() - started)


async def bench(backend: str, seconds: float) -> list[str]:
    opener = open_redis if backend == "redis" else open_postgres
    store, cleanup = await opener(f"oauthd-bench-{uuid.uuid4().hex}")
    rows = []
    try:
        for kind in ("add", "update"):
            await rate(store, kind, EVENT, 1.0)  # warm-up
            plain, audited = [], []
            for _ in range(ROUNDS):
                plain.append(await rate(store, kind, None, seconds))
                audited.append(await rate(store, kind, EVENT, seconds))
            off, on = statistics.median(plain), statistics.median(audited)
            rows.append(f"| {backend} | {kind} | {off:,.0f} | {on:,.0f} | {on / off:.2f} |")
            print(rows[-1], file=sys.stderr)
    finally:
        await store.close()
        await cleanup()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="redis,postgres")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    rows = [
        "| backend | write | unaudited writes/s | audited writes/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for backend in args.backends.split(","):
        rows.extend(await bench(backend, args.seconds))
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
