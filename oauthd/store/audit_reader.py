"""Reading the file backend's audit trail offline (`oauthd audit`), also while the daemon
runs: the segments' whole lines, then the journal's audit records past the segments' last
(acknowledged but not compacted yet, even after a crash before any restart). Read-only.

A record compacted between reading the segments and reading the journal, whose journal
segment is deleted meanwhile, is missed by that one read; it is in the segments the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

from oauthd.audit import Anchor
from oauthd.persist.statedir import StateDir
from oauthd.store.audit_files import AUDIT_DIR, list_segments, read_anchor, read_lines
from oauthd.store.audit_frames import journal_chain

Line = tuple[str, bytes]


class FileAuditReader:
    """The one chain of a file backend's state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    async def chains(self) -> list[str]:
        """The chain of the records, or of the anchor when no record is left (a trail cut
        to nothing is a chain that fails `verify`, not an empty store)."""
        async for _, line in self._all():
            return [str(orjson.loads(line)["chain"])]
        try:
            found = await asyncio.to_thread(read_anchor, self.state_dir)
        except ValueError:
            return []  # unreadable, and no record to check it against
        return [found[0]] if found is not None else []

    async def lines(self, chain: str) -> AsyncIterator[Line]:
        async for where, line in self._all():
            yield where, line

    async def anchor(self, chain: str) -> Anchor | None:
        found = await asyncio.to_thread(read_anchor, self.state_dir)
        return found[1] if found is not None and found[0] == chain else None

    async def _all(self) -> AsyncIterator[Line]:
        last_n = 0
        directory = self.state_dir / AUDIT_DIR
        for _, name in await asyncio.to_thread(list_segments, directory):
            # one segment (at most ROTATE_AT bytes) in memory at a time
            for number, line in await asyncio.to_thread(_lines_of, directory / name):
                yield f"{AUDIT_DIR}/{name} line {number}", line
                last_n = _n(line, last_n)
        for frame in await asyncio.to_thread(journal_chain, StateDir(self.state_dir)):
            if frame.n > last_n:
                yield frame.where, frame.line

    async def close(self) -> None:
        return None


def _lines_of(path: Path) -> list[tuple[int, bytes]]:
    try:
        return list(read_lines(path))
    except FileNotFoundError:  # deleted by retention meanwhile
        return []


def _n(line: bytes, fallback: int) -> int:
    """The record's position (an unreadable line keeps the last one: `verify` names it)."""
    try:
        return int(orjson.loads(line)["n"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return fallback
