"""Snapshot format versions of the records, and the steps between them.

Bump `CURRENT_VERSION` whenever a record's JSON shape changes, add the step from the old
version here, and add a fixture of the old version under `tests/fixtures/snapshots/`.
"""

from __future__ import annotations

from oauthd.persist.migrate import Document, Migration

CURRENT_VERSION = 2


def _v1_to_v2(doc: Document) -> Document:
    """Version 2 (issue #11) adds fields with defaults: `redirect_uri_given` to pending flows
    and codes (True: every flow of version 1 is treated as having named its redirect URI, the
    stricter reading), `access_scopes` (None: the access token carries the grant's scopes)
    and `superseded_hashes` (none known) to grants."""
    for kind in ("pending", "codes"):
        for record in doc.get(kind, []):
            record.setdefault("redirect_uri_given", True)
    for record in doc.get("grants", []):
        record.setdefault("access_scopes", None)
        record.setdefault("superseded_hashes", "")
    return doc


# version N -> N + 1
MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2}
