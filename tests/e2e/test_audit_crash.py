"""kill -9 under audited load (#14): every acknowledged write has its audit record, and the
chain verifies, after each kill (read offline, before any restart) and after a restart.

A child (`tests/support/scripts/audit_crash_writer.py`) makes audited puts, updates,
deletes and audit-only appends from six tasks, snapshots and journal compaction running,
and prints each acknowledged write's id. It is SIGKILLed at random moments, 24 times.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
from pathlib import Path

import orjson

from oauthd.audit import verify
from oauthd.clock import SystemClock
from oauthd.store.audit_reader import FileAuditReader
from oauthd.store.file import FileStore, make_engine

HELPER = Path(__file__).parents[1] / "support" / "scripts" / "audit_crash_writer.py"
KILLS = 24


async def run_and_kill(state: Path, seed: int, delay: float) -> set[str]:
    """Start the writer, SIGKILL it `delay` s after READY; the ops it acknowledged."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HELPER), str(state), f"--seed={seed}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    loop = asyncio.get_running_loop()

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)

    watchdog = loop.call_later(20, kill)
    acked: set[str] = set()
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.create_task(proc.stderr.read())
    while raw := await proc.stdout.readline():
        line = raw.decode().split()
        if line == ["READY"]:
            loop.call_later(delay, kill)
        elif line[0] == "A":
            acked.add(line[1])
    assert await proc.wait() == -signal.SIGKILL, (await stderr).decode()
    watchdog.cancel()
    errors = (await stderr).decode()
    assert "Traceback" not in errors, errors
    return acked


async def recorded(state: Path) -> tuple[set[str], str]:
    """The ops the trail holds, and the verdict's problem (or "")."""
    reader = FileAuditReader(state)
    lines = [x async for x in reader.lines("")]
    chains = await reader.chains()
    verdict = verify(chains[0], lines) if chains else None
    ops = {str(orjson.loads(line).get("op")) for _, line in lines}
    return ops, "" if verdict is None or verdict.ok else str(verdict.problem)


async def test_no_acknowledged_write_loses_its_audit_record_over_many_kills(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    rng = random.Random(14)
    acked: set[str] = set()
    for kill in range(KILLS):
        acked |= await run_and_kill(state, kill + 1, rng.uniform(0.0, 0.6))
        ops, problem = await recorded(state)
        assert not problem, f"after kill {kill + 1}: {problem}"
        missing = acked - ops
        assert not missing, (
            f"after kill {kill + 1}: {len(missing)} missing, e.g. {sorted(missing)[:5]}"
        )
    assert len(acked) > 500, "the writer barely wrote"
    engine = make_engine(state, journaled=True, interval=30, debounce=1, max_wait=5)
    store = await FileStore.open(engine, SystemClock())
    await store.close()
    ops, problem = await recorded(state)
    assert not problem and not acked - ops
