"""When snapshots are written: debounce coalesces a burst, max_wait stops steady traffic from
starving saves, the interval caps the wait, and nothing is written without a change."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from oauthd.audit import AuditEvent
from oauthd.persist import engine as engine_module
from oauthd.store.file import FileStore
from tests.support.persist import open_store
from tests.support.records import make_grant

DEBOUNCE = 0.05
MAX_WAIT = 0.3
SLACK = 0.15  # scheduling noise on a busy 2-core machine


class SaveLog:
    """Loop times (and seqs) of every snapshot write, via the engine's `write_snapshot`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.saves: list[tuple[float, int]] = []
        real: Callable[..., Awaitable[int]] = engine_module.write_snapshot

        async def counting(*args: Any, **kwargs: Any) -> int:
            self.saves.append((asyncio.get_running_loop().time(), kwargs["seq"]))
            return await real(*args, **kwargs)

        monkeypatch.setattr(engine_module, "write_snapshot", counting)

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.saves]

    def clear(self) -> None:
        self.saves.clear()


@pytest.fixture
def save_log(monkeypatch: pytest.MonkeyPatch) -> SaveLog:
    return SaveLog(monkeypatch)


async def scheduled_store(
    path: Path, save_log: SaveLog, *, debounce: float, max_wait: float, interval: float
) -> FileStore:
    store = await open_store(
        path, journaled=False, debounce=debounce, max_wait=max_wait, interval=interval
    )
    save_log.clear()  # the first boot writes the empty generation at once
    return store


async def test_burst_is_coalesced_into_one_save_after_the_debounce(
    tmp_path: Path, save_log: SaveLog
) -> None:
    store = await scheduled_store(
        tmp_path, save_log, debounce=DEBOUNCE, max_wait=MAX_WAIT, interval=60
    )
    loop = asyncio.get_running_loop()
    for _ in range(50):
        await store.grants.put(make_grant())
    last_change = loop.time()
    assert save_log.saves == []
    await asyncio.sleep(DEBOUNCE + SLACK)
    assert len(save_log.saves) == 1
    ((at, seq),) = save_log.saves
    assert at >= last_change + DEBOUNCE - 0.005
    assert seq == 50  # the whole burst in one snapshot
    await asyncio.sleep(MAX_WAIT)
    assert len(save_log.saves) == 1  # and nothing more while idle
    await store.close()


async def test_steady_writes_do_not_starve_saves(tmp_path: Path, save_log: SaveLog) -> None:
    store = await scheduled_store(
        tmp_path, save_log, debounce=DEBOUNCE, max_wait=MAX_WAIT, interval=60
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < 1.0:  # a change every 0.02 s: the debounce never runs out
        await store.grants.put(make_grant())
        await asyncio.sleep(0.02)
    end = loop.time()
    during = [t for t in save_log.times if t <= end]
    assert 2 <= len(during) <= 5, during
    gaps = [b - a for a, b in zip([start, *during], during, strict=False)]
    assert max(gaps) <= MAX_WAIT + SLACK, gaps
    assert end - during[-1] <= MAX_WAIT + SLACK
    await store.close()


async def test_interval_fires_before_a_longer_debounce(tmp_path: Path, save_log: SaveLog) -> None:
    store = await scheduled_store(tmp_path, save_log, debounce=2.0, max_wait=4.0, interval=0.2)
    loop = asyncio.get_running_loop()
    opened = loop.time()
    await store.grants.put(make_grant())
    await asyncio.sleep(0.2 + SLACK)
    assert len(save_log.saves) == 1, "the interval did not trigger a save"
    assert save_log.times[0] - opened < 2.0 - SLACK  # well before the debounce
    await store.close()


async def test_no_change_no_save(tmp_path: Path, save_log: SaveLog) -> None:
    store = await scheduled_store(tmp_path, save_log, debounce=0.01, max_wait=0.02, interval=0.05)
    await asyncio.sleep(0.3)
    assert save_log.saves == []
    await store.grants.get("absent")  # reads are no change either
    await store.grants.delete("absent")  # nor a delete that found nothing
    await asyncio.sleep(0.2)
    assert save_log.saves == []
    await store.close()
    assert save_log.saves == []  # no final snapshot either


async def test_save_after_idle_then_no_more(tmp_path: Path, save_log: SaveLog) -> None:
    """One change -> exactly one save, then the saver goes quiet again."""
    store = await scheduled_store(tmp_path, save_log, debounce=0.02, max_wait=0.1, interval=0.05)
    await store.grants.put(make_grant())
    await asyncio.sleep(0.3)
    assert [seq for _, seq in save_log.saves] == [1]
    health = store.engine.health()
    assert health.snapshot_seq == 1 and health.last_save_at is not None
    await store.close()
    assert len(save_log.saves) == 1


async def test_audit_records_alone_wait_for_the_interval(tmp_path: Path, save_log: SaveLog) -> None:
    """A record that changes no record (an audit event) needs a snapshot only to trim the
    journal: a stream of them is saved at the interval's pace, never after the debounce
    (at a million grants a snapshot every few seconds for tool calls would be waste)."""
    store = await scheduled_store(
        tmp_path, save_log, debounce=DEBOUNCE, max_wait=MAX_WAIT, interval=0.6
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < 0.5:  # steady audit records, no change: before the interval
        await store.audit.append(AuditEvent("call_decided", user="alice"))
        await asyncio.sleep(0.02)
    assert save_log.saves == [], "the debounce or max_wait fired for audit records alone"
    await asyncio.sleep(0.1 + SLACK)
    assert len(save_log.saves) == 1  # the interval did
    await store.grants.put(make_grant())  # a change: the debounce again
    await asyncio.sleep(DEBOUNCE + SLACK)
    assert len(save_log.saves) == 2
    await store.close()
