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
class Verdict:
    chain: str
    records: int
    first: int  # position of the first record (1 unless retention removed older ones)
    last: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(chain: str, lines: Iterable[tuple[str, bytes | str]]) -> Verdict:
    """Check `lines` ((where, line) in stored order) as the chain named `chain`."""
    check = ChainCheck(chain)
    for where, line in lines:
        if not check.feed(where, line):
            break
    return check.verdict()


class ChainCheck:
    """`verify` one record at a time (a trail larger than memory is checked as it is
    read): `feed` each (where, line) in stored order until it returns False (the first
    problem), then `verdict`."""

    __slots__ = ("_expected_prev", "chain", "count", "expected_n", "first", "problem")

    def __init__(self, chain: str) -> None:
        self.chain = chain
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
        self.count += 1
        self.expected_n, self._expected_prev = n + 1, digest
        return True

    def _fail(self, problem: Problem) -> bool:
        self.problem = problem
        return False

    def verdict(self) -> Verdict:
        last = max(self.expected_n - 1, 0)
        return Verdict(self.chain, self.count, self.first, last, self.problem)


def _gap(expected: int, found: int) -> str:
    if found > expected:
        return f"expected record {expected}, found {found}: record(s) dropped or moved"
    return f"expected record {expected}, found {found}: a record was inserted or moved"
