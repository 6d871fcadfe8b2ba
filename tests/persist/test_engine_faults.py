"""#11 item 5: the engine under a disk that keeps failing.

- a failed journal batch is undone in memory (a 503 changes nothing);
- only `fdatasync` failing: no cycle of snapshot, reopen, failure; unready until a journal
  write works again; one log line per interval;
- a failing snapshot with a working journal: degraded (metric, log), still ready;
- an I/O error while opening the state dir: one line naming path and errno, exit 78.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oauthd.clock import SystemClock
from oauthd.exits import ExitCode
from oauthd.metrics import Metrics
from oauthd.persist import RecoveryError
from oauthd.persist import engine as engine_module
from oauthd.persist import journal as journal_module
from oauthd.persist import snapshot as snapshot_module
from oauthd.persist import statedir as statedir_module
from oauthd.store import Unavailable
from oauthd.store.file import FileStore
from tests.persist.test_engine_schedule import SaveLog
from tests.support.persist import engine_for, open_store
from tests.support.records import make_code, make_grant

FAR = time.time() + 86400


def eio(*_: Any) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


class Switch:
    """`os.fdatasync` of the journal fails with EIO while `on`; counts the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = False
        self.calls = 0
        real: Callable[[int], None] = os.fdatasync

        def fdatasync(fd: int) -> None:
            self.calls += 1
            if self.on:
                eio()
            real(fd)

        monkeypatch.setattr(journal_module.os, "fdatasync", fdatasync)


async def test_a_failed_batch_leaves_memory_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind of change in the failed batch and behind it, the same key changed twice
    among them: afterwards memory holds exactly what it held before."""
    store = await open_store(tmp_path, SystemClock())
    grant = make_grant(expires_at=FAR)
    doomed = make_grant(expires_at=FAR)
    code = make_code(expires_at=FAR)
    for record in (grant, doomed, code):
        await store.by_kind[record.KIND].put(record)
    switch = Switch(monkeypatch)
    switch.on = True

    def touched(value: float) -> Callable[[Any], Any]:
        return lambda g: dataclasses.replace(g, last_used_at=value)

    results = await asyncio.gather(
        store.grants.update(grant.id, touched(1.0)),
        store.grants.update(grant.id, touched(2.0)),
        store.grants.delete(doomed.id),
        store.codes.take(code.key),
        store.grants.add(make_grant(id="new", expires_at=FAR)),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [Unavailable] * 5, results
    assert await store.grants.get(grant.id) == grant
    assert await store.grants.get(doomed.id) == doomed
    assert await store.codes.get(code.key) == code
    assert await store.grants.get("new") is None
    switch.on = False
    await store.close()


async def test_fdatasync_failing_for_a_while_backs_off_stays_unready_and_logs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Today's cycle: the journal fails, a snapshot (fsync works) covers memory, the journal
    reopens, /readyz turns 200, the next batch fails: 7 times in 3 s, logged each time.
    Now: the new segment's own write + fdatasync must work, so it is not opened while they
    fail; attempts back off; unready all along; one log line."""
    store = await open_store(tmp_path, SystemClock(), interval=1.0, debounce=0.05, max_wait=0.2)
    await store.grants.put(make_grant(expires_at=FAR))
    saves = SaveLog(monkeypatch)
    switch = Switch(monkeypatch)
    switch.on = True
    caplog.set_level(logging.ERROR, logger="oauthd.persist")

    with pytest.raises(Unavailable):
        await store.grants.put(make_grant(expires_at=FAR))
    ready_seen = False
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        ready_seen |= store.status().healthy
        try:
            await store.grants.put(make_grant(expires_at=FAR))
        except Unavailable:
            pass
        else:
            raise AssertionError("a write was accepted while fdatasync fails")
        await asyncio.sleep(0.02)
    assert not ready_seen, "/readyz would have turned 200 while the journal cannot sync"
    assert len(saves.saves) <= 2, f"cycled: {len(saves.saves)} snapshots in 3 s"
    assert switch.calls <= 5, f"{switch.calls} fdatasync attempts in 3 s"
    failures = [r for r in caplog.records if r.__dict__.get("event") == "journal_failed"]
    assert len(failures) == 1, [r.getMessage() for r in failures]

    switch.on = False
    deadline = time.monotonic() + 10
    while not store.status().healthy:
        assert time.monotonic() < deadline, store.status()
        await asyncio.sleep(0.05)
    kept = make_grant(expires_at=FAR)
    await store.grants.put(kept)

    # A new failure after a durable batch is new trouble: logged at once, short backoff.
    caplog.clear()
    switch.on = True
    with pytest.raises(Unavailable):
        await store.grants.put(make_grant(expires_at=FAR))
    failures = [r for r in caplog.records if r.__dict__.get("event") == "journal_failed"]
    assert len(failures) == 1
    switch.on = False
    deadline = time.monotonic() + 3
    while not store.status().healthy:
        assert time.monotonic() < deadline, store.status()
        await asyncio.sleep(0.05)
    await store.close()
    store = await open_store(tmp_path, SystemClock())
    assert await store.grants.get(kept.id) == kept
    await store.close()


