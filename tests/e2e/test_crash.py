"""kill -9 under load: every acknowledged write survives (durability rule R3, docs/persistence.md).

A child (`tests/support/scripts/crash_writer.py`) writes grants and codes from several concurrent
tasks and prints a line after each write whose awaited call returned: that line is the
acknowledgement. We SIGKILL it at random moments (during start-up and the first snapshot,
after some acknowledgements, right as a snapshot of a few thousand records starts), reopen
the state dir with `FileStore.open` and compare every key with what was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from oauthd.clock import SystemClock
from oauthd.persist.statedir import SNAPSHOT
from oauthd.store.file import FileStore, make_engine

HELPER = Path(__file__).parents[1] / "support" / "scripts" / "crash_writer.py"
GRANTS = 4000  # preloaded: each snapshot holds a few thousand records
CODES = 200
Key = tuple[str, str]
Value = float | None  # None: absent


@dataclass
class Trigger:
    """When to send SIGKILL: `delay` seconds after the `count`-th line starting with
    `prefix` (prefix None: after the start)."""

    prefix: str | None
    count: int
    delay: float

    def describe(self) -> str:
        if self.prefix is None:
            return f"{self.delay * 1000:.0f} ms after spawn"
        return f"{self.delay * 1000:.1f} ms after {self.prefix!r} #{self.count}"


@dataclass
class Write:
    """One write the child started: the value it leaves, whether it was acknowledged, and
    its sequence number (meaningful with snapshot durability only)."""

    value: Value
    acked: bool = False
    seq: int = 0


@dataclass
class Crash:
    lines: list[str]
    stderr: str
    trigger: Trigger
    writes: dict[Key, list[Write]] = field(default_factory=dict)
    snapshot_seq: int = 0  # the last snapshot the child reported installed (0: none)

    def mid_snapshot(self) -> bool:
        """Killed between a snapshot's start and its install."""
        marks = [line for line in self.lines if line[:1] in ("W", "S")]
        return bool(marks) and marks[-1] == "W"


