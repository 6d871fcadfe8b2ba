"""The scope hierarchy (`[oauth] scope_implies`): `files:write` implies `files:read`.

Everywhere scopes are compared (policy, step-up challenges, refresh narrowing, consent),
a holder of a scope holds everything it implies, transitively. `ScopeHierarchy.closure`
is what a set of granted scopes amounts to; `covers` says whether it meets what is
required. Closures are cached per granted set: a token's scopes are one of few sets.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping


class ScopeHierarchy:
    """`implies`: scope -> the scopes it implies directly. Cycles are harmless (two
    scopes that imply each other are equivalent)."""

    def __init__(self, implies: Mapping[str, Iterable[str]] | None = None) -> None:
        self._implies = {scope: tuple(implied) for scope, implied in (implies or {}).items()}
        self.closure = functools.lru_cache(maxsize=1024)(self._closure)

    def __bool__(self) -> bool:
        return bool(self._implies)

    def _closure(self, granted: frozenset[str]) -> frozenset[str]:
        if not self._implies:
            return granted
        seen = set(granted)
        pending = list(granted)
        while pending:
            for implied in self._implies.get(pending.pop(), ()):
                if implied not in seen:
                    seen.add(implied)
                    pending.append(implied)
        return frozenset(seen)

    def covers(self, granted: frozenset[str], required: Iterable[str]) -> bool:
        """True if `granted`, with what it implies, includes every scope of `required`."""
        return self.closure(granted).issuperset(required)

    def missing(self, granted: frozenset[str], required: Iterable[str]) -> tuple[str, ...]:
        """The scopes of `required` that `granted` does not amount to, in order."""
        held = self.closure(granted)
        return tuple(dict.fromkeys(s for s in required if s not in held))


FLAT = ScopeHierarchy()
