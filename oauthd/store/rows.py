"""Records as rows: the form in which the memory tables keep them.

A row is an exact tuple of a record's field values. CPython's collector stops tracking a
tuple whose items are all untracked (str, bytes, numbers, None, and tuples of those:
every field of every record) the first time it survives a collection, so a million rows
cost a full collection nothing, while a million slots dataclasses made it walk them all
(0.7 s of CPU on the event loop at 1M grants, issue #15). A table hands out a fresh record
built from the row; records stay immutable values either way.

Most kinds keep their fields in field order. A grant, a million of them, is packed
tighter: its timestamps and digests share one bytes object (`_GrantLayout`), 13 slots
instead of 20, one object instead of up to three digests and five floats.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import operator
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from oauthd.model import RECORD_TYPES, Grant

Row = tuple[Any, ...]


@dataclasses.dataclass(slots=True, frozen=True)
class Layout:
    """How the records of one class become rows and back, and where a row's expiry is."""

    pack: Callable[[Any], Row]
    unpack: Callable[[Row], Any]
    expires_at: Callable[[Row], float | None]


def _plain(cls: type[Any]) -> Layout:
    names = [f.name for f in dataclasses.fields(cls)]
    assert len(names) > 1  # so that `attrgetter` returns a tuple

    def unpack(row: Row) -> Any:
        return cls(*row)

    return Layout(
        operator.attrgetter(*names), unpack, operator.itemgetter(names.index("expires_at"))
    )


# access_expires_at, created_at, last_used_at, expires_at, rotated_at (NaN: None), the
# lengths of the access and refresh digests, whether a previous refresh digest follows
_TIMES = struct.Struct("<5dHHB")
_unpack_times = _TIMES.unpack_from
_HEAD = _TIMES.size
_EXPIRES = struct.Struct("<d")
_EXPIRES_AT = 24  # offset of expires_at in the blob
_NAN = math.nan


def _or_nan(value: float | None) -> float:
    return _NAN if value is None else value


def _pack_grant(g: Grant) -> Row:
    previous = g.previous_refresh_hash
    blob = _TIMES.pack(
        g.access_expires_at,
        g.created_at,
        g.last_used_at,
        _or_nan(g.expires_at),
        _or_nan(g.rotated_at),
        len(g.access_hash),
        len(g.refresh_hash),
        previous is not None,
    )
    blob += g.access_hash + g.refresh_hash + (previous or b"")
    return (
        g.id,
        g.user,
        g.client_id,
        g.scopes,
        g.resource,
        blob,
        g.successor_used,
        g.upstream_tokens,
        g.mcp_sessions,
        g.access_scopes,
        g.superseded_hashes,
        g.groups,
        g.principal,
    )


def _unpack_grant(row: Row) -> Grant:
    # one unpacking of the row and module-level names: a grant is read on every /mcp call
    (
        id_,
        user,
        client_id,
        scopes,
        resource,
        blob,
        successor_used,
        upstream,
        sessions,
        access_scopes,
        superseded,
        groups,
        principal,
    ) = row
    access_expires, created, used, expires, rotated, a, r, has_previous = _unpack_times(blob)
    a += _HEAD
    r += a
    return Grant(
        id_,
        user,
        client_id,
        scopes,
        resource,
        blob[_HEAD:a],
        access_expires,
        blob[a:r],
        blob[r:] if has_previous else None,
        None if rotated != rotated else rotated,  # NaN
        successor_used,
        upstream,
        sessions,
        created,
        used,
        None if expires != expires else expires,
        access_scopes,
        superseded,
        groups,
        principal,
    )


def _grant_expires_at(row: Row) -> float | None:
    (expires,) = _EXPIRES.unpack_from(row[5], _EXPIRES_AT)
    return None if expires != expires else float(expires)


LAYOUTS: dict[str, Layout] = {cls.KIND: _plain(cls) for cls in RECORD_TYPES}
LAYOUTS[Grant.KIND] = Layout(_pack_grant, _unpack_grant, _grant_expires_at)


@contextmanager
def young_collections_only() -> Iterator[None]:
    """While a snapshot loads: collections of the young generations only. They untrack the
    rows as they are made; a full one would walk the growing lists of decoded rows (12 of
    them took 0.5 s of a 200k-grant load)."""
    threshold = gc.get_threshold()
    gc.set_threshold(threshold[0], threshold[1], 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
