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
    as_tuple = tuple(sys.intern(item) for item in value)
    return _TUPLE_CACHE.setdefault(as_tuple, as_tuple)


def _tuple(value: list[str]) -> tuple[str, ...]:
    return tuple(value)


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _converter(hint: Any, intern: bool) -> Callable[[Any], Any] | None:
    """How to turn a decoded JSON value into the field's type; None when it already is."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        convert = _converter(inner, intern)
        return None if convert is None else _optional(convert)
    if hint is bytes:
        return bytes.fromhex
    if typing.get_origin(hint) is tuple:
        return _interned_tuple if intern else _tuple
    if hint is str and intern:
        return sys.intern
    return None


def _make_decoder(cls: type[Record]) -> Decoder:
    hints = typing.get_type_hints(cls)
    converters = []
    for f in dataclasses.fields(cls):
        convert = _converter(hints[f.name], bool(f.metadata.get("intern")))
        if convert is not None:
            converters.append((f.name, convert))

    def decode(doc: dict[str, Any]) -> Record:
        try:
            for name, convert in converters:
                doc[name] = convert(doc[name])
            return cls(**doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"{cls.KIND}: {exc}") from None

    return decode


DECODERS: dict[str, Decoder] = {kind: _make_decoder(cls) for kind, cls in RECORD_CLASS.items()}


def decode(kind: str, doc: dict[str, Any]) -> Record:
    """A record of `kind` from its JSON object (which this mutates); `DecodeError` if bad."""
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(f"unknown record kind {kind!r}")
    if not isinstance(doc, dict):
        raise DecodeError(f"{kind}: expected an object, got {type(doc).__name__}")
    return decoder(doc)


def encode_change(kind: str, key: str, record: Record | None) -> bytes:
    """A journal entry: `[kind, key, record]`, record null for a deletion."""
    return orjson.dumps([kind, key, record], default=_hex)


def decode_change(payload: bytes) -> tuple[str, str, Record | None]:
    try:
        kind, key, doc = orjson.loads(payload)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"journal entry: {exc}") from None
    if not isinstance(kind, str) or not isinstance(key, str):
        raise DecodeError("journal entry: kind and key must be strings")
    return kind, key, None if doc is None else decode(kind, doc)
