"""Checking a chain read back: every record's hash, position and link to the one before.

Pure: it takes the lines of one chain in stored order, each with where it was found, and
reports the first problem with its position. A chain may start after position 1 when
retention removed its oldest records; `verify` reports where it starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from oauthd.audit.chain import GENESIS, record_hash


@dataclass(slots=True, frozen=True)
class Problem:
    where: str  # "audit-00000000000000000001.jsonl line 17", "stream entry 1712-0", ...
    n: int | None  # the position the record claims, if it could be read
    what: str  # "hash does not match: the record was edited", ...


@dataclass(slots=True, frozen=True)
class Anchor:
    """Where a store last saw its chain end, kept apart from the records, so that records
    cut from the end are found: the file backend's `audit-head.json` (position and hash, at
    each snapshot and at shutdown), Redis' head key (the hash, moved with each record)."""

    hash: str
    n: int | None  # None: only the hash is kept, which the chain's last record must have
    where: str


@dataclass(slots=True, frozen=True)
class Verdict:
    chain: str
    records: int
    first: int  # position of the first record (1 unless retention removed older ones)
    last: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(
    chain: str, lines: Iterable[tuple[str, bytes | str]], anchor: Anchor | None = None
) -> Verdict:
    """Check `lines` ((where, line) in stored order) as the chain named `chain`, which
    must reach `anchor`, if there is one."""
    check = ChainCheck(chain, anchor)
    for where, line in lines:
        if not check.feed(where, line):
            break
    return check.verdict()


class ChainCheck:
    """`verify` one record at a time (a trail larger than memory is checked as it is
    read): `feed` each (where, line) in stored order until it returns False (the first
    problem), then `verdict`."""

    __slots__ = (
        "_anchored",
        "_expected_prev",
        "anchor",
        "chain",
        "count",
        "expected_n",
        "first",
        "problem",
    )

    def __init__(self, chain: str, anchor: Anchor | None = None) -> None:
        self.chain = chain
        self.anchor = anchor
        self._anchored = False  # the record the anchor names was seen
        self.count, self.first, self.expected_n = 0, 0, 0
        self._expected_prev = ""
        self.problem: Problem | None = None

    def feed(self, where: str, line: bytes | str) -> bool:
        try:
            record = orjson.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            n, prev, digest = int(record["n"]), str(record["prev"]), str(record.pop("hash"))
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            return self._fail(Problem(where, None, f"unreadable: {exc}"))
        if record.get("chain") != self.chain:
            what = f"belongs to chain {record.get('chain')!r}, not {self.chain!r}"
            return self._fail(Problem(where, n, what))
        if record_hash(prev, record) != digest:
            return self._fail(Problem(where, n, "hash does not match: the record was edited"))
        if self.count == 0:
            self.first = n
            if n == 1 and prev != GENESIS:
                self.expected_n = n
                return self._fail(Problem(where, n, "the first record does not start the chain"))
        elif n != self.expected_n:
            return self._fail(Problem(where, n, _gap(self.expected_n, n)))
        elif prev != self._expected_prev:
            what = "does not link to the record before it (prev differs): a record was replaced"
            return self._fail(Problem(where, n, what))
        anchor = self.anchor
        if anchor is not None and (anchor.n == n or anchor.n is None):
            # hash only: the anchor's record, or one after it (retention may have removed
            # the anchor's record once a later one was written)
            if anchor.hash == digest or (anchor.n is None and anchor.hash == prev):
                self._anchored = True
            elif anchor.n is not None:
                what = f"not the record {anchor.where} names at this position: the chain was "
                return self._fail(Problem(where, n, what + "rewritten"))
        self.count += 1
        self.expected_n, self._expected_prev = n + 1, digest
        return True

    def _fail(self, problem: Problem) -> bool:
        self.problem = problem
        return False

    def verdict(self) -> Verdict:
        last = max(self.expected_n - 1, 0)
        if self.problem is None and self.anchor is not None:
            self.problem = self._short_of(self.anchor, last)
        return Verdict(self.chain, self.count, self.first, last, self.problem)

    def _short_of(self, anchor: Anchor, last: int) -> Problem | None:
        """Whether the chain lacks the record its anchor names: records cut from its end.
        (The anchor is read before the records: a store still writing only adds after it;
        retention may have removed the anchor's record, never the records after it.)"""
        if self._anchored or (anchor.n is not None and self.count and self.first > anchor.n):
            return None
        if anchor.n is not None:
            what = f"the chain ends at record {last}, but {anchor.where} says it reached "
            return Problem(anchor.where, anchor.n, what + f"{anchor.n}: records were cut")
        what = f"the chain (to record {last}) lacks the last record {anchor.where} names"
        return Problem(anchor.where, None, what + ": records were cut from its end")


def _gap(expected: int, found: int) -> str:
    if found > expected:
        return f"expected record {expected}, found {found}: record(s) dropped or moved"
    return f"expected record {expected}, found {found}: a record was inserted or moved"
