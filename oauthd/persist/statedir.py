"""The state directory: creation with safe modes, the single-writer lock, the first-boot
marker, durable file operations and quarantine.

Layout (all files 0600, the dir 0700):
  lock                      flock'd for the life of the daemon, never renamed
  initialized               first-boot marker
  snapshot.json             newest snapshot generation
  snapshot.json.1           previous generation
  journal-<first seq>.log   journal segments
  *.corrupt-<UTC ts>        quarantined files, byte-identical to what was found
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from oauthd.persist.errors import LockedError

LOCK = "lock"
MARKER = "initialized"
SNAPSHOT = "snapshot.json"
PREVIOUS = "snapshot.json.1"
FILE_MODE = 0o600
DIR_MODE = 0o700


def utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (short writes happen on full disks)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write returned no progress")
        view = view[written:]


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    def ensure(self) -> None:
        """Create the dir 0700 if missing (umask cannot widen it: mkdir then chmod)."""
        old = os.umask(0o077)
        try:
            self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        finally:
            os.umask(old)
        if self.path.stat().st_mode & 0o077:
            os.chmod(self.path, DIR_MODE)

    def lock(self) -> None:
        """Take the exclusive lock or raise `LockedError` naming the holder."""
        fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{self.path} is in use by another oauthd ({holder}); "
                "stop it first or point storage.path elsewhere"
            ) from None
        os.ftruncate(fd, 0)
        info = f"pid {os.getpid()} on {socket.gethostname()} since {utc_stamp()}\n"
        os.pwrite(fd, info.encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def fsync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def create_exclusive(self, name: str) -> int:
        return os.open(
            self.file(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE
        )

    def write_durably(self, name: str, data: bytes) -> None:
        """Atomic replace of a small file: temp, write, fsync, rename, fsync dir."""
        temp = f".{name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        fd = self.create_exclusive(temp)
        try:
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.remove_quietly(temp)
            raise
        os.close(fd)
        os.replace(self.file(temp), self.file(name))
        self.fsync_dir()

    def has_marker(self) -> bool:
        return self.file(MARKER).exists()

    def write_marker(self) -> None:
        self.write_durably(MARKER, f"oauthd state dir, first boot {utc_stamp()}\n".encode())

    def quarantine(self, name: str) -> str:
        """Move a damaged file aside, byte-identical; return its new name."""
        target = f"{name}.corrupt-{utc_stamp()}"
        n = 1
        while self.file(target).exists():
            n += 1
            target = f"{name}.corrupt-{utc_stamp()}-{n}"
        os.rename(self.file(name), self.file(target))
        os.chmod(self.file(target), FILE_MODE)
        self.fsync_dir()
        return target

    def remove_quietly(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.file(name))

    def remove_temp_files(self) -> list[str]:
        """Delete the temp files of a process killed mid-write (a snapshot's may be as big
        as the state; left alone, each crash would leak one). Only under the lock."""
        doomed = [n for n in self.names() if n.startswith(".") and ".tmp-" in n]
        for name in doomed:
            self.remove_quietly(name)
        if doomed:
            self.fsync_dir()
        return doomed

    def names(self) -> list[str]:
        return sorted(os.listdir(self.path)) if self.path.is_dir() else []
