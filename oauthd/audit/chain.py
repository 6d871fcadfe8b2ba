"""The hash chain: each record carries the hash of the one before it.

A record is one JSON object (one line of an audit segment, one stream entry, one row):
its fields, `n` (its position in the chain, from 1), `at` (unix seconds), `chain` (the
chain's name), `request_id` when known, `prev` (the previous record's `hash`; 64 zeros for
the first) and `hash` = SHA-256 over `prev`, a newline and the record without `hash`
serialised with sorted keys. Editing a record changes its hash; inserting, dropping or
reordering one breaks `n` or `prev` (`oauthd.audit.verify`).
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import orjson

from oauthd.audit.event import AuditEvent, Plain
from oauthd.log import request_id_var

GENESIS = "0" * 64


class ChainHead(NamedTuple):
    """Where a chain ends: the last record's position and hash (0 and GENESIS: empty)."""

    n: int = 0
    hash: str = GENESIS


_new_head = tuple.__new__  # ChainHead(n, hash) without the NamedTuple's Python __new__


def record_hash(prev: str, body: dict[str, Any]) -> str:
    """The hash of a record whose fields (without `hash`) are `body`."""
    return _digest(prev, orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


def _digest(prev: str, canonical: bytes) -> str:
    return hashlib.sha256(b"%s\n%s" % (prev.encode(), canonical)).hexdigest()


def seal(head: ChainHead, chain: str, event: AuditEvent, at: float) -> tuple[bytes, ChainHead]:
    """The record for `event` after `head`, as one JSON line (no newline), and the new head.
    The line is the hashed serialisation with `hash` appended (one encoding, not two: the
    keys are sorted but for `hash`, last; `verify` re-serialises, so the order is free)."""
    body: dict[str, Plain] = event.fields()
    n = head.n + 1
    body["n"] = n
    body["at"] = int(at * 1_000_000) / 1_000_000  # microseconds; round() costs more here
    body["chain"] = chain
    request_id = request_id_var.get()
    if request_id is not None:
        body["request_id"] = request_id
    prev = body["prev"] = head.hash
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = _digest(prev, canonical)
    line = b'%s,"hash":"%s"}' % (canonical[:-1], digest.encode())
    return line, _new_head(ChainHead, (n, digest))


def head_of(line: bytes | str) -> ChainHead:
    """The head a chain has after the record `line` (trusted: read back from our own store)."""
    record = orjson.loads(line)
    return ChainHead(int(record["n"]), str(record["hash"]))


class Chain:
    """One instance's chain in memory: its name and head. `seal` advances it; a write that
    could not be made durable puts the head back (`restore`) before anything else seals."""

    __slots__ = ("head", "name")

    def __init__(self, name: str, head: ChainHead | None = None) -> None:
        self.name = name
        self.head = head or ChainHead()

    def seal(self, event: AuditEvent, at: float) -> tuple[bytes, ChainHead]:
        """The record's line, and the head before it (for `restore`)."""
        before = self.head
        line, self.head = seal(before, self.name, event, at)
        return line, before

    def restore(self, head: ChainHead) -> None:
        self.head = head
