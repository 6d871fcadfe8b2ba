"""`[pages] logo`: the operator's logo file, read and checked when the config loads (so
that `check-config` and `serve` report the same error, naming the key, exit 78), and
served by oauthd from memory afterwards.

The type comes from the content, never from the file name: PNG, JPEG and WebP by their
signatures, SVG by an `<svg` element near the start of a UTF-8 text. The file must be a
regular file of at most MAX_LOGO_BYTES.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from oauthd.config import convert as to
from oauthd.config.schema import At, show

MAX_LOGO_BYTES = 256 * 1024
_SVG_START = re.compile(r"\A(?:\ufeff)?\s*<")
_SVG_ELEMENT = re.compile(r"<svg[\s>/]")


@dataclass(frozen=True, slots=True)
class Logo:
    path: Path
    content_type: str
    data: bytes = field(repr=False)

    @property
    def digest(self) -> str:
        """A short digest of the content: the version in the logo's URL and its ETag."""
        return hashlib.sha256(self.data).hexdigest()[:16]


def content_type(data: bytes) -> str | None:
    """The image type of `data` by its content, or None if it is none we serve."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    try:
        head = data[:4096].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < 4090:  # not merely a character cut at the end of the head
            return None
        head = data[: exc.start].decode("utf-8")
    if _SVG_START.match(head) and _SVG_ELEMENT.search(head):
        return "image/svg+xml"
    return None


def logo(value: object, at: At) -> Logo | None:
    """The converter of `pages.logo`: "" for none, else a path (relative to the config
    file's directory) to a PNG, JPEG, WebP or SVG file."""
    text = to.string(value, at)
    if not text:
        return None
    path = at.base_dir / text
    data = _read(path, at)
    kind = content_type(data)
    if kind is None:
        raise at.error(f"{show(str(path))} is not a PNG, JPEG, WebP or SVG image (by its content)")
    return Logo(path, kind, data)


def _read(path: Path, at: At) -> bytes:
    """At most MAX_LOGO_BYTES + 1 bytes of a regular file (O_NONBLOCK: a FIFO put there
    must not hang the start)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise at.error(f"{show(str(path))} is not a regular file")
            data = _read_up_to(fd, MAX_LOGO_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise at.error(f"cannot read {show(str(path))}: {exc.strerror or exc}") from None
    if len(data) > MAX_LOGO_BYTES:
        raise at.error(
            f"{show(str(path))} is larger than {MAX_LOGO_BYTES // 1024} KiB; use a smaller image"
        )
    if not data:
        raise at.error(f"{show(str(path))} is empty")
    return data


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
