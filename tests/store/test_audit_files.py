"""Audit segment files: the last whole line, rotation and naming, a failed write cut back."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from oauthd.store import audit_files
from oauthd.store.audit_files import AuditFiles, last_line, list_segments, read_lines


@pytest.mark.parametrize(
    ("data", "line", "good"),
    [(b"", None, 0), (b"a\nb\n", b"b", 4), (b"a\nb", b"a", 2), (b"abc", None, 0)],
)
def test_last_line_skips_a_torn_one(tmp_path: Path, data: bytes, line: Any, good: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    assert last_line(path) == (line, good)


def test_last_line_of_a_file_longer_than_one_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10 + b"\n" + b"y" * 200_000 + b"\n")
    assert last_line(path) == (b"y" * 200_000, 200_012)


def test_segments_rotate_and_are_named_by_their_first_record(tmp_path: Path) -> None:
    files = AuditFiles(tmp_path / "audit", rotate_at=10)
    files.append([(1, b"one-record"), (2, b"two")])
    files.append([(3, b"three")])
    files.sync()
    files.close()
    assert [name for _, name in list_segments(tmp_path / "audit")] == [
        "audit-00000000000000000001.jsonl",
        "audit-00000000000000000002.jsonl",
    ]
    assert list(read_lines(tmp_path / "audit" / "audit-00000000000000000002.jsonl")) == [
        (1, b"two"),
        (2, b"three"),
    ]
    assert oct(os.stat(tmp_path / "audit").st_mode & 0o777) == "0o700"


def test_a_failed_write_leaves_no_half_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = AuditFiles(tmp_path / "audit")
    files.append([(1, b"first")])

    def half(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit_files, "write_all", half)
    with pytest.raises(OSError):
        files.append([(2, b"second")])
    monkeypatch.undo()
    files.append([(2, b"second")])
    files.close()
    segment = tmp_path / "audit" / "audit-00000000000000000001.jsonl"
    assert segment.read_bytes() == b"first\nsecond\n"


def test_a_retry_after_a_failure_at_a_rotation_writes_each_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = AuditFiles(tmp_path / "audit", rotate_at=10)
    real, calls = audit_files.write_all, []

    def second_fails(fd: int, data: bytes) -> None:
        calls.append(data)
        if len(calls) == 2:  # the run in the new segment, after the rotation
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(audit_files, "write_all", second_fails)
    records = [(1, b"first-one"), (2, b"second-one"), (3, b"third")]
    with pytest.raises(OSError):
        files.append(records)
    files.append(records)  # the compactor retries the whole list
    files.close()
    lines = [
        line
        for _, name in audit_files.list_segments(tmp_path / "audit")
        for line in (tmp_path / "audit" / name).read_bytes().splitlines()
    ]
    assert lines == [b"first-one", b"second-one", b"third"]


def test_recover_last_cuts_a_torn_line_and_falls_back_to_an_older_segment(tmp_path: Path) -> None:
    files = AuditFiles(tmp_path / "audit", rotate_at=1)
    files.append([(1, b"one"), (2, b"two")])
    files.close()
    newest = tmp_path / "audit" / "audit-00000000000000000002.jsonl"
    newest.write_bytes(b"tw")  # torn
    assert AuditFiles(tmp_path / "audit").recover_last() == b"one"
    assert newest.read_bytes() == b""
