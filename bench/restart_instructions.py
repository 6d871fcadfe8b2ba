"""Restart against its floor in instructions: what `FileStore.open` executes beyond reading
the snapshot and parsing its JSON, counted by valgrind's callgrind, so the ratio does not
depend on what else the machine is doing (its speed varies 2x from day to day, more when
other work shares its two cores).

It writes a state dir of N grants (`bench/snapshot.py --child-save`), then runs three
fresh processes under `valgrind --tool=callgrind`, each leaving with `os._exit` right
after its step: `base` (imports, an empty store opened), `floor` (the same, then the
snapshot read and each line's JSON parsed, no record built: `snapshot.parse_floor`) and
`open` (the same, then `FileStore.open` on the state dir). The floor and the restart are
their process's count minus `base`'s.

Usage:
    .venv/bin/python bench/restart_instructions.py            # 20k grants (about 2 min)
    .venv/bin/python bench/restart_instructions.py --grants 50000

Needs valgrind (Debian: apt-get install valgrind). Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from proxy_instructions import instructions
from snapshot import RUN_TIMEOUT, fmt_n, machine_state, make_engine, parse_floor

TARGET = 1.5  # issue #15: restart <= 1.5x the floor


async def child(step: str, state: Path) -> None:
    from oauthd.clock import SystemClock
    from oauthd.store.file import FileStore

    empty = Path(tempfile.mkdtemp(prefix="oauthd-bench-empty-", dir=state.parent))
    await (await FileStore.open(make_engine(empty), SystemClock())).close()
    if step == "floor":
        parse_floor(state / "snapshot.json")
    elif step == "open":
        store = await FileStore.open(make_engine(state), SystemClock())
        assert await store.grants.count() > 0
    sys.stdout.flush()
    os._exit(0)  # no teardown counted


def count(step: str, state: Path, out: Path) -> int:
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            step,
            str(state),
        ],
        check=True,
        timeout=RUN_TIMEOUT,
        capture_output=True,
    )
    return instructions(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grants", type=int, default=20_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child[0], Path(args.child[1])))
        return
    before = machine_state()
    tmp = Path(tempfile.mkdtemp(prefix="oauthd-bench-instr-"))
    try:
        state = tmp / "state"
        snapshot_py = str(Path(__file__).with_name("snapshot.py"))
        save = [snapshot_py, "--child-save", str(state), str(args.grants), "2", "0"]
        subprocess.run([sys.executable, *save], check=True, timeout=RUN_TIMEOUT, stdout=-3)
        totals = {s: count(s, state, tmp / f"{s}.out") for s in ("base", "floor", "open")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    floor, restart = totals["floor"] - totals["base"], totals["open"] - totals["base"]
    ratio = restart / floor
    print("| grants | floor (instructions) | restart (instructions) | restart / floor |")
    print("|---:|---:|---:|---:|")
    miss = "" if ratio <= TARGET else " (miss)"
    print(f"| {fmt_n(args.grants)} | {floor:,} | {restart:,} | {ratio:.2f}{miss} |")
    print(f"\nTarget: restart <= {TARGET}x the floor. Machine before: {before}; after:")
    print(f"{machine_state()}.")  # counts do not depend on it; the run's length does


if __name__ == "__main__":
    main()
