"""Snapshot benchmark for the file backend: save time, event-loop stall, restart, memory.

For each size N (grants) this runs, each step in its own fresh subprocess:

  1. build N realistic `Grant` records, bulk-load them into a `FileStore` in a temp dir
     (`records.load`, garbage collector paused and the records frozen afterwards, exactly as
     `FileStore.open` leaves a loaded store), then `engine.save()` `--saves` times (default
     3) while a ticker task sleeps 1 ms in a loop and records every gap beyond the 1 ms (the
     event-loop stall); the saves after the first are the steady state (a previous
     generation exists, the output buffers have been allocated once);
  2. in a fresh process each time (`--restarts`, default 3): time `FileStore.open(...)` on
     that state dir until it returns; the first run has the snapshot evicted from the page
     cache (posix_fadvise DONTNEED), the others find it cached. VmRSS after opening an empty
     store and after opening the loaded one give the bytes per grant.

Usage:
    .venv/bin/python bench/snapshot.py                  # 10k, 100k, 1M
    .venv/bin/python bench/snapshot.py --quick          # 10k, 100k
    .venv/bin/python bench/snapshot.py --sizes 10000,300000 --dir /var/tmp
    .venv/bin/python bench/snapshot.py --sizes 1000000 --chunk 250 --restarts 1
    .venv/bin/python bench/snapshot.py --load-variants 1000000   # prototype load paths

Prints a Markdown table (and the phase breakdowns) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TICK = 0.001
INSTALL = "_install (fsync+rename, thread)"
RUN_TIMEOUT = 900  # seconds, per subprocess

TARGET_STALL_MS = 10.0
TARGET_RESTART_RATIO = 1.5  # restart <= 1.5x its floor measured in the same process
TARGET_BYTES = 500


# -- helpers ------------------------------------------------------------------------------


def machine_state() -> str:
    """CPU count, load average and CPU pressure: other work on the machine skews stalls."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    try:
        pressure = Path("/proc/pressure/cpu").read_text().split()[1:3]  # some avg10, avg60
    except OSError:
        pressure = ["n/a"]
    return (
        f"{os.cpu_count()} CPUs, load average {' '.join(load)}, CPU pressure {' '.join(pressure)}"
    )


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def hwm_bytes() -> int:
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


GRANT_FIELDS_SET = [
    "id",
    "user",
    "client_id",
    "scopes",
    "resource",
    "access_hash",
    "access_expires_at",
    "refresh_hash",
    "previous_refresh_hash",
    "rotated_at",
    "successor_used",
    "upstream_tokens",
    "created_at",
    "last_used_at",
    "expires_at",
]


