"""What every command writes: the one error line, JSON for scripts, tables for people.

Errors go to stderr as `oauthd: <message>`; everything a command reports goes to `out`
(stdout unless a test passes another stream)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from oauthd.exits import ExitCode


def fail(message: object, code: ExitCode) -> ExitCode:
    """Print `oauthd: <message>` on stderr (each line of it so prefixed) and return `code`,
    for `return fail(...)`."""
    for line in str(message).splitlines() or [""]:
        print(f"oauthd: {line}", file=sys.stderr)
    return code


def write_json(doc: Any, out: TextIO) -> None:
    """`doc` (dataclasses too) as indented JSON and a newline."""
    out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cell(text: str) -> str:
    """Names come from clients (registration is open): no control characters reach the
    terminal."""
    if text.isprintable():
        return text or "-"
    return "".join(c if c.isprintable() else "?" for c in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Left-aligned columns two spaces apart, each as wide as its widest cell."""
    cells = [list(headers), *([cell(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
        out.write(line.rstrip() + "\n")
