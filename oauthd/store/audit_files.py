"""The file backend's audit segments: `<state dir>/audit/audit-<first n>.jsonl`, one record
line per line, a new file once the current one reaches ROTATE_AT bytes.

Plain blocking file calls: the trail runs them on its own thread (one thread, so that
writes stay in order and a write and its fsync are one hop); start-up recovery and the
offline reader call them directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from oauthd.audit import Anchor
from oauthd.persist.statedir import DIR_MODE, FILE_MODE, StateDir, write_all

log = logging.getLogger("oauthd.audit")

AUDIT_DIR = "audit"
# Beside the audit dir, in the state dir: the chain's position and hash when the segments
# were last synced (before the journal's old segments go, and at shutdown), so that
# records cut from the end of the segments are found (`read_anchor`).
ANCHOR = "audit-head.json"
ROTATE_AT = 64 * 1024 * 1024
SEGMENT_RE = re.compile(r"^audit-(\d{20})\.jsonl$")
TAIL_READ = 64 * 1024


def segment_name(first_n: int) -> str:
    return f"audit-{first_n:020d}.jsonl"


def list_segments(directory: Path) -> list[tuple[int, str]]:
    """(first n, name) of every segment, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), n) for n in names if (m := SEGMENT_RE.match(n))]
    return sorted(found)


def last_line(path: Path) -> tuple[bytes | None, int]:
    """The last whole line of `path` (None if it has none) and the size up to its end (a
    torn line after it is not counted)."""
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        read = min(size, TAIL_READ)
        while True:
            file.seek(size - read)
            tail = file.read(read)
            end = tail.rfind(b"\n")
            if end < 0 and read == size:
                return None, 0
            start = tail.rfind(b"\n", 0, end) if end >= 0 else -1
            if end >= 0 and (start >= 0 or read == size):
                return tail[start + 1 : end], size - read + end + 1
            read = min(size, read * 4)


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line) of every whole line; a last line without its newline
    (being written, or torn) is left out."""
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            if line.endswith(b"\n"):
                yield number, line[:-1]


class AuditFiles:
    """Appends record lines to the newest segment; `sync` makes what was appended durable."""

    def __init__(self, directory: Path, rotate_at: int = ROTATE_AT) -> None:
        self.directory = directory
        self.rotate_at = rotate_at
        self._fd: int | None = None
        self._size = 0
        self._dir_dirty = False
        self.last_n = 0  # the position of the last record written (0: none yet)
        self.last_line: bytes | None = None  # ... and its line

    def ensure(self) -> None:
        old = os.umask(0o077)
        try:
            self.directory.mkdir(mode=DIR_MODE, exist_ok=True)
        finally:
            os.umask(old)

    def recover_last(self) -> bytes | None:
        """The last record line on disk; a torn last line (a crash mid-write) is cut off
        first. Blocking: at start, before serving."""
        for _, name in reversed(list_segments(self.directory)):
            path = self.directory / name
            line, good = last_line(path)
            if good < path.stat().st_size:
                cut = path.stat().st_size - good
                with open(path, "r+b") as file:
                    file.truncate(good)
                    os.fsync(file.fileno())
                log.warning(
                    f"torn last audit record in {name}: {cut} bytes cut off (its journal "
                    "frame, if it was acknowledged, brings it back)",
                    extra={"event": "audit_torn_tail", "discarded_bytes": cut},
                )
            if line is not None:
                return line
        return None

    def append(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Append (n, line) records in order, one write per run of records that fits the
        segment; on an error the segment is cut back to where it was, so that a retry
        never leaves half a line in the middle. Records at or before the last one written
        are skipped: a retry after a failure half-way (at a rotation) writes each once."""
        start = 0
        while start < len(records) and records[start][0] <= self.last_n:
            start += 1
        if start == 0 and self._fd is not None and self._write_whole(records):
            return  # the usual case: one join and one write, no Python step per record
        while start < len(records):
            if self._fd is None or self._size >= self.rotate_at:
                self._open(records[start][0])
            assert self._fd is not None
            run, size, end = [], self._size, start
            while end < len(records) and (end == start or size < self.rotate_at):
                line = records[end][1] + b"\n"
                run.append(line)
                size += len(line)
                end += 1
            self._write_run(b"".join(run))
            self._size, start, self.last_n = size, end, records[end - 1][0]
            self.last_line = records[end - 1][1]

    def _write_whole(self, records: Sequence[tuple[int, bytes]]) -> bool:
        """Every record to the open segment in one write, if it has room for them all;
        False (nothing written) if not."""
        assert self._fd is not None
        lines = [line for _, line in records]
        if self._size + sum(map(len, lines)) + len(lines) >= self.rotate_at:
            return False
        lines.append(b"")
        data = b"\n".join(lines)
        self._write_run(data)
        self._size += len(data)
        self.last_n, self.last_line = records[-1]
        return True

    def _write_run(self, data: bytes) -> None:
        """Whole lines to the open segment; on an error it is cut back to where it was."""
        assert self._fd is not None
        try:
            write_all(self._fd, data)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise

    def _open(self, next_n: int) -> None:
        """The newest segment while it has room, else a new one starting at `next_n`."""
        if self._fd is not None:
            os.fsync(self._fd)  # a rotated segment is durable: `sync` covers the current one
            os.close(self._fd)
            self._fd = None
        segments = list_segments(self.directory)
        if segments and self._size == 0:
            path = self.directory / segments[-1][1]
            size = path.stat().st_size
            if size < self.rotate_at:
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                self._size = size
                return
        self.ensure()
        name = self.directory / segment_name(next_n)
        # not O_EXCL: a leftover of an attempt that failed after creating it is reused
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(name, flags, FILE_MODE)
        self._size = os.fstat(self._fd).st_size
        self._dir_dirty = True

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
        if self._dir_dirty:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._dir_dirty = False

    def write_anchor(self) -> None:
        """Record where the synced segments end (`ANCHOR`, replaced atomically): call
        after `sync`. A crash before it leaves an older anchor, which only asks less."""
        if self.last_line is None:
            return
        last = orjson.loads(self.last_line)
        doc = {"chain": str(last["chain"]), "n": int(last["n"]), "hash": str(last["hash"])}
        StateDir(self.directory.parent).write_durably(ANCHOR, orjson.dumps(doc) + b"\n")

    def expire(self, cutoff: float) -> list[str]:
        """Delete the oldest segments whose newest record is older than `cutoff` (unix
        seconds): a leading run only, never the newest segment, so that the chain left has
        no gap even if the clock stepped back; the names deleted."""
        doomed = []
        for _, name in list_segments(self.directory)[:-1]:
            line, _ = last_line(self.directory / name)
            try:
                expired = line is None or float(orjson.loads(line)["at"]) < cutoff
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                expired = False  # unreadable: kept (and `oauthd audit verify` names it)
            if not expired:
                break
            doomed.append(name)
        for name in doomed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
        if doomed:
            self._dir_dirty = True
            self.sync()
        return doomed

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def read_anchor(state_dir: Path) -> tuple[str, Anchor] | None:
    """(chain, anchor) from the state dir's `ANCHOR`; None if there is none. ValueError
    if it cannot be read."""
    try:
        data = (state_dir / ANCHOR).read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = orjson.loads(data)
        return str(doc["chain"]), Anchor(str(doc["hash"]), int(doc["n"]), ANCHOR)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{ANCHOR} is unreadable: {exc}") from None