def missing_field_defaults(cls: type, given: list[str]) -> dict[str, Any]:
    """Empty values for record fields this benchmark does not know (the model grows):
    () for tuples, None for optional fields; a field with a default keeps it."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    extra: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        has_default = f.default is not dataclasses.MISSING
        if f.name in given or has_default or f.default_factory is not dataclasses.MISSING:
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) is tuple:
            extra[f.name] = ()
        elif type(None) in typing.get_args(hint):
            extra[f.name] = None
        else:
            raise SystemExit(f"bench: no empty value for the new field {cls.__name__}.{f.name}")
    return extra


def make_grants(n: int, seed: int = 1) -> list[Any]:
    return list(grant_stream(n, seed))


def grant_stream(n: int, seed: int = 1) -> Any:
    """N realistic grants, one at a time: ~22-char ids, a few dozen users and clients,
    shared scope tuples, 32-byte random digests, half of them rotated once (previous
    refresh hash kept). Fields added to `Grant` later get their empty value (no MCP
    sessions bound, and so on)."""
    from oauthd.crypto import new_key
    from oauthd.model import Grant

    extra = missing_field_defaults(Grant, GRANT_FIELDS_SET)
    rnd = random.Random(seed)
    now = time.time()
    users = [f"user{i:02d}@example.com" for i in range(40)]
    clients = [new_key() for _ in range(20)] + [
        f"https://client{i}.example.org/oauth/client-metadata.json" for i in range(10)
    ]
    scopes = [("mcp",), ("mcp", "offline_access"), ("mcp:read",), ("mcp:read", "mcp:write")]
    resources = ["https://mcp.example.com/mcp", "https://tools.example.com/mcp"]
    for i in range(n):
        created = now - rnd.uniform(0, 30 * 86400)
        used = created + rnd.uniform(0, now - created)
        rotated = i & 1 == 0
        raw = os.urandom(96)
        yield (
            Grant(
                id=new_key(),
                user=users[rnd.randrange(40)],
                client_id=clients[rnd.randrange(30)],
                scopes=scopes[rnd.randrange(4)],
                resource=resources[i & 1],
                access_hash=raw[:32],
                access_expires_at=used + 3600.0,
                refresh_hash=raw[32:64],
                previous_refresh_hash=raw[64:] if rotated else None,
                rotated_at=used if rotated else None,
                successor_used=rotated and i & 2 == 0,
                upstream_tokens=None,
                created_at=created,
                last_used_at=used,
                expires_at=now + rnd.uniform(30 * 86400, 90 * 86400),
                **extra,
            )
        )


def make_engine(path: Path, journaled: bool = True) -> Any:
    from oauthd.store.file import make_engine as mk

    # No saves of its own during the benchmark: only the explicit `engine.save()` runs.
    return mk(path, journaled=journaled, interval=3600.0, debounce=3600.0, max_wait=3600.0)


class Ticker:
    """Sleeps `TICK` in a loop; every gap beyond it is event-loop stall. The loop thread's
    CPU time over each gap (`cpu_gaps`) is the part of the stall the process caused itself:
    what it would be on a machine of its own, without preemption by other processes."""

    def __init__(self) -> None:
        self.gaps: list[tuple[float, float]] = []  # (offset from start, stall seconds)
        self.cpu_gaps: list[float] = []  # loop-thread CPU seconds over each gap
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    async def _run(self) -> None:
        start = time.perf_counter()
        before, cpu_before = start, time.thread_time()
        while not self._stop:
            await asyncio.sleep(TICK)
            after, cpu_after = time.perf_counter(), time.thread_time()
            self.gaps.append((before - start, max(0.0, after - before - TICK)))
            self.cpu_gaps.append(cpu_after - cpu_before)
            before, cpu_before = after, cpu_after

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(TICK * 3)  # let it settle
        self.gaps.clear()
        self.cpu_gaps.clear()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        assert self._task is not None
        await self._task

    def summary(self) -> dict[str, Any]:
        stalls = sorted(g for _, g in self.gaps)
        if not stalls:
            return {"ticks": 0, "max_ms": 0.0, "p99_ms": 0.0, "p50_ms": 0.0, "top": []}
        top = sorted(self.gaps, key=lambda g: -g[1])[:5]
        cpu = sorted(self.cpu_gaps)
        return {
            "ticks": len(stalls),
            "max_ms": stalls[-1] * 1e3,
            "max_cpu_ms": cpu[-1] * 1e3,
            "p99_cpu_ms": cpu[min(len(cpu) - 1, int(len(cpu) * 0.99))] * 1e3,
            "p99_ms": stalls[min(len(stalls) - 1, int(len(stalls) * 0.99))] * 1e3,
            "p50_ms": stalls[len(stalls) // 2] * 1e3,
            "top": [(round(at, 3), round(g * 1e3, 2)) for at, g in top],
        }


class PhaseTimer:
    """Wraps module functions with perf_counter accounting (the benchmark's own patches)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.max: dict[str, float] = {}
        self.last_start: dict[str, float] = {}  # perf_counter at the start of the last call
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        if asyncio.iscoroutinefunction(original):

            async def timed_async(*a: Any, **k: Any) -> Any:
                t = self.last_start[label] = time.perf_counter()
                try:
                    return await original(*a, **k)
                finally:
                    self._add(label, time.perf_counter() - t)

            setattr(owner, attr, timed_async)
        else:

            def timed(*a: Any, **k: Any) -> Any:
                t = self.last_start[label] = time.perf_counter()
                try:
                    return original(*a, **k)
                finally:
                    self._add(label, time.perf_counter() - t)

            setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def _add(self, label: str, dt: float) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + dt
        self.calls[label] = self.calls.get(label, 0) + 1
        self.max[label] = max(self.max.get(label, 0.0), dt)

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()

    def report(self) -> dict[str, dict[str, float]]:
        return {
            k: {
                "s": round(v, 4),
                "calls": self.calls[k],
                "max_ms": round(self.max[k] * 1e3, 2),
            }
            for k, v in self.seconds.items()
        }


def parse_floor(path: Path) -> float:
    """The restart's floor: read the snapshot file and parse the JSON of each of its lines
    (as the loader does), building no record; seconds."""
    import orjson

    loads = orjson.loads
    t = time.perf_counter()
    data = path.read_bytes()
    for line in data.split(b"\n")[1:]:
        if line[:1] == b"," and line[-2:] != b":[":
            line = line[1:]
        if line[:1] in (b"{", b"["):
            loads(b"[" + line + b"]")
    return time.perf_counter() - t


def evict_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# -- child: build, load, snapshot ---------------------------------------------------------


async def child_save(state: Path, n: int, count: int, chunk: int) -> dict[str, Any]:
    from oauthd.clock import SystemClock
    from oauthd.persist import snapshot as snapmod
    from oauthd.store import codec
    from oauthd.store import file as filemod
    from oauthd.store.file import FileStore

    if chunk:
        filemod.SNAPSHOT_CHUNK = chunk  # records per event-loop turn (read at each save)
    store = await FileStore.open(make_engine(state), SystemClock())  # first boot, empty
    rss_empty = rss_bytes()

    t = time.perf_counter()
    gc.disable()  # as FileStore.open does around a load
    grants = make_grants(n)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    load = store.by_kind["grants"].records.load
    for g in grants:
        load(g.id, g)
    del grants, g
    load_s = time.perf_counter() - t
    gc.freeze()
    gc.enable()
    rss_loaded = rss_bytes()

    timer = PhaseTimer()
    timer.wrap(codec, "encode", "codec.encode (per chunk, on the loop)")
    timer.wrap(snapmod, "_install", INSTALL)
    timer.wrap(snapmod, "write_all", "write_all (thread)")
    saves = []
    for _ in range(count):
        timer.seconds.clear()
        timer.calls.clear()
        timer.max.clear()
        gc_before = [s["collections"] for s in gc.get_stats()]
        async with Ticker() as ticker:
            t = time.perf_counter()
            ok = await store.engine.save()
            wall = time.perf_counter() - t
            install_at = timer.last_start[INSTALL] - t
        gc_after = [s["collections"] for s in gc.get_stats()]
        assert ok, store.engine.health()
        saves.append(
            {
                "wall_s": wall,
                "install_at_s": install_at,
                **ticker.summary(),
                "phases": timer.report(),
                "gc_collections": [b - a for a, b in zip(gc_before, gc_after, strict=True)],
            }
        )
    timer.restore()

    # Idle baseline for the ticker over as long as a save took (noise floor of this machine).
    async with Ticker() as idle:
        await asyncio.sleep(max(0.5, max(x["wall_s"] for x in saves)))

    size = (state / "snapshot.json").stat().st_size
    await store.close()
    return {
        "n": n,
        "build_s": build_s,
        "load_s": load_s,
        "rss_empty": rss_empty,
        "rss_loaded": rss_loaded,
        "bytes_per_grant_built": (rss_loaded - rss_empty) / n,
        "saves": saves,
        "idle": idle.summary(),
        "snapshot_bytes": size,
        "chunk": filemod.SNAPSHOT_CHUNK,
    }


# -- child: collections over records created at run time ----------------------------------


class GcPauses:
    """Times every collection the interpreter runs (gc.callbacks), by generation."""

    def __init__(self) -> None:
        self.worst: dict[int, float] = {}
        self.worst_cpu: dict[int, float] = {}  # thread CPU time: not inflated by preemption
        self.runs: dict[int, int] = {}
        self._started = (0.0, 0.0)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = (time.perf_counter(), time.thread_time())
            return
        gen = info["generation"]
        took, cpu = time.perf_counter() - self._started[0], time.thread_time() - self._started[1]
        self.worst[gen] = max(self.worst.get(gen, 0.0), took)
        self.worst_cpu[gen] = max(self.worst_cpu.get(gen, 0.0), cpu)
        self.runs[gen] = self.runs.get(gen, 0) + 1


class GcTotal:
    """Collections during a step: how many per generation, and their total time."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.runs[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._started

    def report(self) -> dict[str, Any]:
        return {"runs": self.runs, "s": round(self.seconds, 3)}


async def child_gc(state: Path, n: int) -> dict[str, Any]:
    """N grants created at run time through `store.grants.put` (durability "snapshot", so a
    put returns at once; the loop is given a turn every 100 puts, as requests would), never
    frozen by a load; then a full `gc.collect()` and two snapshots, each under the ticker."""
    from oauthd.clock import SystemClock
    from oauthd.store.file import FileStore

    store = await FileStore.open(make_engine(state, journaled=False), SystemClock())
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    t = time.perf_counter()
    put = store.grants.put
    for i, grant in enumerate(grant_stream(n)):
        await put(grant)
        if i % 100 == 0:
            await asyncio.sleep(0)
    create_s = time.perf_counter() - t
    auto = {
        "worst_ms": {g: w * 1e3 for g, w in pauses.worst.items()},
        "worst_cpu_ms": {g: w * 1e3 for g, w in pauses.worst_cpu.items()},
        "runs": dict(pauses.runs),
    }
    tracked = len(gc.get_objects())
    async with Ticker() as ticker:
        await asyncio.sleep(0.02)
        t, cpu = time.perf_counter(), time.thread_time()
        gc.collect()
        collect_ms = (time.perf_counter() - t) * 1e3
        collect_cpu_ms = (time.thread_time() - cpu) * 1e3
        await asyncio.sleep(0.02)
    saves = []
    for _ in range(2):
        async with Ticker() as save_ticker:
            t = time.perf_counter()
            assert await store.engine.save()
            saves.append({"wall_s": time.perf_counter() - t, **save_ticker.summary()})
    gc.callbacks.remove(pauses)
    await store.close()
    return {
        "n": n,
        "create_s": create_s,
        "auto_collections": auto,
        "tracked_objects": tracked,
        "full_collect_ms": collect_ms,
        "full_collect_cpu_ms": collect_cpu_ms,
        "full_collect_stall_ms": ticker.summary()["max_ms"],
        "saves": saves,
    }


def run_gc(n: int, directory: str | None) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="oauthd-bench-gc-", dir=directory))
    try:
        print(f"# {fmt_n(n)}: grants created at run time, then gc.collect() ...", file=sys.stderr)
        return run_child(["--child-gc", str(base / "state"), str(n)])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def print_gc(r: dict[str, Any]) -> None:
    """Collections judged on the loop thread's CPU time (what a collection costs the loop
    on a machine of its own); wall times, which add preemption by other processes, after."""
    a = r["auto_collections"]
    full = r["full_collect_cpu_ms"]
    auto = max(a["worst_cpu_ms"].values(), default=0.0)
    save = r["saves"][-1]
    print(
        "\n| grants created at run time | tracked objects after | full gc.collect(), CPU "
        "(ms) | worst automatic collection while creating, CPU (ms) | full gc.collect(), "
        "wall / ticker stall (ms) | snapshot stall max, wall (ms) | snapshot wall (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {fmt_n(r['n'])} | {r['tracked_objects']:,} "
        f"| {full:.1f}{mark(full <= TARGET_STALL_MS)} "
        f"| {auto:.1f}{mark(auto <= TARGET_STALL_MS)} "
        f"| {r['full_collect_ms']:.1f} / {r['full_collect_stall_ms']:.1f} "
        f"| {save['max_ms']:.1f}{mark(save['max_ms'] <= TARGET_STALL_MS)} "
        f"| {save['wall_s']:.2f} |"
    )
    print(
        f"\nCreating them took {r['create_s']:.1f} s. Automatic collections while creating, by "
        f"generation: {a['runs']}; worst wall (ms) {_ms(a['worst_ms'])}, worst thread CPU (ms) "
        f"{_ms(a['worst_cpu_ms'])}."
    )


def _ms(by_gen: dict[str, float]) -> str:
    return ", ".join(f"gen {g}: {v:.1f}" for g, v in sorted(by_gen.items()))


# -- child: restart -----------------------------------------------------------------------


async def child_open(state: Path, n: int, cold: bool) -> dict[str, Any]:
    from oauthd.clock import SystemClock
    from oauthd.persist import recovery
    from oauthd.persist.engine import Engine
    from oauthd.store import file as filemod
    from oauthd.store.file import FileStore

    # RSS of an empty store, in this very process.
    empty_dir = Path(tempfile.mkdtemp(prefix="oauthd-bench-empty-", dir=state.parent))
    empty = await FileStore.open(make_engine(empty_dir), SystemClock())
    rss_empty = rss_bytes()
    await empty.close()
    shutil.rmtree(empty_dir)

    if cold:
        evict_from_page_cache(state / "snapshot.json")
    cpu = time.process_time()
    floor_s = parse_floor(state / "snapshot.json")
    floor_cpu_s = time.process_time() - cpu
    if cold:
        evict_from_page_cache(state / "snapshot.json")

    timer = PhaseTimer()
    timer.wrap(recovery, "open_snapshot", "open_snapshot (read the file, envelope)")
    timer.wrap(filemod, "decode_document", "decode_document (parse + decode, chunk by chunk)")
    timer.wrap(FileStore, "_apply", "FileStore._apply (expiry filter, RecordMap.load)")
    timer.wrap(Engine, "start", "Engine.start (journal segment)")
    hwm_before = hwm_bytes()
    collections = GcTotal()
    gc.callbacks.append(collections)
    t, cpu = time.perf_counter(), time.process_time()
    store = await FileStore.open(make_engine(state), SystemClock())
    open_s, open_cpu_s = time.perf_counter() - t, time.process_time() - cpu
    gc.callbacks.remove(collections)
    timer.restore()
    loaded = await store.grants.count()
    gc.collect()  # what a running daemon settles at; frozen records are not scanned
    rss_loaded = rss_bytes()
    hwm = hwm_bytes()
    await store.close()
    phases = timer.report()
    return {
        "n": n,
        "loaded": loaded,
        "cold": cold,
        "open_s": open_s,
        "floor_s": floor_s,
        "open_cpu_s": open_cpu_s,
        "floor_cpu_s": floor_cpu_s,
        "gc_during_open": collections.report(),
        "phases": phases,
        "rss_empty": rss_empty,
        "rss_loaded": rss_loaded,
        "bytes_per_grant": (rss_loaded - rss_empty) / n,
        "peak_rss": max(hwm, hwm_before),
        "process_to_ready_s": time.time() - float(os.environ["BENCH_SPAWNED_AT"]),
    }


# -- prototype load paths (--load-variants): what a faster restart could look like --------
#
# Not oauthd code: prototypes measured against the current path on the same grants.
#   whole-doc   today's path: one orjson.loads of the document, then codec's decoder
#   lines       the same JSON document, but the writer puts each chunk on its own line
#               (JSON allows the newline; orjson never emits one inside a string), so the
#               loader can parse and decode one chunk at a time with today's decoder
#   lines-fast  as `lines`, with a decoder that calls Grant positionally (no **kwargs)
#   positional  as `lines`, each record an array in field order (a format version bump)

VARIANT_LOADERS = ("whole-doc", "lines", "lines-fast", "positional")


def write_variants(directory: Path, n: int) -> None:
    import dataclasses
    import operator

    import orjson

    from oauthd.model import Grant
    from oauthd.store import codec

    gc.disable()
    grants = make_grants(n)
    head = {"format": "oauthd-state", "version": 1, "seq": 0, "saved_at": time.time()}
    row = operator.attrgetter(*(f.name for f in dataclasses.fields(Grant)))

    def positional(chunk: list[Any]) -> bytes:
        return orjson.dumps([row(g) for g in chunk], default=codec._hex)

    encoders: dict[str, Callable[[Any], bytes]] = {
        "objects": codec.encode,
        "positional": positional,
    }
    for name, encode in encoders.items():
        with open(directory / f"{name}.json", "wb") as f:
            f.write(orjson.dumps(head)[:-1] + b',\n"grants":[\n')
            for i in range(0, n, 1000):
                f.write((b"" if i == 0 else b",\n") + encode(grants[i : i + 1000])[1:-1])
            f.write(b"\n]}\n")


def _chunk_lines(path: Path) -> Any:
    with open(path, "rb") as f:
        f.readline()  # {"format": ..., "saved_at": ...,
        f.readline()  # "grants":[
        for line in f:
            if line.startswith(b"]}"):
                return
            yield b"[" + line.rstrip(b"\n").rstrip(b",") + b"]"


def fast_decoder(cls: type, positional: bool) -> Callable[[Any], Any]:
    """What `codec` could generate once per record class: one positional constructor call
    with the conversions inline (no per-field loop, no **kwargs). `positional`: the record
    is a JSON array in field order, else an object."""
    import dataclasses
    import types
    import typing

    intern = sys.intern
    cache: dict[tuple[str, ...], tuple[str, ...]] = {}

    def interned_tuple(value: list[str]) -> tuple[str, ...]:
        t = tuple(value)
        found = cache.get(t)
        if found is None:
            found = cache.setdefault(t, tuple(intern(x) for x in t))
        return found

    env: dict[str, Any] = {
        "cls": cls,
        "fromhex": bytes.fromhex,
        "intern": intern,
        "itup": interned_tuple,
    }
    hints = typing.get_type_hints(cls)
    args = []
    for i, f in enumerate(dataclasses.fields(cls)):
        raw = f"r[{i}]" if positional else f"r[{f.name!r}]"
        hint, optional = hints[f.name], False
        if isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint):
            (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
            optional = True
        interned = bool(f.metadata.get("intern"))
        if hint is bytes:
            fn = "fromhex"
        elif typing.get_origin(hint) is tuple:
            fn = "itup" if interned else "tuple"
        elif hint is str and interned:
            fn = "intern"
        else:
            args.append(raw)
            continue
        args.append(
            f"(None if (v{i} := {raw}) is None else {fn}(v{i}))" if optional else f"{fn}({raw})"
        )
    source = "def decode(r):\n    return cls(" + ", ".join(args) + ")\n"
    exec(source, env)
    decode: Callable[[Any], Any] = env["decode"]
    return decode


def child_variant(directory: Path, loader: str) -> dict[str, Any]:
    import orjson

    from oauthd.model import Grant
    from oauthd.persist.snapshot import parse_snapshot
    from oauthd.store import codec
    from oauthd.store.file import decode_document
    from oauthd.store.records import RecordMap

    records: RecordMap[Any] = RecordMap()
    now = time.time()
    base = rss_bytes()
    gc.disable()
    started = time.perf_counter()
    if loader == "whole-doc":
        path = directory / "objects.json"
        whole = parse_snapshot(str(path), path.read_bytes())
        doc = decode_document((k, v) for k, v in whole.items() if isinstance(v, list))
        for g in doc["grants"]:
            if g.expires_at is None or g.expires_at > now:
                records.load(g.key, g)
        del doc
    elif loader == "lines":
        decode = codec.DECODERS["grants"]
        for chunk in _chunk_lines(directory / "objects.json"):
            for item in orjson.loads(chunk):
                g = decode(item)
                if g.expires_at is None or g.expires_at > now:
                    records.load(g.key, g)
    elif loader in ("lines-fast", "positional"):
        positional = loader == "positional"
        decode = fast_decoder(Grant, positional)
        path = directory / ("positional.json" if positional else "objects.json")
        for chunk in _chunk_lines(path):
            for item in orjson.loads(chunk):
                g = decode(item)
                if g.expires_at is None or g.expires_at > now:
                    records.load(g.id, g)
    else:
        raise SystemExit(f"unknown loader {loader}")
    gc.freeze()
    gc.enable()
    seconds = time.perf_counter() - started
    return {
        "loader": loader,
        "loaded": len(records),
        "seconds": seconds,
        "peak_rss": hwm_bytes(),
        "bytes_per_grant": (rss_bytes() - base) / len(records),
    }


def run_variants(n: int, directory: str | None, repeats: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="oauthd-bench-variants-", dir=directory))
    try:
        print(f"# writing {fmt_n(n)} grants in two layouts ...", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, __file__, "--child-write-variants", str(base), str(n)],
            check=True,
            timeout=RUN_TIMEOUT,
        )
        sizes = {p.stem: p.stat().st_size for p in base.glob("*.json")}
        print(
            "| load path | load (s), median | min-max (s) | peak RSS (MiB) | RSS/grant (B) "
            "| file (MB) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for loader in VARIANT_LOADERS:
            print(f"# {loader} x{repeats} ...", file=sys.stderr, flush=True)
            runs = [run_child(["--child-variant", str(base), loader]) for _ in range(repeats)]
            times = sorted(r["seconds"] for r in runs)
            size = sizes["positional" if loader == "positional" else "objects"]
            print(
                f"| {loader} | {times[len(times) // 2]:.2f} | {times[0]:.2f}-{times[-1]:.2f} "
                f"| {max(r['peak_rss'] for r in runs) / 2**20:.0f} "
                f"| {runs[0]['bytes_per_grant']:.0f} | {size / 1e6:.0f} |"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- parent -------------------------------------------------------------------------------


def run_child(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ, BENCH_SPAWNED_AT=repr(time.time()))
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def fmt_n(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def mark(ok: bool) -> str:
    return "" if ok else " (miss)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--quick", action="store_true", help="10k and 100k only")
    parser.add_argument("--dir", default=None, help="where the temp state dirs go (local disk)")
    parser.add_argument(
        "--restarts",
        type=int,
        default=3,
        help="restart runs per size (the first with the snapshot evicted from the page cache)",
    )
    parser.add_argument("--json", action="store_true", help="also print the raw results")
    parser.add_argument(
        "--saves", type=int, default=3, help="snapshots per size; the first is not counted"
    )
    parser.add_argument(
        "--chunk", type=int, default=0, help="override SNAPSHOT_CHUNK (records per loop turn)"
    )
    parser.add_argument(
        "--load-variants",
        type=int,
        metavar="N",
        help="instead: time prototype load paths (chunked lines, positional) on N grants",
    )
    parser.add_argument(
        "--gc",
        type=int,
        metavar="N",
        help="instead: a full collection and snapshots after N grants created at run time",
    )
    parser.add_argument("--child-save", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-gc", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-write-variants", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-variant", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--child-open", nargs=3, metavar=("DIR", "N", "COLD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.child_save:
        d, n, saves, chunk = args.child_save
        result = asyncio.run(child_save(Path(d), int(n), int(saves), int(chunk)))
        print(json.dumps(result))
        return
    if args.child_gc:
        print(json.dumps(asyncio.run(child_gc(Path(args.child_gc[0]), int(args.child_gc[1])))))
        return
    if args.gc:
        state_before = machine_state()
        result = run_gc(args.gc, args.dir)
        print_gc(result)
        print(f"\nMachine before: {state_before}; after: {machine_state()}.")
        if args.json:
            print("\n```json\n" + json.dumps(result, indent=1) + "\n```")
        return
    if args.child_write_variants:
        write_variants(Path(args.child_write_variants[0]), int(args.child_write_variants[1]))
        return
    if args.child_variant:
        d, loader = args.child_variant
        print(json.dumps(child_variant(Path(d), loader)))
        return
    if args.load_variants:
        run_variants(args.load_variants, args.dir, args.restarts)
        return
    if args.child_open:
        d, n, cold = args.child_open
        print(json.dumps(asyncio.run(child_open(Path(d), int(n), cold == "1"))))
        return

    sizes = [10_000, 100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    state_before = machine_state()
    results = []
    for n in sizes:
        base = Path(tempfile.mkdtemp(prefix="oauthd-bench-", dir=args.dir))
        try:
            state = base / "state"
            print(f"# {fmt_n(n)}: build, load, save ...", file=sys.stderr, flush=True)
            saved = run_child(
                ["--child-save", str(state), str(n), str(max(2, args.saves)), str(args.chunk)]
            )
            print(f"# {fmt_n(n)}: restart x{args.restarts} ...", file=sys.stderr, flush=True)
            restarts = [
                run_child(["--child-open", str(state), str(n), "1" if i == 0 else "0"])
                for i in range(args.restarts)
            ]
            results.append({"saved": saved, "restarts": restarts})
        finally:
            shutil.rmtree(base, ignore_errors=True)

    print_tables(results)
    print(f"\nMachine before: {state_before}; after: {machine_state()}.")
    if args.json:
        print("\n```json\n" + json.dumps(results, indent=1) + "\n```")


def print_tables(results: list[dict[str, Any]]) -> None:
    print(
        "| grants | snapshot wall (s) | stall max (ms) | stall p99 (ms) "
        "| restart median (s) | restart min-max (s) | restart / floor, cold; warm "
        "| RSS/grant after restart (B) "
        "| RSS/grant bulk-built (B) | peak RSS on restart (MiB) | snapshot file (MB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s, runs = r["saved"], r["restarts"]
        steady = s["saves"][1:]
        stall_max = max(x["max_ms"] for x in steady)
        stall_p99 = sorted(x["p99_ms"] for x in steady)[len(steady) // 2]
        wall = sorted(x["wall_s"] for x in steady)[len(steady) // 2]
        n = s["n"]
        big = n >= 1_000_000
        times = sorted(x["open_s"] for x in runs)
        median = times[len(times) // 2]
        per_grant = runs[0]["bytes_per_grant"]
        ratios = [x["open_s"] / x["floor_s"] for x in runs]
        worst = max(ratios)
        ratio_text = "; ".join(f"{q:.2f}" for q in ratios)
        print(
            f"| {fmt_n(n)} | {wall:.2f} "
            f"| {stall_max:.1f}{mark(not big or stall_max <= TARGET_STALL_MS)} "
            f"| {stall_p99:.2f} "
            f"| {median:.2f} "
            f"| {times[0]:.2f}-{times[-1]:.2f} "
            f"| {ratio_text}{mark(not big or worst <= TARGET_RESTART_RATIO)} "
            f"| {per_grant:.0f}{mark(per_grant <= TARGET_BYTES)} "
            f"| {s['bytes_per_grant_built']:.0f} "
            f"| {max(x['peak_rss'] for x in runs) / 2**20:.0f} "
            f"| {s['snapshot_bytes'] / 1e6:.1f} |"
        )
    print(
        f"\nTargets: stall <= {TARGET_STALL_MS:g} ms and restart <= {TARGET_RESTART_RATIO:g}x "
        "its floor (reading the snapshot and parsing its JSON, no record built, timed in the "
        f'same process just before) at 1M grants; <= {TARGET_BYTES} B per grant. "(miss)" '
        "marks a missed target. "
        "Snapshot wall and stall p99: median over the steady-state saves (all but the first); "
        "stall max: the worst of them. Restart: `FileStore.open` in a fresh process, first run "
        "with the snapshot evicted from the page cache."
    )
    print("\nDetails:\n")
    for r in results:
        s, runs = r["saved"], r["restarts"]
        print(f"- {fmt_n(s['n'])} (SNAPSHOT_CHUNK {s['chunk']}):")
        for i, save in enumerate(s["saves"], 1):
            print(
                f"  - save {i}: {save['wall_s']:.3f} s, {save['ticks']} ticks, stall max "
                f"{save['max_ms']:.2f} ms (loop-thread CPU {save['max_cpu_ms']:.2f} ms), p99 "
                f"{save['p99_ms']:.2f} ms, p50 {save['p50_ms']:.3f} ms; worst (offset s, ms): "
                f"{save['top']}; _install began at "
                f"{save['install_at_s']:.3f} s; gc runs per generation {save['gc_collections']}"
            )
            for label, p in save["phases"].items():
                print(f"    - {label}: {p['s']:.3f} s in {p['calls']} calls, max {p['max_ms']} ms")
        print(
            f"  - idle ticker: max {s['idle']['max_ms']:.2f} ms, p99 {s['idle']['p99_ms']:.2f} ms"
        )
        for i, run in enumerate(runs):
            phases = ", ".join(f"{k} {p['s']:.2f}" for k, p in run["phases"].items())
            print(
                f"  - restart {i + 1} ({'cold' if run['cold'] else 'warm'} page cache): "
                f"FileStore.open {run['open_s']:.2f} s ({run['open_cpu_s']:.2f} s CPU; process "
                f"spawn to ready {run['process_to_ready_s']:.2f} s), floor {run['floor_s']:.2f} s "
                f"({run['floor_cpu_s']:.2f} s CPU), {run['loaded']} grants; collections during "
                f"the open {run['gc_during_open']}; {phases}"
            )
        print(
            f"  - build {s['build_s']:.2f} s, bulk load {s['load_s']:.2f} s; RSS empty store "
            f"{runs[0]['rss_empty'] / 2**20:.0f} MiB, after restart "
            f"{runs[0]['rss_loaded'] / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
