"""Copy every live record from one store to another (`oauthd state copy`), then verify.

Each table of the source is scanned (expired records are never yielded, so never copied),
written to the target with `put_many` in batches (a round trip each), and the target is then
counted: it must hold at least as many live records of each kind as were copied, and
exactly as many when it was empty before (a non-empty target is refused unless `merge`).
A copied record that expires while the copy runs is not expected in the target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from oauthd.model import Record
from oauthd.store.base import Store, StoreError, Table

Progress = Callable[[str, int, int], None]
Pairs = list[tuple[Table[Any], Table[Any]]]  # (source table, target table) of each kind
Expiries = list[float | None]

BATCH = 500  # records per `put_many`: one round trip to a shared backend


class TargetNotEmpty(StoreError):
    """The target holds live records and `merge` was not asked for."""

    def __init__(self, kinds: list[str]) -> None:
        super().__init__(
            f"the target already holds live records ({', '.join(kinds)}): refusing to copy "
            "into it; pass --merge to add to (and overwrite records of the same key in) it"
        )
        self.kinds = kinds


class CountMismatch(StoreError):
    """After the copy the target holds fewer live records of a kind than expected."""

    def __init__(
        self,
        copied: dict[str, int],
        expected: dict[str, int],
        found: dict[str, int],
        bad: list[str],
    ) -> None:
        super().__init__(
            "count mismatch after the copy: "
            + ", ".join(f"{k} expected {expected[k]}, found {found.get(k, 0)}" for k in bad)
        )
        self.copied = copied
        self.expected = expected
        self.found = found


async def _live(table: Table[Any]) -> int:
    n = 0
    async for _ in table.scan():
        n += 1
    return n


async def _has_live(table: Table[Any]) -> bool:
    async for _ in table.scan():
        return True
    return False


def _pairs(source: Store, target: Store) -> Pairs:
    targets = {t.kind: t for t in target.tables()}
    return [(s, targets[s.kind]) for s in source.tables()]


async def copy_state(
    source: Store,
    target: Store,
    progress: Progress,
    *,
    merge: bool = False,
    batch: int = BATCH,
) -> dict[str, int]:
    """Copy, then verify; return how many records of each kind were copied.

    Raises `TargetNotEmpty` (nothing was written), `CountMismatch`, or what the backends
    raise (`Unavailable`)."""
    pairs = _pairs(source, target)
    before = await _target_before(pairs, merge)
    copied: dict[str, int] = {}
    expiries: dict[str, list[float | None]] = {}
    for src, dst in pairs:
        expiries[src.kind] = await _copy_table(src, dst, progress, batch)
        copied[src.kind] = len(expiries[src.kind])
    expected = _expected(expiries, target_now(target))
    await _verify(pairs, copied, expected, before if merge else None)
    return copied


async def _target_before(pairs: Pairs, merge: bool) -> dict[str, int]:
    """The target's live counts before a merge; without `merge` the target must be empty."""
    if merge:
        return {t.kind: await _live(t) for _, t in pairs}
    busy = [t.kind for _, t in pairs if await _has_live(t)]
    if busy:
        raise TargetNotEmpty(busy)
    return {}


async def _copy_table(src: Table[Any], dst: Table[Any], progress: Progress, batch: int) -> Expiries:
    """Put every live record of `src` into `dst`; return the expiry of each one copied."""
    records: list[Record] = [r async for r in src.scan()]
    total = len(records)
    progress(src.kind, 0, total)
    for start in range(0, total, batch):
        chunk = records[start : start + batch]
        await dst.put_many(chunk)
        progress(src.kind, start + len(chunk), total)
    return [r.expires_at for r in records]


def _expected(expiries: dict[str, Expiries], now: float) -> dict[str, int]:
    """How many copied records of each kind are still live at `now`."""
    return {kind: sum(1 for e in exp if e is None or e > now) for kind, exp in expiries.items()}


async def _verify(
    pairs: Pairs,
    copied: dict[str, int],
    expected: dict[str, int],
    before: dict[str, int] | None,
) -> None:
    """Count the target: exactly `expected` after a copy into an empty target; after a
    merge (`before` given) at least that many, as keys may overlap those already there."""
    found = {t.kind: await _live(t) for _, t in pairs}
    if before is not None:
        expected = {k: max(expected[k], before[k]) for k in expected}
        bad = [k for k in expected if found[k] < expected[k]]
    else:
        bad = [k for k in expected if found[k] != expected[k]]
    if bad:
        raise CountMismatch(copied, expected, found, bad)


def target_now(store: Store) -> float:
    clock = getattr(store, "clock", None)
    now: float = clock.now() if clock is not None else time.time()
    return now
