"""Snapshot format versions of the records, and the steps between them.

Bump `CURRENT_VERSION` whenever a record's JSON shape changes, add the step from the old
version here, and add a fixture of the old version under `tests/fixtures/snapshots/`.
"""

from __future__ import annotations

from oauthd.persist.migrate import Migration

CURRENT_VERSION = 1

# version N -> N + 1; none yet: version 1 is the first format.
MIGRATIONS: dict[int, Migration] = {}
