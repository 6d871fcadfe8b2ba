"""A file-backend state dir of N usable grants, for bench/backends_scale.py.

bench/snapshot.py's `make_grants` makes realistic grants whose tokens nobody knows; here
each grant is rebuilt with `Grant.first` (oauthd's own constructor, whatever the record
layout) so that its tokens can be recomputed from its index: grant i has the id
`grant_id(i)`, the access token `access_token(i)` and the refresh token
`refresh_token(i)`. Users, clients and creation times come from `make_grants`; every
grant is bound to the benchmark's resource and one of `CLIENTS` public clients, which are
written too.

    .venv/bin/python bench/scale_state.py DIR --grants 1000000 --resource URL
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy import REDIRECT_URI, USER
from snapshot import make_engine, make_grants

CLIENTS = 10
SEED = b"oauthd-backends-scale"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _derived(tag: bytes, i: int, size: int) -> str:
    return _b64(hashlib.sha256(SEED + tag + i.to_bytes(4, "big")).digest()[:size])


def grant_id(i: int) -> str:
    return _derived(b"id", i, 16)


def client_id(i: int) -> str:
    return f"scale-client-{i % CLIENTS}"


def access_token(i: int) -> str:
    return f"{grant_id(i)}.{_derived(b'access', i, 32)}"


def refresh_token(i: int) -> str:
    return f"{grant_id(i)}.{_derived(b'refresh', i, 32)}"


def build(n: int, resource: str) -> tuple[list[Any], list[Any]]:
    from oauthd.crypto import hash_secret
    from oauthd.model import Client, Grant

    now = time.time()
    clients = [
        Client(
            client_id=client_id(k),
            client_name=f"scale {k}",
            redirect_uris=(REDIRECT_URI,),
            grant_types=("authorization_code", "refresh_token"),
            response_types=("code",),
            token_endpoint_auth_method="none",
            application_type="native",
            scope="mcp",
            secret_hash=None,
            source="dcr",
            created_at=now,
            last_used_at=now,
        )
        for k in range(CLIENTS)
    ]
    grants = []
    for i, g in enumerate(make_grants(n)):
        grants.append(
            Grant.first(
                grant_id(i),
                USER,
                client_id(i),
                ("mcp",),
                resource,
                access_hash=hash_secret(access_token(i).partition(".")[2]),
                refresh_hash=hash_secret(refresh_token(i).partition(".")[2]),
                now=g.created_at,
                access_expires_at=now + 86400.0,
                expires_at=now + 30 * 86400.0,
            )
        )
    return clients, grants


async def write_state(path: Path, n: int, resource: str) -> dict[str, float]:
    from oauthd.clock import SystemClock
    from oauthd.store.file import FileStore

    store = await FileStore.open(make_engine(path), SystemClock())
    t = time.perf_counter()
    gc.disable()
    clients, grants = build(n, resource)
    for client in clients:
        await store.clients.put(client)
    load = store.by_kind["grants"].records.load
    for g in grants:
        load(g.id, g)
    del grants
    gc.enable()
    built = time.perf_counter() - t
    t = time.perf_counter()
    if not await store.engine.save():
        raise RuntimeError(f"snapshot failed: {store.engine.health()}")
    saved = time.perf_counter() - t
    await store.close()
    size = (path / "snapshot.json").stat().st_size
    return {"build_s": built, "save_s": saved, "snapshot_bytes": size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dir", type=Path)
    p.add_argument("--grants", type=int, default=1_000_000)
    p.add_argument("--resource", required=True, help="the resource identifier (issuer/mcp)")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    print(json.dumps(asyncio.run(write_state(args.dir, args.grants, args.resource))))


if __name__ == "__main__":
    main()
