"""Snapshot format migrations: one function per version step, N -> N+1.

The steps themselves know record fields, so they live with the records' codec
(`oauthd.store.migrations`); this module only runs the chain."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from oauthd.persist.errors import RecoveryError, TooNewError

Document = dict[str, Any]
Migration = Callable[[Document], Document]


def migrate(doc: Document, current: int, steps: Mapping[int, Migration]) -> Document:
    """Bring `doc` up to `current`, one step at a time. `TooNewError` for a newer doc."""
    version = doc["version"]
    if version > current:
        raise TooNewError(f"format version {version} is newer than this oauthd's {current}")
    while version < current:
        step = steps.get(version)
        if step is None:
            raise RecoveryError(f"no migration from snapshot format version {version}")
        doc = step(doc)
        version += 1
        doc["version"] = version
    return doc
