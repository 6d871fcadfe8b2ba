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
    count, first, expected_n, expected_prev = 0, 0, 0, ""
    for where, line in lines:
        try:
            record = orjson.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            n, prev, digest = int(record["n"]), str(record["prev"]), str(record.pop("hash"))
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            problem = Problem(where, None, f"unreadable: {exc}")
            return _failed(chain, count, first, expected_n, problem)
        if record.get("chain") != chain:
            what = f"belongs to chain {record.get('chain')!r}, not {chain!r}"
            return _failed(chain, count, first, expected_n, Problem(where, n, what))
        if record_hash(prev, record) != digest:
            what = "hash does not match: the record was edited"
            return _failed(chain, count, first, expected_n, Problem(where, n, what))
        if count == 0:
            first = n
            if n == 1 and prev != GENESIS:
                what = "the first record does not start the chain"
                return _failed(chain, count, first, n, Problem(where, n, what))
        elif n != expected_n:
            what = _gap(expected_n, n)
            return _failed(chain, count, first, expected_n, Problem(where, n, what))
        elif prev != expected_prev:
            what = "does not link to the record before it (prev differs): a record was replaced"
            return _failed(chain, count, first, expected_n, Problem(where, n, what))
        count += 1
        expected_n, expected_prev = n + 1, digest
    return Verdict(chain, count, first, max(expected_n - 1, 0), None)


def _gap(expected: int, found: int) -> str:
    if found > expected:
        return f"expected record {expected}, found {found}: record(s) dropped or moved"
    return f"expected record {expected}, found {found}: a record was inserted or moved"


def _failed(chain: str, count: int, first: int, expected: int, problem: Problem) -> Verdict:
    return Verdict(chain, count, first, max(expected - 1, 0), problem)
