"""Child process of tests/e2e/test_audit_crash.py: audited writes to a `FileStore` (journal
durability) from several tasks until killed.

    audit_crash_writer.py STATE_DIR --seed S

Each write carries an audit event whose `op` is a unique id; `A <op>` is printed once the
awaited call returned (the acknowledgement). Mixed: put, update and delete of grants with
`audit=`, and audit-only appends. `READY` once the store is open.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository, for tests.support

from oauthd.audit import AuditEvent
from oauthd.clock import SystemClock
from oauthd.model import Grant
from oauthd.store.file import FileStore, make_engine
from tests.support.records import valued_grant


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def touched(value: float) -> Callable[[Grant], Grant]:
    return lambda g: dataclasses.replace(g, last_used_at=value)


async def worker(store: FileStore, name: str, rng: random.Random) -> None:
    count = 0
    while True:
        count += 1
        op = f"{name}-{count}"
        event = AuditEvent("test_write", user=name, detail={"op": op})
        key = f"{name}-g{rng.randrange(8)}"
        choice = rng.random()
        if choice < 0.25:
            await store.audit.append(event)
        elif choice < 0.5 and await store.grants.get(key) is not None:
            assert await store.grants.delete(key, audit=event)
        elif choice < 0.75 and await store.grants.get(key) is not None:
            await store.grants.update(key, touched(float(count)), audit=event)
        else:
            await store.grants.put(valued_grant(key, float(count)), audit=event)
        say(f"A {op}")
        await asyncio.sleep(0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("state_dir")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    engine = make_engine(
        Path(args.state_dir), journaled=True, interval=0.5, debounce=0.02, max_wait=0.1
    )
    store = await FileStore.open(engine, SystemClock())
    say("READY")
    rng = random.Random(args.seed)
    names = [f"s{args.seed}w{i}" for i in range(6)]
    tasks = [worker(store, n, random.Random(rng.random())) for n in names]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    say("TIMEOUT")


if __name__ == "__main__":
    asyncio.run(main())
