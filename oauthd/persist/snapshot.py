"""The snapshot: one versioned JSON document, written atomically and durably.

    {"format": "oauthd-state", "version": N, "seq": S, "saved_at": T,
     "<kind>": [record, ...], ...}

`seq` is the last journal sequence number whose change the document contains. The body is
streamed: the caller hands over each kind's records as an async iterator of JSON arrays
(`[...]`), serialised in small chunks between event-loop turns, and this module splices
them into the document and writes them from a thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import orjson

from oauthd.persist.errors import CorruptFile
from oauthd.persist.statedir import PREVIOUS, SNAPSHOT, StateDir, write_all

FORMAT = "oauthd-state"
WRITE_BUFFER = 1 << 20

Section = tuple[str, AsyncIterator[bytes]]


class _TempWriter:
    """Buffers bytes and writes them to a temp file from `executor`."""

    def __init__(self, state: StateDir, executor: Executor) -> None:
        self.name = f".{SNAPSHOT}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        self._state = state
        self._executor = executor
        self._parts: list[bytes] = []
        self._buffered = 0
        self.size = 0
        self.fd = state.create_exclusive(self.name)

    async def add(self, data: bytes) -> None:
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered >= WRITE_BUFFER:
            await self.flush()

    async def flush(self) -> None:
        data = b"".join(self._parts)
        self._parts.clear()
        self._buffered = 0
        self.size += len(data)
        await asyncio.get_running_loop().run_in_executor(self._executor, write_all, self.fd, data)

    def discard(self) -> None:
        os.close(self.fd)
        self._state.remove_quietly(self.name)


def _header(version: int, seq: int, saved_at: float) -> bytes:
    head = {"format": FORMAT, "version": version, "seq": seq, "saved_at": saved_at}
    return orjson.dumps(head)[:-1]  # leave the object open for the sections


async def _write_sections(out: _TempWriter, sections: Sequence[Section]) -> None:
    for kind, chunks in sections:
        await out.add(b',"' + kind.encode() + b'":[')
        first = True
        async for chunk in chunks:
            body = chunk[1:-1]  # each chunk is a JSON array
            if not body:
                continue
            await out.add(body if first else b"," + body)
            first = False
        await out.add(b"]")
    await out.add(b"}")
    await out.flush()


def _install(state: StateDir, temp_name: str, fd: int) -> None:
    """fsync the temp file, keep the current generation as `.1`, rename, fsync the dir."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if state.file(SNAPSHOT).exists():
        link = f".{PREVIOUS}.tmp-{os.getpid()}"
        state.remove_quietly(link)
        os.link(state.file(SNAPSHOT), state.file(link))
        os.replace(state.file(link), state.file(PREVIOUS))
    os.replace(state.file(temp_name), state.file(SNAPSHOT))
    state.fsync_dir()


async def write_snapshot(
    state: StateDir,
    executor: Executor,
    *,
    version: int,
    seq: int,
    saved_at: float,
    sections: Sequence[Section],
) -> int:
    """Write a new generation; return its size. On any failure the temp file is removed,
    nothing is renamed, and the exception propagates (the old generations are intact)."""
    out = await asyncio.get_running_loop().run_in_executor(executor, _TempWriter, state, executor)
    try:
        await out.add(_header(version, seq, saved_at))
        await _write_sections(out, sections)
    except BaseException:
        # Queued behind any write still running in the thread: closing the fd under it
        # could let the number be reused by another file.
        executor.submit(out.discard)
        raise
    try:
        await asyncio.get_running_loop().run_in_executor(
            executor, _install, state, out.name, out.fd
        )
    except BaseException:
        executor.submit(state.remove_quietly, out.name)
        raise
    return out.size


def read_snapshot(path: Path) -> dict[str, Any]:
    """Parse and check the envelope. OSError if unreadable; `CorruptFile` if damaged."""
    data = path.read_bytes()
    return parse_snapshot(str(path), data)


def parse_snapshot(name: str, data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptFile(name, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptFile(name, f'not an oauthd snapshot (format is not "{FORMAT}")')
    for key in ("version", "seq"):
        if not isinstance(doc.get(key), int) or doc[key] < 0:
            raise CorruptFile(name, f'"{key}" is missing or not a non-negative integer')
    if not isinstance(doc.get("saved_at"), int | float):
        raise CorruptFile(name, '"saved_at" is missing or not a number')
    for key, value in doc.items():
        if key not in ("format", "version", "seq", "saved_at") and not isinstance(value, list):
            raise CorruptFile(name, f'"{key}" is not an array of records')
    return doc
