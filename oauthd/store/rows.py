"""Records as rows: the form in which the memory tables keep them.

A row is an exact tuple of a record's field values in field order. CPython's collector
stops tracking a tuple whose items are all untracked (str, bytes, numbers, None, and
tuples of those: every field of every record) the first time it survives a collection,
so a million rows cost a full collection nothing, while a million slots dataclasses made
it walk them all (about 0.3 s on the event loop at 1M grants, issue #15). A table hands
out a fresh record built from the row; records stay immutable values either way.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

Row = tuple[Any, ...]


def packer(cls: type[Any]) -> Callable[[Any], Row]:
    """The row of a record of `cls` (every record class has more than one field, so
    `attrgetter` returns a tuple)."""
    names = [f.name for f in dataclasses.fields(cls)]
    assert len(names) > 1
    return operator.attrgetter(*names)


def unpacker(cls: type[Any]) -> Callable[[Row], Any]:
    """The record of `cls` a row holds."""

    def unpack(row: Row) -> Any:
        return cls(*row)

    return unpack
