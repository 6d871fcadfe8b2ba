"""Child process of tests/test_crash.py: writes to a `FileStore` under load until killed.

    crash_writer.py STATE_DIR --durability journal|snapshot --grants N --codes M
                    [--workers W] [--seed S] [--hang-in-snapshot] [--preload]

Worker w owns the keys `g-<i>` and `c-<i>` with i % W == w, so the order of one key's
changes is the order of its lines. Lines on stdout (flushed one by one):

    READY <seq>                                     the store is open
    B <kind> <key> <value>                          a write is about to be made
    A <kind> <key> <value> <seq>                    ... and its awaited call returned
    W                                               a snapshot write starts
    S <seq>                                         a snapshot of seq <= <seq> is installed
    H <temp file name>                              --hang-in-snapshot: stuck mid-write

`<value>` is the record's value after the write (`last_used_at` of a grant, `created_at` of
a code) or `-` when the write removed the record. `<seq>` on an `A` line is the engine's
sequence number right after the call; it is the write's own number with
`durability = "snapshot"`, where a write never suspends.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository, for tests.support

import oauthd.persist.engine as engine_module
import oauthd.persist.snapshot as snapshot_module
from oauthd.clock import SystemClock
from oauthd.store.file import FileStore, make_engine
from tests.support.records import valued_code, valued_grant

OUT_LOCK = threading.Lock()


def say(line: str) -> None:
    with OUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def instrument(hang: bool) -> None:
    """Report snapshot writes; with `hang`, block the first one after its first flush."""
    original = engine_module.write_snapshot

    async def write_snapshot(*args: Any, **kwargs: Any) -> int:
        say("W")
        size = await original(*args, **kwargs)
        say(f"S {kwargs['seq']}")
        return size

    engine_module.write_snapshot = write_snapshot
    if not hang:
        return
    write_all = snapshot_module.write_all
    armed = threading.Event()
    armed.set()

    def hanging_write_all(fd: int, data: bytes) -> None:
        write_all(fd, data)
        if armed.is_set():
            armed.clear()
            os.fsync(fd)  # the partial temp file is really on disk when we are killed
            temps = [n for n in os.listdir(STATE) if n.startswith(".snapshot.json.tmp-")]
            say(f"H {' '.join(temps)}")
            time.sleep(60)

    snapshot_module.write_all = hanging_write_all


class Worker:
    def __init__(self, store: FileStore, keys: list[tuple[str, str]], seed: int) -> None:
        self.store = store
        self.keys = keys
        self.rng = random.Random(seed)
        self.state: dict[tuple[str, str], float | None] = {}
        self.counter = seed * 1_000_000

    async def load(self) -> None:
        for kind, key in self.keys:
            record = await self.store.by_kind[kind].get(key)
            if record is None:
                self.state[(kind, key)] = None
            else:
                value = record.last_used_at if kind == "grants" else record.created_at
                self.state[(kind, key)] = value

    async def run(self) -> None:
        while True:
            kind, key = self.rng.choice(self.keys)
            self.counter += 1
            await self.step(kind, key, float(self.counter))
            await asyncio.sleep(0)  # a snapshot-durability write never suspends by itself

    async def step(self, kind: str, key: str, value: float) -> None:
        current = self.state[(kind, key)]
        table = self.store.by_kind[kind]
        make = valued_grant if kind == "grants" else valued_code
        if current is None:
            op = "put"
        elif kind == "grants":
            op = self.rng.choice(("put", "update", "update", "delete"))
        else:
            op = self.rng.choice(("put", "take", "take"))
        after: float | None = None if op in ("delete", "take") else value
        say(f"B {kind} {key} {'-' if after is None else repr(after)}")
        if op == "put":
            await table.put(make(key, value))
        elif op == "update":
            new = await table.update(key, lambda r: dataclasses.replace(r, last_used_at=value))
            assert new is not None and new.last_used_at == value, new
        elif op == "delete":
            assert await table.delete(key)
        else:
            taken = await table.take(key)
            assert taken is not None and taken.created_at == current, taken
        self.state[(kind, key)] = after
        seq = self.store.engine.seq
        say(f"A {kind} {key} {'-' if after is None else repr(after)} {seq}")


async def preload(store: FileStore, count: int) -> None:
    """Put grants g-0..count-1 with value 0, then close (final snapshot) and say DONE."""
    limit = asyncio.Semaphore(64)

    async def put(i: int) -> None:
        async with limit:
            await store.grants.put(valued_grant(f"g-{i:05d}", 0.0))

    await asyncio.gather(*(put(i) for i in range(count)))
    await store.close()
    say("DONE")


async def main() -> None:
    global STATE
    parser = argparse.ArgumentParser()
    parser.add_argument("state_dir")
    parser.add_argument("--durability", choices=("journal", "snapshot"), default="journal")
    parser.add_argument("--grants", type=int, default=100)
    parser.add_argument("--codes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hang-in-snapshot", action="store_true")
    parser.add_argument("--preload", action="store_true", help="put every grant, stop cleanly")
    args = parser.parse_args()
    STATE = Path(args.state_dir)
    instrument(args.hang_in_snapshot)
    engine = make_engine(
        STATE,
        journaled=args.durability == "journal",
        interval=1.0,
        debounce=0.02,
        max_wait=0.1,
    )
    store = await FileStore.open(engine, SystemClock())
    say(f"READY {engine.seq}")
    if args.preload:
        await preload(store, args.grants)
        return
    keys = [("grants", f"g-{i:05d}") for i in range(args.grants)]
    keys += [("codes", f"c-{i:05d}") for i in range(args.codes)]
    workers = [
        Worker(store, keys[w :: args.workers], args.seed * 100 + w + 1) for w in range(args.workers)
    ]
    for worker in workers:
        await worker.load()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    finally:  # not reached when killed; a normal end would be a bug in the test
        say("TIMEOUT")


STATE = Path()

if __name__ == "__main__":
    asyncio.run(main())
