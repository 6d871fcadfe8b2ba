"""Child of tests/e2e/test_disk_faults.py, run as root of its own user + mount namespace
(`unshare -Urm`): `oauthd serve` starting on a state dir it cannot write.

    startup_faults.py erofs|enospc MOUNTPOINT CONFIG_DIR

It mounts a 256 KiB tmpfs on MOUNTPOINT and writes a state dir there (a store with a few
grants, closed). `erofs`: the tmpfs is remounted read-only. `enospc`: the newest journal
segment gets a torn tail (which the start must copy aside before cutting it) and the tmpfs
is filled. Then it runs `oauthd serve` and prints one JSON object: its exit status, its
stderr, and the state dir's files before and after.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository, for tests.support

from oauthd.clock import SystemClock
from oauthd.persist.journal import list_segments
from oauthd.persist.statedir import StateDir
from oauthd.store.file import FileStore, make_engine
from tests.support.configs import write_config
from tests.support.ports import free_port
from tests.support.records import make_grant


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


async def make_state(state: Path) -> None:
    engine = make_engine(state, journaled=True, interval=3600, debounce=3600, max_wait=3600)
    store = await FileStore.open(engine, SystemClock())
    for _ in range(5):
        await store.grants.put(make_grant(expires_at=4102444800.0))
    await store.close()


def fill(mount: Path) -> None:
    with open(mount / "filler", "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass


def names(state: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(state.iterdir())}


def scenario(kind: str, mount: Path, config_dir: Path) -> dict[str, Any]:
    state = mount / "state"
    asyncio.run(make_state(state))
    if kind == "enospc":
        _, newest = list_segments(StateDir(state))[-1]
        with open(state / newest, "ab") as segment:
            segment.write(b"\x20\x00\x00\x00torn")  # a frame header cut short
        fill(mount)
    else:
        run("mount", "-o", "remount,ro", str(mount))
    before = names(state)
    config = write_config(
        config_dir / "oauthd.toml", free_port(), {"storage": {"path": str(state)}}, users=()
    )
    proc = subprocess.run(
        [sys.executable, "-m", "oauthd", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {
        "returncode": proc.returncode,
        "stderr": proc.stderr,
        "state": str(state),
        "before": before,
        "after": names(state),
    }


def main() -> None:
    kind, mount, config_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    run("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount))
    print(json.dumps(scenario(kind, mount, config_dir)))


if __name__ == "__main__":
    main()
