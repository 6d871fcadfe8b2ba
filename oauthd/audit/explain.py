"""`oauthd explain`: when and why a user was last made to log in again, from the trail.

Pure: it takes parsed records (dicts, any chain, in any order: sorted by `at`). A re-login
is a `token_issued` by a login (authorization_code, device code) for the client after an
earlier grant of that client, or of a client with the same app `fingerprint` (the app
registered anew: "client re-registered"). Its reason is the grant-ending record before it
(reuse, a revocation, a client deleted, a policy step-up); without one, the expiry the
last issued or refreshed record announced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from oauthd.audit import reasons

LOGIN_GRANTS = frozenset({"authorization_code", "urn:ietf:params:oauth:grant-type:device_code"})
ENDINGS = frozenset(
    {"reuse_detected", "token_revoked", "client_deleted", "upstream_refresh_failed"}
)
GRANT_RECORDS = frozenset({"token_issued", "token_refreshed", "token_reissued"})
BEFORE_KEPT = 5

Record = Mapping[str, Any]


@dataclass(slots=True, frozen=True)
class Relogin:
    at: float
    client_id: str
    reason: str
    because: Record | None  # the record that says why (None: inferred)
    previous: Record  # the last record of the earlier grant
    before: tuple[Record, ...]  # what the client did before it


def explain(records: Iterable[Record], user: str, client: str | None = None) -> Relogin | None:
    """The user's last re-login (of `client`, if given), or None."""
    trail = sorted((r for r in records if "at" in r), key=lambda r: float(r["at"]))
    apps = {r["client_id"]: r.get("fingerprint") for r in trail if r.get("fingerprint")}
    found: Relogin | None = None
    for index, record in enumerate(trail):
        if not _is_login(record, user, client):
            continue
        earlier = _earlier(trail[:index], user, str(record["client_id"]), apps)
        if earlier is not None:
            found = _relogin(trail[:index], record, earlier, apps)
    return found


def _is_login(record: Record, user: str, client: str | None) -> bool:
    return (
        record.get("event") == "token_issued"
        and record.get("user") == user
        and record.get("grant_type") in LOGIN_GRANTS
        and (client is None or record.get("client_id") == client)
    )


def _same_app(a: str, b: str, apps: Mapping[str, Any]) -> bool:
    return a == b or (apps.get(a) is not None and apps.get(a) == apps.get(b))


def _earlier(
    before: list[Record], user: str, client_id: str, apps: Mapping[str, Any]
) -> Record | None:
    """The last record of an earlier grant of that user and app."""
    for record in reversed(before):
        if (
            record.get("event") in GRANT_RECORDS
            and record.get("user") == user
            and _same_app(str(record.get("client_id")), client_id, apps)
        ):
            return record
    return None


def _relogin(
    before: list[Record], login: Record, previous: Record, apps: Mapping[str, Any]
) -> Relogin:
    user, old_client = login["user"], str(previous["client_id"])
    since = float(previous["at"])
    ending: Record | None = None
    for record in before:
        if float(record["at"]) < since:
            continue
        if _ends(record, user, old_client):
            ending = record
    if ending is not None:
        reason = str(ending.get("reason") or ending["event"])
    elif old_client != login["client_id"]:
        reason = reasons.CLIENT_REREGISTERED
    elif float(previous.get("expires_at") or 0) <= float(login["at"]):
        reason = reasons.EXPIRED
    else:
        reason = reasons.AUTHORIZED_AGAIN
    client_before = [
        r for r in before if r.get("client_id") == old_client and r.get("user") == user
    ]
    return Relogin(
        float(login["at"]),
        str(login["client_id"]),
        reason,
        ending,
        previous,
        tuple(client_before[-BEFORE_KEPT:]),
    )


def _ends(record: Record, user: str, client_id: str) -> bool:
    event = record.get("event")
    if event == "client_deleted":
        return record.get("client_id") == client_id
    if record.get("user") != user or record.get("client_id") != client_id:
        return False
    if event in ENDINGS:
        return event != "token_revoked" or record.get("token_type") != "access_token"
    # a policy step-up or denial sends the client to authorize anew
    return event == "call_decided" and record.get("decision") == "step_up"