async def test_a_failing_snapshot_with_a_working_journal_is_degraded_not_unready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    engine = engine_for(tmp_path)
    engine.observer = metrics
    store = await FileStore.open(engine, SystemClock())
    monkeypatch.setattr(snapshot_module.os, "fsync", eio)
    caplog.set_level(logging.ERROR, logger="oauthd.persist")

    assert not await engine.save()
    status = store.status()
    assert status.healthy, status  # /readyz 200: every acknowledged write is journaled
    assert status.detail and "snapshot write failed" in status.detail
    assert engine.health().degraded
    await store.ping()
    acknowledged = make_grant(expires_at=FAR)
    await store.grants.put(acknowledged)  # accepted and durable
    assert not await engine.save()
    text = (await metrics.render()).decode()
    assert "oauthd_snapshot_failures_total 2.0" in text
    assert "oauthd_snapshot_failing 1.0" in text
    logged = [r for r in caplog.records if r.__dict__.get("event") == "snapshot_failed"]
    assert len(logged) == 1 and "the journal still makes every change durable" in (
        logged[0].getMessage()
    )

    monkeypatch.undo()
    assert await engine.save()
    assert not engine.health().degraded
    assert "oauthd_snapshot_failing 0.0" in (await metrics.render()).decode()
    await store.close()
    store = await open_store(tmp_path, SystemClock())
    assert await store.grants.get(acknowledged.id) == acknowledged
    await store.close()


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
async def test_an_io_error_at_start_is_a_recovery_error_naming_path_and_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """(CI runs as root: EACCES cannot come from a mode there, so it is injected; EROFS and
    ENOSPC are real in tests/e2e/test_disk_faults.py.)"""
    store = await open_store(tmp_path)
    await store.close()
    real = os.open

    def refusing(path: Any, *args: Any, **kwargs: Any) -> int:
        if Path(path).name == "lock":
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(statedir_module.os, "open", refusing)
    with pytest.raises(RecoveryError) as refused:
        await open_store(tmp_path)
    message = str(refused.value)
    assert refused.value.exit_code == ExitCode.CONFIG == 78
    assert str(tmp_path / "lock") in message and errno.errorcode[code] in message
    assert "\n" not in message


async def test_a_frame_over_the_journals_limit_is_refused_before_it_takes_a_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused as a disk error (the request's 503), its change undone, and no gap in the
    journal's seq numbers: the next frame takes the seq it would have taken."""
    monkeypatch.setattr(engine_module, "MAX_PAYLOAD", 2000)
    store = await open_store(tmp_path, SystemClock())
    seq = store.engine.seq
    undone: list[bool] = []
    with pytest.raises(journal_module.DiskError, match="over the 2000-byte limit"):
        await store.engine.append(b"x" * 2001, lambda: undone.append(True))
    assert undone == [True] and store.engine.seq == seq
    await store.grants.put(make_grant(id="after"))
    assert store.engine.seq == seq + 1
    await store.close()
    reopened = await open_store(tmp_path, SystemClock())
    assert await reopened.grants.get("after") is not None
    await reopened.close()


async def test_a_frame_after_the_journal_closed_is_refused_not_left_waiting(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path, SystemClock())
    await store.engine.close()
    with pytest.raises(journal_module.DiskError, match="the journal is closed"):
        await asyncio.wait_for(store.engine.append(b"[]"), 5)