async def crash_child(state: Path, trigger: Trigger, *args: str) -> Crash:
    """Run the writer on `state` and SIGKILL it per `trigger`; every line it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        str(state),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    loop = asyncio.get_running_loop()

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)

    if trigger.prefix is None:
        loop.call_later(trigger.delay, kill)
    watchdog = loop.call_later(15, kill)
    lines: list[str] = []
    seen = 0
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.create_task(proc.stderr.read())
    while raw := await proc.stdout.readline():
        line = raw.decode().rstrip("\n")
        lines.append(line)
        if trigger.prefix is not None and line.startswith(trigger.prefix):
            seen += 1
            if seen == trigger.count:
                loop.call_later(trigger.delay, kill)
    returncode = await proc.wait()
    watchdog.cancel()
    crash = Crash(lines, (await stderr).decode(), trigger)
    assert returncode == -signal.SIGKILL, f"writer ended by itself ({returncode}): {crash.stderr}"
    assert "Traceback" not in crash.stderr and "TIMEOUT" not in lines, crash.stderr
    return crash


async def preload(state: Path, durability: str) -> dict[Key, Value]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        str(state),
        "--preload",
        f"--grants={GRANTS}",
        f"--durability={durability}",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out.decode().splitlines()[-1] == "DONE"
    baseline: dict[Key, Value] = {("grants", f"g-{i:05d}"): 0.0 for i in range(GRANTS)}
    baseline.update({("codes", f"c-{i:05d}"): None for i in range(CODES)})
    return baseline


def parse(crash: Crash) -> None:
    """Group the B/A lines by key, in order."""
    writes: dict[Key, list[Write]] = defaultdict(list)
    for line in crash.lines:
        kind, *rest = line.split()
        if kind == "B":
            table, key, value = rest
            writes[(table, key)].append(Write(_value(value)))
        elif kind == "A":
            table, key, value, seq = rest
            last = writes[(table, key)][-1]
            assert last.value == _value(value) and not last.acked, line
            last.acked, last.seq = True, int(seq)
        elif kind == "S":
            crash.snapshot_seq = max(crash.snapshot_seq, int(rest[0]))
    crash.writes = dict(writes)


def _value(text: str) -> Value:
    return None if text == "-" else float(text)


Allowed = Callable[[Crash, Value, list[Write]], set[Value]]


def journal_promise(crash: Crash, before: Value, writes: list[Write]) -> set[Value]:
    """Journal durability: the last acknowledged value, or the write still in flight."""
    assert all(w.acked for w in writes[:-1]), "a worker starts a write after the last one"
    acked = [w for w in writes if w.acked]
    allowed = {acked[-1].value if acked else before}
    if writes and not writes[-1].acked:
        allowed.add(writes[-1].value)
    return allowed


def snapshot_promise(crash: Crash, before: Value, writes: list[Write]) -> set[Value]:
    """Snapshot durability: nothing acknowledged up to the last installed snapshot is lost
    (a later write of the key may or may not have survived)."""
    covered = [i for i, w in enumerate(writes) if w.acked and w.seq <= crash.snapshot_seq]
    start = covered[-1] if covered else -1
    allowed = {writes[start].value if covered else before}
    allowed.update(w.value for w in writes[start + 1 :])
    return allowed


async def load_and_check(
    state: Path,
    baseline: dict[Key, Value],
    crash: Crash,
    allowed: Allowed,
    durability: str = "journal",
) -> dict[Key, Value]:
    """Reopen like a restart would; every key must hold an allowed value. Returns the
    loaded state (the next run's baseline)."""
    parse(crash)
    journaled = durability == "journal"
    engine = make_engine(state, journaled=journaled, interval=30, debounce=1, max_wait=5)
    store = await FileStore.open(engine, SystemClock())
    try:
        loaded: dict[Key, Value] = {}
        for kind, key in baseline:
            record = await store.by_kind[kind].get(key)
            value = None if record is None else getattr(record, _FIELD[kind])
            loaded[(kind, key)] = value
        assert await store.grants.count() + await store.codes.count() == sum(
            v is not None for v in loaded.values()
        ), "records outside the keys the writer uses"
        wrong = {
            key: (loaded[key], sorted(map(str, ok)))
            for key in baseline
            if loaded[key] not in (ok := allowed(crash, baseline[key], crash.writes.get(key, [])))
        }
        assert not wrong, (
            f"killed {crash.trigger.describe()} after {len(crash.lines)} lines; "
            f"{len(wrong)} keys lost acknowledged writes, e.g. {list(wrong.items())[:5]}"
        )
    finally:
        await store.close()
    return loaded


_FIELD = {"grants": "last_used_at", "codes": "created_at"}


def random_trigger(rng: random.Random) -> Trigger:
    choice = rng.random()
    if choice < 0.4:  # right as a snapshot of ~4000 records starts (it takes ~10 ms)
        return Trigger("W", rng.randint(1, 3), rng.choice((0.0, rng.uniform(0, 0.012))))
    if choice < 0.8:  # after some acknowledgements
        return Trigger("A", rng.randint(1, 4000), rng.uniform(0, 0.003))
    return Trigger(None, 0, rng.uniform(0.1, 0.6))


async def test_kill_during_first_boot_loses_nothing(tmp_path: Path) -> None:
    """Killed while importing, opening, writing the very first snapshot or the first
    writes: the dir always reopens, with every acknowledged write."""
    rng = random.Random(20261123)
    triggers = [Trigger(None, 0, rng.uniform(0.0, 0.3)) for _ in range(5)]
    triggers += [Trigger("W", 1, 0.0), Trigger("W", 1, 0.001), Trigger("A", 1, 0.0)]
    for n, trigger in enumerate(triggers):
        state = tmp_path / f"boot-{n}"
        baseline: dict[Key, Value] = {("grants", f"g-{i:05d}"): None for i in range(40)}
        baseline.update({("codes", f"c-{i:05d}"): None for i in range(20)})
        crash = await crash_child(state, trigger, "--grants=40", "--codes=20", f"--seed={n}")
        await load_and_check(state, baseline, crash, journal_promise)


@pytest.mark.slow
@pytest.mark.parametrize("chain", [1, 2, 3])
async def test_kill_under_load_loses_no_acknowledged_write(tmp_path: Path, chain: int) -> None:
    """Eight kills in a row on one state dir (each restart recovers the previous crash)."""
    rng = random.Random(chain * 7919)
    state = tmp_path / "state"
    baseline = await preload(state, "journal")
    acknowledged = mid_snapshot = 0
    for run in range(8):
        trigger = random_trigger(rng)
        crash = await crash_child(
            state, trigger, f"--grants={GRANTS}", f"--codes={CODES}", f"--seed={chain}{run}"
        )
        baseline = await load_and_check(state, baseline, crash, journal_promise)
        acknowledged += sum(line.startswith("A ") for line in crash.lines)
        mid_snapshot += crash.mid_snapshot()
    assert acknowledged > 1000, "the writer hardly wrote: the test checks nothing"
    print(f"chain {chain}: {acknowledged} acknowledged writes, {mid_snapshot} kills mid-snapshot")


@pytest.mark.slow
async def test_snapshot_durability_keeps_what_the_last_snapshot_holds(tmp_path: Path) -> None:
    """`durability = "snapshot"` promises less: the state loads uncorrupted and nothing
    acknowledged before the last completed snapshot is lost."""
    rng = random.Random(4242)
    state = tmp_path / "state"
    baseline = await preload(state, "snapshot")
    covered = 0
    for run in range(6):
        trigger = random_trigger(rng) if run else Trigger("S", 2, 0.0)
        crash = await crash_child(
            state,
            trigger,
            "--durability=snapshot",
            f"--grants={GRANTS}",
            f"--codes={CODES}",
            f"--seed={run}",
        )
        baseline = await load_and_check(state, baseline, crash, snapshot_promise, "snapshot")
        covered += crash.snapshot_seq > 0
    assert covered >= 1, "no run completed a snapshot: the promise was never tested"


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["journal", "snapshot"])
async def test_kill_during_the_first_snapshot_of_a_new_state_dir(
    tmp_path: Path, durability: str
) -> None:
    """Killed while the first snapshot of a new state dir is written: it still starts
    afterwards (the first-boot marker must not get ahead of the first snapshot)."""
    for n, delay in enumerate((0.0, 0.0005, 0.002)):
        state = tmp_path / f"boot-{n}"
        baseline: dict[Key, Value] = {("grants", f"g-{i:05d}"): None for i in range(40)}
        baseline.update({("codes", f"c-{i:05d}"): None for i in range(20)})
        crash = await crash_child(
            state, Trigger("W", 1, delay), "--grants=40", "--codes=20", f"--durability={durability}"
        )
        promise = journal_promise if durability == "journal" else snapshot_promise
        await load_and_check(state, baseline, crash, promise, durability)


