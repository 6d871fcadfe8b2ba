"""Child process of tests/e2e/test_audit_crash_shared.py: audited writes to a shared store until
killed.

    audit_writer.py redis|postgres WHERE CHAIN RUN [--workers W]

WHERE is the Redis key prefix or the PostgreSQL DSN (with its search_path). Each worker
adds grants, updates and takes some of them again, each write with `audit=` an event
whose `detail.id` names it, and prints a line once the write's awaited call returned:

    READY                  the store is open
    A <id>                 the write <id> was acknowledged (its record must exist)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository, for tests.support

from oauthd.audit import AuditEvent
from oauthd.clock import SystemClock
from oauthd.store import Store
from oauthd.store.audit import TrailSettings
from tests.support.records import make_grant


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def open_store(backend: str, where: str, chain: str) -> Store:
    settings = TrailSettings(chain)
    if backend == "redis":
        from oauthd.store.redis import RedisStore
        from tests.support.redis_backend import REDIS_URL

        return RedisStore(SystemClock(), REDIS_URL, prefix=where, timeout=5.0, audit=settings)
    from oauthd.store.postgres import PostgresStore

    return await PostgresStore.open(where, SystemClock(), op_timeout=5.0, audit=settings)


def event(write_id: str) -> AuditEvent:
    return AuditEvent("test_write", detail={"id": write_id})


async def worker(store: Store, run: str, number: int) -> None:
    count = 0
    while True:
        count += 1
        grant = make_grant(id=f"{run}-{number}-{count}", expires_at=None)
        ident = f"{run}-{number}-{count}"
        await store.grants.add(grant, audit=event(f"{ident}-add"))
        say(f"A {ident}-add")
        if count % 2 == 0:
            bumped = await store.grants.update(
                grant.key,
                lambda g: dataclasses.replace(g, last_used_at=(g.last_used_at or 0) + 1),
                audit=event(f"{ident}-update"),
            )
            assert bumped is not None
            say(f"A {ident}-update")
        if count % 3 == 0:
            assert await store.grants.take(grant.key, audit=event(f"{ident}-take")) is not None
            say(f"A {ident}-take")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("backend", choices=("redis", "postgres"))
    parser.add_argument("where")
    parser.add_argument("chain")
    parser.add_argument("run")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    store = await open_store(args.backend, args.where, args.chain)
    say("READY")
    await asyncio.gather(*(worker(store, args.run, n) for n in range(args.workers)))


if __name__ == "__main__":
    asyncio.run(main())
