"""Records to JSON and back, for the snapshot, the journal and the shared backends.

A record is a JSON object of its fields; digests and ciphertexts are hex strings, tuples
are arrays. Decoding interns the fields marked `INTERN` in `oauthd.model`, so that a
million grants of one client share one `client_id` string and one scope tuple.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from oauthd.model import RECORD_TYPES, Record

Decoder = Callable[[dict[str, Any]], Record]

RECORD_CLASS: dict[str, type[Record]] = {cls.KIND: cls for cls in RECORD_TYPES}
KINDS: tuple[str, ...] = tuple(RECORD_CLASS)


class DecodeError(ValueError):
    """A record document that does not fit its record class."""


def _hex(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode(records: Iterable[Record] | Record | Any) -> bytes:
    return orjson.dumps(records, default=_hex)


_TUPLE_CACHE: dict[tuple[str, ...], tuple[str, ...]] = {}


def _interned_tuple(value: list[str]) -> tuple[str, ...]:
    """One shared tuple of interned strings per distinct value (scope sets repeat)."""
    key = tuple(value)
    cached = _TUPLE_CACHE.get(key)
    if cached is None:
        cached = _TUPLE_CACHE.setdefault(key, tuple(sys.intern(item) for item in key))
    return cached


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "fromhex": bytes.fromhex,
    "itup": _interned_tuple,
    "tup": tuple,
    "intern": sys.intern,
}


def _converter(hint: Any, intern: bool) -> tuple[str | None, bool]:
    """(name of the converter from JSON to the field's type or None, is it optional)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _converter(inner, intern)[0], True
    if hint is bytes:
        return "fromhex", False
    if typing.get_origin(hint) is tuple:
        return ("itup" if intern else "tup"), False
    if hint is str and intern:
        return "intern", False
    return None, False


def _make_decoder(cls: type[Record]) -> Decoder:
    """A decoder generated for `cls` (as `collections.namedtuple` generates code): a million
    records at start-up make a generic loop over fields three times slower."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    full: list[str] = []
    partial: list[str] = []
    defaults: dict[str, Any] = {}
    for i, f in enumerate(fields):
        convert, optional = _converter(hints[f.name], bool(f.metadata.get("intern")))
        values = [f"d[{f.name!r}]", f"d[{f.name!r}]"]
        if f.default is not dataclasses.MISSING:
            # a field added in a later format: journal frames and shared-backend records
            # written before it lack it (snapshots are migrated, see store/migrations.py)
            defaults[f"default{i}"] = orjson.loads(encode(f.default))  # as JSON has it
            values[1] = f"d.get({f.name!r}, default{i})"
        for value, args in zip(values, (full, partial), strict=True):
            if convert is not None and optional:
                value = f"(None if (v{i} := {value}) is None else {convert}(v{i}))"
            elif convert is not None:
                value = f"{convert}({value})"
            args.append(value)
    required = [f.name for f in fields if f.default is dataclasses.MISSING]
    source = (
        f"def decode(d):\n"
        f"    if len(d) == {len(fields)}:\n"
        f"        return cls({', '.join(full)})\n"
        f"    if not (REQUIRED <= d.keys() <= NAMES):\n"
        f"        raise KeyError('expected the fields ' + {', '.join(f.name for f in fields)!r})\n"
        f"    return cls({', '.join(partial)})\n"
    )
    namespace: dict[str, Any] = {
        "cls": cls,
        "NAMES": frozenset(f.name for f in fields),
        "REQUIRED": frozenset(required),
        **defaults,
        **_CONVERTERS,
    }
    exec(source, namespace)
    decoder: Decoder = namespace["decode"]
    return decoder


DECODERS: dict[str, Decoder] = {kind: _make_decoder(cls) for kind, cls in RECORD_CLASS.items()}
_DECODE_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


def decode(kind: str, doc: dict[str, Any]) -> Record:
    """A record of `kind` from its JSON object; `DecodeError` if it does not fit."""
    return decode_many(kind, [doc])[0]


def decode_many(kind: str, docs: list[Any]) -> list[Record]:
    """Records of `kind` from a list of JSON objects; `DecodeError` if any does not fit."""
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(f"unknown record kind {kind!r}")
    try:
        return [decoder(doc) for doc in docs]
    except _DECODE_ERRORS as exc:
        raise DecodeError(f"{kind}: {type(exc).__name__}: {exc}") from None


def is_audit_frame(payload: bytes) -> bool:
    """A journal frame holding audit records (their JSON object lines, one per line), not
    a change (a JSON array)."""
    return payload[:1] == b"{"


def encode_audit(lines: list[bytes]) -> bytes:
    """An audit frame: the records sealed in one event-loop turn, one per line."""
    return b"\n".join(lines)


def encode_change(
    kind: str, key: str, record: Record | None, audit_line: bytes | None = None
) -> bytes:
    """A journal entry: `[kind, key, record]`, record null for a deletion; with the audit
    record that describes the change, `[kind, key, record, audit record]` (one frame:
    never one on disk without the other)."""
    if audit_line is None:
        return orjson.dumps([kind, key, record], default=_hex)
    return orjson.dumps([kind, key, record, orjson.Fragment(audit_line)], default=_hex)


def audit_lines_of(payload: bytes) -> list[bytes]:
    """The audit records a journal frame holds, in chain order: an audit frame's lines, or
    a change's fourth element (none for a change without one)."""
    if is_audit_frame(payload):
        return payload.split(b"\n")
    entry = orjson.loads(payload)
    return [orjson.dumps(entry[3])] if len(entry) > 3 else []


def decode_change(payload: bytes) -> tuple[str, str, Record | None]:
    try:
        kind, key, doc, *_ = orjson.loads(payload)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"journal entry: {exc}") from None
    if not isinstance(kind, str) or not isinstance(key, str):
        raise DecodeError("journal entry: kind and key must be strings")
    return kind, key, None if doc is None else decode(kind, doc)
