"""A failing disk never corrupts the last good state (design.md section 3, docs/persistence.md
"Disk errors"): the write fails with `Unavailable` (HTTP 503 + Retry-After), health turns
degraded, and the store recovers by itself once the disk does.

ENOSPC and EROFS are real, on a 256 KiB tmpfs in a user + mount namespace
(`tests/support/scripts/disk_faults.py` under `unshare -Urm`). EIO cannot be produced with tmpfs:
it is injected into the journal's `os.write` / `os.fdatasync`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from oauthd.assembly import STORE, create_app
from oauthd.clock import FakeClock, SystemClock
from oauthd.config import default_config
from oauthd.http.errors import Routes
from oauthd.model import Grant
from oauthd.persist.journal import scan_segment
from oauthd.store import Unavailable
from oauthd.store.file import FileStore, make_engine
from tests.support.app import Running
from tests.support.http_client import client_auth
from tests.support.persist import crash_copy, segments
from tests.support.records import make_grant
from tests.support.services import service_missing

HELPER = Path(__file__).parents[1] / "support" / "scripts" / "disk_faults.py"
FAR = time.time() + 86400


def grant(key: str, value: float = 1.0) -> Grant:
    return make_grant(id=key, last_used_at=value, expires_at=FAR)


# -- ENOSPC and EROFS on a tmpfs, in a namespace ---------------------------------------------


def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is not installed"
    with tempfile.TemporaryDirectory() as where:
        probe = subprocess.run(
            ["unshare", "-Urm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", where],
            capture_output=True,
            text=True,
        )
    if probe.returncode != 0:
        return f"`unshare -Urm` + tmpfs mount not permitted here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def namespaces() -> None:
    problem = _unshare_problem()
    if problem is not None:
        service_missing(problem)


def run_scenario(kind: str, tmp_path: Path) -> dict[str, Any]:
    mount = tmp_path / "mnt"
    mount.mkdir()
    proc = subprocess.run(
        ["unshare", "-Urm", sys.executable, str(HELPER), kind, str(mount)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return report


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "reason"),
    [("enospc", "No space left on device"), ("erofs", "Read-only file system")],
)
def test_broken_disk_degrades_keeps_the_last_good_state_and_recovers(
    namespaces: None, tmp_path: Path, kind: str, reason: str
) -> None:
    r = run_scenario(kind, tmp_path)
    assert r["healthy_before"] is True
    # The write that met the broken disk, and every write after it: Unavailable, nothing else.
    assert r["first_error"] == "Unavailable", r
    assert reason in r["first_error_text"]
    assert r["refused"] == ["Unavailable"] * 5, "put, update, delete, take, ping"
    assert r["refused_later"] == ["Unavailable"] * 5, "still refused while the disk is broken"
    assert r["healthy_while_broken"] is False and reason in r["detail"]
    # The engine retried its snapshot meanwhile, failed, and left no temp file behind.
    assert r["snapshot_error_while_broken"] and reason in r["snapshot_error_while_broken"]
    assert r["temp_files_while_broken"] == []
    # The last good state on disk holds every acknowledged write: read-only examination
    # (at most a torn tail: the failed batch, never acknowledged) and a second store.
    assert all("torn tail" in problem for problem in r["offline_damage"]), r["offline_damage"]
    assert r["offline_grants"] == r["acknowledged_grants"] > 20
    assert r["lost_in_copy"] == []
    # Repaired: healthy again by itself (snapshot retry with backoff), writes accepted,
    # and after a restart everything acknowledged is there.
    assert r["healthy_after"] is True
    assert r["recovered_after"] < 8.0
    assert r["lost_after_restart"] == []
    assert r["healthy_after_restart"] is True


# -- EIO, injected ---------------------------------------------------------------------------


def _path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _inode(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class JournalEIO:
    """Makes the next journal record write (`os.write`) or its `os.fdatasync` fail with
    EIO, once; from then on records which files get fsynced."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
        self.call = call
        self.failed: tuple[int, int] | None = None
        self.synced_after: list[tuple[int, int]] = []
        for name in ("write", "fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(fd: int, *args: Any) -> Any:
            if self.failed is None and name == self.call and self._journal_record(fd):
                self.failed = _inode(fd)
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            if self.failed is not None and name != "write":
                self.synced_after.append(_inode(fd))
            return real(fd, *args)

        return call

    @staticmethod
    def _journal_record(fd: int) -> bool:
        """A frame appended to a segment (not the header of a new one)."""
        return "/journal-" in _path(fd) and os.lseek(fd, 0, os.SEEK_CUR) > 16


async def open_store(path: Path) -> FileStore:
    engine = make_engine(path, journaled=True, interval=1.0, debounce=0.05, max_wait=0.2)
    return await FileStore.open(engine, SystemClock())


async def wait_healthy(store: FileStore, within: float) -> None:
    for _ in range(int(within / 0.02)):
        if store.status().healthy:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not healthy after {within} s: {store.status()}")


@pytest.mark.parametrize("call", ["fdatasync", "write"])
async def test_journal_eio_fails_the_batch_then_recovers_without_fsyncing_that_fd_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    state = tmp_path / "state"
    store = await open_store(state)
    for i in range(20):
        await store.grants.put(grant(f"g-{i}", float(i)))
    fault = JournalEIO(monkeypatch, call)

    # Every write of the failing batch, and those queued behind it, is Unavailable.
    results = await asyncio.gather(
        *(store.grants.put(grant(f"g-eio-{i}")) for i in range(5)), return_exceptions=True
    )
    assert fault.failed is not None, "the fault was never injected"
    assert [type(r) for r in results] == [Unavailable] * 5, results
    assert all("Input/output error" in r.reason for r in results)  # type: ignore[union-attr]
    status = store.status()
    assert not status.healthy and status.detail and "Input/output error" in status.detail
    with pytest.raises(Unavailable):  # refused before it changes anything
        await store.grants.put(grant("g-refused"))
    assert await store.grants.get("g-refused") is None
    with pytest.raises(Unavailable):
        await store.grants.delete("g-0")
    assert await store.grants.get("g-0") is not None

    await wait_healthy(store, within=5.0)  # a snapshot covers memory; a new segment opens
    for i in range(20, 30):
        await store.grants.put(grant(f"g-{i}", float(i)))
    assert fault.synced_after, "nothing was fsynced after the failure: the check is void"
    assert fault.failed not in fault.synced_after, "the failed fd was fsynced again"
    await store.close()

    store = await open_store(state)
    try:
        for i in range(30):
            record = await store.grants.get(f"g-{i}")
            assert record is not None and record.last_used_at == float(i), i
        assert await store.grants.get("g-refused") is None
    finally:
        await store.close()


# -- HTTP --------------------------------------------------------------------------------------


class DiskDown:
    """While `down`, every fsync/fdatasync under `root` fails with EIO (journal, snapshot
    temp file, directory): the store stays degraded until `down` is cleared."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.root = str(root)
        self.down = False
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def call(fd: int) -> None:
            if self.down and _path(fd).startswith(self.root):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(fd)

        return call


async def test_http_503_with_retry_after_while_degraded_and_back_after_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = default_config(tmp_path)
    storage = dataclasses.replace(
        base.storage, path=tmp_path / "state", save_debounce=0.05, save_max_wait=0.2
    )
    app = create_app(dataclasses.replace(base, storage=storage))

    async def write(request: web.Request) -> web.Response:  # test-only route
        await request.app[STORE].grants.put(grant(request.match_info["key"]))
        return web.json_response({"ok": True})

    Routes(app).post("/test/grants/{key}", write)  # errors rendered as on every route
    disk = DiskDown(monkeypatch, tmp_path / "state")
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/readyz")).status == 200
        assert (await client.post("/test/grants/a")).status == 200

        disk.down = True
        response = await client.post("/test/grants/b")
        assert response.status == 503
        assert int(response.headers["Retry-After"]) >= 1
        body = await response.json()
        assert body["error"] == "temporarily_unavailable" and body["error_description"]
        assert "no-store" in response.headers["Cache-Control"]
        ready = await client.get("/readyz")
        assert ready.status == 503 and (await ready.json())["status"] == "degraded"
        assert (await client.get("/healthz")).status == 200
        assert (await client.post("/test/grants/c")).status == 503
        await asyncio.sleep(0.6)  # the first snapshot retry fails too
        assert (await client.get("/readyz")).status == 503

        disk.down = False
        started = time.monotonic()
        while (await client.get("/readyz")).status != 200:
            assert time.monotonic() - started < 8, "did not recover by itself"
            await asyncio.sleep(0.05)
        assert (await client.get("/healthz")).status == 200
        assert (await client.post("/test/grants/d")).status == 200
        assert await app[STORE].grants.get("c") is None
        assert await app[STORE].grants.get("d") is not None


# -- a 503 changes nothing: retries through the real HTTP app (#11 item 5) --------------------

RETRIES_HELPER = Path(__file__).parents[1] / "support" / "scripts" / "full_disk_retries.py"


@pytest.mark.slow
@pytest.mark.parametrize("grace", [10.0, 0.0])
def test_requests_refused_by_a_full_disk_succeed_when_retried_after_the_grace_window(
    namespaces: None, tmp_path: Path, grace: float
) -> None:
    """The state dir on a full tmpfs: refreshes and code exchanges whose journal batch
    failed got 503 + Retry-After. Their changes were undone, so once the disk is free
    their retries, after the grace window (the default 10 s, and 0 s), are 200, and no
    session is revoked (before: every retry was reuse, every session revoked)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    proc = subprocess.run(
        ["unshare", "-Urm", sys.executable, str(RETRIES_HELPER), str(grace), str(mount)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    r: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    assert r["retried_refreshes"] >= 3 and r["retried_exchanges"] >= 3, r
    assert set(r["while_full"]) == {503} and all(int(v) >= 1 for v in r["retry_after"])
    assert r["ready_while_full"] == 503
    assert r["retries"] == [200] * len(r["retries"]), r["retry_errors"]
    assert all(r["live_after"]) and len(r["live_after"]) == len(r["retries"])
    assert set(r["following_refreshes"]) == {200}
    assert r["reuse_lines"] == [], "a session was revoked"


class JournalSyncDown:
    """Every journal record's fdatasync fails with EIO (the write itself succeeds: the
    failed batch's frames are in the file, and a kill -9 leaves them there)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            if JournalEIO._journal_record(fd):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)


async def test_refused_records_replayed_after_a_kill_are_harmless_for_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other half (#11 item 5): the records of the failed batch reached the journal
    file (only fdatasync failed), and a kill -9 before the next snapshot replays them at
    the next start. The refresh rotations and code claims that come back were never
    answered; the clients' retries, after the grace window, are still 200 (a superseded
    refresh token whose successor was never used, a claimed code whose grant was never
    used: retries), and nothing is revoked."""
    redirect = "http://127.0.0.1:43123/callback"
    (tmp_path / "one").mkdir()
    first = await Running.start_in(tmp_path / "one", storage={"save_debounce": 3600.0})
    client = first.client
    app = await client.register_public(client_name="Crashing App")
    sessions = [await client.tokens(app, redirect, consent=n == 0) for n in range(4)]
    codes = [await client.authorization_code(app, redirect, consent=False) for _ in range(4)]
    state = first.config.storage.path
    assert isinstance(first.store, FileStore)
    acknowledged_seq = first.store.engine.seq

    def exchange(running: Running, code: str, verifier: str) -> Any:
        return running.client.token(
            grant_type="authorization_code",
            code=code,
            code_verifier=verifier,
            redirect_uri=redirect,
            **client_auth(app),
        )

    JournalSyncDown(monkeypatch)
    answers = await asyncio.gather(
        *(client.refresh(app, s["refresh_token"]) for s in sessions),
        *(exchange(first, code, pkce.verifier) for code, pkce in codes),
    )
    assert [a.status for a in answers] == [503] * 8
    killed = crash_copy(state, tmp_path / "killed")
    replayed = [seq for name in segments(killed) for seq, _ in scan_segment(killed / name).entries]
    assert max(replayed) > acknowledged_seq, "no refused record reached the journal"
    monkeypatch.undo()
    await first.close()

    config = dataclasses.replace(
        first.config, storage=dataclasses.replace(first.config.storage, path=killed)
    )
    later = FakeClock(first.clock.now() + first.config.tokens.refresh_grace + 2)
    second = Running(config, clock=later)
    await second.start()
    try:
        retried = [await second.client.refresh(app, s["refresh_token"]) for s in sessions]
        retried += [await exchange(second, code, pkce.verifier) for code, pkce in codes]
        assert [a.status for a in retried] == [200] * 8, [a.text for a in retried]
        for answer in retried:
            body = await second.client.introspect(
                answer.json()["access_token"], second.introspection_secret
            )
            assert body["active"]
            assert (await second.client.refresh(app, answer.json()["refresh_token"])).status == 200
    finally:
        await second.close()


# -- start-up on a state dir that cannot be written (#11 item 5) ------------------------------

STARTUP_HELPER = Path(__file__).parents[1] / "support" / "scripts" / "startup_faults.py"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "errno_name", "where"),
    [("erofs", "EROFS", "/lock"), ("enospc", "ENOSPC", ".log.torn-")],
)
def test_startup_io_errors_exit_78_with_one_line_naming_path_and_errno(
    namespaces: None, tmp_path: Path, kind: str, errno_name: str, where: str
) -> None:
    """`oauthd serve` on a read-only state dir, and on a full one whose journal has a torn
    tail to copy aside: exit 78 (EX_CONFIG) and one line naming the path and the errno
    (before: exit 1 and a traceback), and nothing in the state dir changed."""
    mount, configs = tmp_path / "mnt", tmp_path / "config"
    mount.mkdir()
    configs.mkdir()
    proc = subprocess.run(
        ["unshare", "-Urm", sys.executable, str(STARTUP_HELPER), kind, str(mount), str(configs)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    r: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    assert r["returncode"] == 78, r["stderr"]
    assert "Traceback" not in r["stderr"]
    lines = [line for line in r["stderr"].splitlines() if line.startswith("oauthd: ")]
    assert len(lines) == 1, r["stderr"]
    assert r["state"] in lines[0] and where in lines[0] and errno_name in lines[0]
    assert r["after"] == r["before"]
