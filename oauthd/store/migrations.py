"""Snapshot format versions of the records, and the steps between them.

Bump `CURRENT_VERSION` whenever a record's JSON shape changes, add the step from the old
version here, and add a fixture of the old version under `tests/fixtures/snapshots/`.
"""

from __future__ import annotations

from oauthd.persist.migrate import Document, Migration

CURRENT_VERSION = 5


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


def _v2_to_v3(doc: Document) -> Document:
    """Version 3 (issue #11, items 7 and 8) adds `last_used_at` to clients (None: not used
    since the upgrade, so a registration of version 2 counts as never used for the groups
    and `clients stats`, but it keeps its `expires_at` of None: nothing made before the
    upgrade is removed as unused) and two kinds, `registration_groups` and
    `account_sessions`, that a version-2 snapshot has none of. The bump is what makes an
    older oauthd refuse a newer snapshot rather than take the new kinds for damage."""
    for record in doc.get("clients", []):
        record.setdefault("last_used_at", None)
    doc.setdefault("registration_groups", [])
    doc.setdefault("account_sessions", [])
    return doc


def _v3_to_v4(doc: Document) -> Document:
    """Version 4 (issue #12: several resources) names the resource of every consent and MCP
    session, and keeps the user's groups on a grant. Before it oauthd protected one
    resource, the `[upstream]` shorthand at `/mcp`: a consent's `resource` (a path) is
    `/mcp`; an MCP session's (an identifier, as its grant's) is its grant's `resource`, or
    "" if the grant is not in the snapshot (an orphan, purged with its expiry). Grants get
    no groups (none known; a grant made at the next sign-in has them), and neither do the
    pending authorizations, codes and device flows that carry them to a grant."""
    for record in doc.get("consents", []):
        record.setdefault("resource", "/mcp")
    resource_of = {g.get("id"): g.get("resource", "") for g in doc.get("grants", [])}
    for record in doc.get("mcp_sessions", []):
        record.setdefault("resource", resource_of.get(record.get("grant_id"), ""))
    for kind in ("grants", "pending", "codes", "devices"):
        for record in doc.get(kind, []):
            record.setdefault("groups", [])
    return doc


def _v4_to_v5(doc: Document) -> Document:
    """Version 5 (issue #13: machine and enterprise identities, signing keys) says who a
    grant's `user` is (`principal`: every grant before it is a person's, "user"), gives
    clients the keys and resource of private_key_jwt and client credentials (none before
    it), and adds three kinds: `signing_keys` (the first start of version 5 creates the
    first key), `used_assertions` and `account_links`."""
    for record in doc.get("grants", []):
        record.setdefault("principal", "user")
    for record in doc.get("clients", []):
        record.setdefault("jwks", None)
        record.setdefault("jwks_uri", None)
        record.setdefault("resource", None)
    for kind in ("signing_keys", "used_assertions", "account_links"):
        doc.setdefault(kind, [])
    return doc


# version N -> N + 1
MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}