async def test_kill_in_the_middle_of_a_snapshot_write(tmp_path: Path) -> None:
    """The child is stuck after writing part of a snapshot's temp file (fsynced) while the
    journal keeps acknowledging; kill -9 then. The half-written temp file is not taken for
    a snapshot, every acknowledged write is there, and the leftover is cleaned up."""
    state = tmp_path / "state"
    baseline = await preload(state, "journal")
    before = (state / SNAPSHOT).read_bytes()
    crash = await crash_child(
        state,
        Trigger("H", 1, 0.05),
        "--hang-in-snapshot",
        f"--grants={GRANTS}",
        f"--codes={CODES}",
    )
    hung = [line for line in crash.lines if line.startswith("H ")]
    assert hung, "the snapshot never reached its first write"
    temps = hung[0].split()[1:]
    assert len(temps) == 1
    partial = (state / temps[0]).read_bytes()
    assert partial.startswith(b'{"format":"oauthd-state"')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(partial)  # cut mid-document
    assert (state / SNAPSHOT).read_bytes() == before, "a half-written snapshot was installed"
    acked_after_hang = crash.lines.index(hung[0])
    assert any(line.startswith("A ") for line in crash.lines[acked_after_hang:])
    await load_and_check(state, baseline, crash, journal_promise)
    leftovers = [p.name for p in state.iterdir() if ".tmp-" in p.name]
    assert leftovers == [], f"temp files of the killed process were left behind: {leftovers}"
