"""Child of tests/test_disk_faults.py, run as root of its own user + mount namespace
(`unshare -Urm`): a `FileStore` on a tiny tmpfs meets a full or read-only disk.

    disk_faults.py enospc|erofs MOUNTPOINT

It mounts a 256 KiB tmpfs on MOUNTPOINT, runs the scenario and prints one JSON object of
what it observed (the test makes the assertions). Scenario:

1. open the store (journal durability), make acknowledged writes of every sort;
2. break the disk: `enospc` fills the tmpfs with a filler file; `erofs` puts a read-only
   bind mount of the tmpfs over itself. (A plain `mount -o remount,ro` of a filesystem
   with files open for writing fails with EBUSY, and the store always holds its lock file
   open: the read-only view is how a running daemon meets EROFS here. Its open journal fd
   still writes to the writable mount below, so EROFS shows at the next path operation:
   the snapshot, and the journal segment it starts);
3. write until a write fails; a few more writes of each sort; status and ping;
4. the last good state on disk: `examine` (read-only) and a second store opened on a copy;
5. repair the disk (delete the filler / remount read-write) and wait for the store to
   become healthy by itself; write again; close; reopen and read everything back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository, for tests.support

from oauthd.clock import SystemClock
from oauthd.store.file import FileStore, make_engine
from oauthd.store.inspection import examine
from tests.support.records import valued_code, valued_grant

Model = dict[str, float | None]  # key -> last_used_at / created_at, None: absent


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


async def open_store(path: Path) -> FileStore:
    engine = make_engine(path, journaled=True, interval=1.0, debounce=0.05, max_wait=0.2)
    return await FileStore.open(engine, SystemClock())


async def acknowledged_writes(store: FileStore, model: Model) -> None:
    """Writes of every sort; `model` gets what each acknowledged write left."""
    for i in range(30):
        await store.grants.put(valued_grant(f"g-{i}", float(i)))
        model[f"g-{i}"] = float(i)
    for i in range(0, 30, 3):
        await store.grants.update(f"g-{i}", lambda r: dataclasses.replace(r, last_used_at=-1.0))
        model[f"g-{i}"] = -1.0
    for i in range(1, 30, 5):
        assert await store.grants.delete(f"g-{i}")
        model[f"g-{i}"] = None
    for i in range(6):
        await store.codes.put(valued_code(f"c-{i}", float(i)))
        model[f"c-{i}"] = float(i)
    for i in range(3):
        assert await store.codes.take(f"c-{i}") is not None
        model[f"c-{i}"] = None


async def contents(store: FileStore, model: Model) -> Model:
    found: Model = {}
    for key in model:
        if key.startswith("g-"):
            g = await store.grants.get(key)
            found[key] = None if g is None else g.last_used_at
        else:
            c = await store.codes.get(key)
            found[key] = None if c is None else c.created_at
    return found


def lost(model: Model, found: Model) -> list[str]:
    return [
        f"{k}: acknowledged {v!r}, found {found[k]!r}" for k, v in model.items() if found[k] != v
    ]


def state_names(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir())


def fill(mount: Path) -> Path:
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


async def refused_writes(store: FileStore, model: Model) -> list[str]:
    """One more write of each sort while the disk is broken: the type of what each raised."""
    kept = next(k for k, v in model.items() if k.startswith("g-") and v is not None)
    code_kept = next(k for k, v in model.items() if k.startswith("c-") and v is not None)
    attempts = [
        store.grants.put(valued_grant("g-refused", 1.0)),
        store.grants.update(kept, lambda r: dataclasses.replace(r, last_used_at=-2.0)),
        store.grants.delete(kept),
        store.codes.take(code_kept),
        store.ping(),
    ]
    kinds = []
    for attempt in attempts:
        try:
            await attempt
            kinds.append("accepted")
        except Exception as exc:
            kinds.append(type(exc).__name__)
    return kinds


async def scenario(kind: str, mount: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    state = mount / "state"
    model: Model = {}
    store = await open_store(state)
    await acknowledged_writes(store, model)
    report["healthy_before"] = store.status().healthy

    filler = fill(mount) if kind == "enospc" else None
    if kind == "erofs":
        run("mount", "--bind", str(mount), str(mount))
        run("mount", "-o", "remount,bind,ro", str(mount))

    # Write until a write is refused: a full disk may still have room in a page the
    # journal already holds, and a read-only view shows only at the next snapshot.
    report["first_error"] = None
    deadline = time.monotonic() + 5
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            await store.grants.put(valued_grant(f"g-full-{n}", float(n)))
        except Exception as exc:
            report["first_error"] = type(exc).__name__
            report["first_error_text"] = str(exc)
            break  # not acknowledged: it may or may not be kept
        model[f"g-full-{n}"] = float(n)
        await asyncio.sleep(0.005)
    report["acknowledged_while_breaking"] = n - 1
    report["refused"] = await refused_writes(store, model)
    status = store.status()
    report["healthy_while_broken"], report["detail"] = status.healthy, status.detail
    await asyncio.sleep(1.6)  # the engine retries its snapshot (0.5 s, then 1 s) and fails
    report["snapshot_error_while_broken"] = store.engine.health().snapshot_error
    report["refused_later"] = await refused_writes(store, model)
    report["temp_files_while_broken"] = [n for n in state_names(state) if ".tmp-" in n]

    offline = examine(state, time.time())
    report["offline_damage"] = offline.damage
    report["offline_grants"] = offline.counts.get("grants")
    report["acknowledged_grants"] = sum(
        1 for k, v in model.items() if k.startswith("g-") and v is not None
    )
    with tempfile.TemporaryDirectory() as copy:
        shutil.copytree(state, Path(copy) / "state")
        second = await open_store(Path(copy) / "state")
        report["lost_in_copy"] = lost(model, await contents(second, model))
        await second.close()

    started = time.monotonic()
    if filler is not None:
        filler.unlink()
    else:
        run("mount", "-o", "remount,bind,rw", str(mount))
    for _ in range(300):  # 15 s
        if store.status().healthy:
            break
        await asyncio.sleep(0.05)
    report["recovered_after"] = time.monotonic() - started
    report["healthy_after"] = store.status().healthy
    for i in range(5):
        await store.grants.put(valued_grant(f"g-after-{i}", float(i)))
        model[f"g-after-{i}"] = float(i)
    await store.close()

    store = await open_store(state)
    report["lost_after_restart"] = lost(model, await contents(store, model))
    report["healthy_after_restart"] = store.status().healthy
    await store.close()
    return report


def main() -> None:
    kind, mount = sys.argv[1], Path(sys.argv[2])
    run("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount))
    try:
        report = asyncio.run(scenario(kind, mount))
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
