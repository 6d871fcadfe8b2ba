"""Errors of the durability engine."""

from __future__ import annotations

import errno
from pathlib import Path

from oauthd.exits import ExitCode


class PersistError(Exception):
    """Base class."""


class RecoveryError(PersistError):
    """The state dir cannot be loaded safely; the daemon must not start.

    `exit_code` 78 (EX_CONFIG): an operator has to look. The message names the file and
    the choice the operator has (`--recover`, `--accept-empty-state`)."""

    exit_code = ExitCode.CONFIG


def startup_io_error(exc: OSError, state_dir: Path) -> RecoveryError:
    """One line for an I/O error met while opening the state dir: the path, the errno."""
    path = exc.filename or state_dir
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return RecoveryError(
        f"{path}: {code} ({exc.strerror or exc}) while opening the state dir {state_dir}; "
        "refusing to start"
    )


class LockedError(PersistError):
    """Another process holds the state dir's lock."""

    exit_code = ExitCode.TEMPFAIL


class DiskError(PersistError):
    """A write or fsync failed; the change it carried is not durable."""


class CorruptFile(PersistError):
    """A file's bytes are not what we wrote (bad JSON, CRC, magic, truncation)."""

    def __init__(self, path: str, reason: str, offset: int | None = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{path}{where}: {reason}")
        self.path = path
        self.reason = reason
        self.offset = offset


class TooNewError(PersistError):
    """A snapshot written by a newer oauthd (higher format version)."""
