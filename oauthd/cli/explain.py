"""`oauthd explain --user U [--client C]`: when and why that user was last made to log in
again, and what their client did before it, from the audit trail (`oauthd/audit/explain.py`)."""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from oauthd import store
from oauthd.audit.explain import BEFORE_KEPT, Record, Relogin, explain
from oauthd.audit.reader import AuditReader
from oauthd.cli import options
from oauthd.cli.output import fail
from oauthd.config import Config
from oauthd.exits import ExitCode

WHY = {
    "superseded_refresh_token_replayed": "an old refresh token was presented again (reuse "
    "detection ended the grant)",
    "replay_after_grace": "the previous refresh token was presented after its successor was "
    "used (reuse detection ended the grant)",
    "revoked_by_user": "the user revoked the app (Connected apps or consent withdrawn)",
    "revoked_by_admin": "an administrator revoked the session (oauthd sessions revoke)",
    "revoked_by_client": "the app revoked its own refresh token (/revoke)",
    "client_deleted": "the app's registration was deleted (oauthd clients delete)",
    "client_reregistered": "the app registered anew (same name and redirect URIs): the new "
    "registration has no grant",
    "expired": "the grant expired (its refresh token was not used in time)",
    "upstream_refresh_failed": "the identity provider refused to refresh the user's tokens",
    "authorized_again": "the app started a new authorization although its grant was live",
}


def add_commands(sub: Any) -> None:
    cmd = sub.add_parser("explain", help="why a user was last made to log in again")
    cmd.add_argument("--user", required=True)
    cmd.add_argument("--client")
    cmd.add_argument("--config")
    cmd.set_defaults(run=cmd_explain)


CALL_EVENTS = frozenset({"call_decided", "call_completed"})


def _needed(record: Record, user: str) -> bool:
    """What the search for the re-login needs: the user's records but their calls (a
    step-up excepted: it ends a grant), and every client's registration and deletion (a
    re-registered app is found by its fingerprint)."""
    event = record.get("event")
    if event in CALL_EVENTS:
        return record.get("user") == user and record.get("decision") == "step_up"
    return record.get("user") == user or str(event).startswith("client_")


async def _scan(reader: AuditReader, keep: Callable[[Record], bool]) -> AsyncIterator[Record]:
    for chain in await reader.chains():
        async for _, line in reader.lines(chain):
            record = orjson.loads(line)
            if keep(record):
                yield record


async def _explain(config: Config, user: str, client: str | None) -> Relogin | None:
    """Two passes over the trail, so that memory holds the records of grants, not of
    calls (there may be millions): the first finds the re-login without the calls, the
    second collects the last `BEFORE_KEPT` records, calls included, of the earlier grant's
    client before it."""
    reader = await store.open_audit_reader(config)
    try:
        records = [r async for r in _scan(reader, lambda r: _needed(r, user))]
        found = explain(records, user, client)
        if found is None:
            return None
        old_client = found.previous.get("client_id")
        latest: list[tuple[float, int, Record]] = []  # a min-heap of the latest ones
        order = itertools.count()

        def before(record: Record) -> bool:
            return (
                record.get("user") == user
                and record.get("client_id") == old_client
                and float(record.get("at", 0)) < found.at
            )

        async for record in _scan(reader, before):
            heapq.heappush(latest, (float(record["at"]), next(order), record))
            if len(latest) > BEFORE_KEPT:
                heapq.heappop(latest)
        return replace(found, before=tuple(r for _, _, r in sorted(latest)))
    finally:
        await reader.close()


def cmd_explain(args: argparse.Namespace) -> ExitCode:
    config = options.load(args)
    found = asyncio.run(_explain(config, args.user, args.client))
    if found is None:
        whose = f" with {args.client}" if args.client else ""
        return fail(f"the audit trail has no re-login of {args.user}{whose}", ExitCode.FAILURE)
    print(render(found, args.user))
    return ExitCode.OK


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _line(record: Record) -> str:
    skip = {"n", "chain", "prev", "hash", "at", "event", "user", "client_id"}
    fields = " ".join(f"{k}={v}" for k, v in record.items() if k not in skip)
    return f"  {_when(float(record['at']))}  {record['event']}  {fields}".rstrip()


def render(found: Relogin, user: str) -> str:
    reason = found.reason
    rule = reason.partition(":")[2] if reason.startswith("policy_rule:") else ""
    why = f"a policy step-up (rule {rule})" if rule else WHY.get(reason, reason)
    lines = [
        f"{user} logged in again at {_when(found.at)} (client {found.client_id})",
        f"reason: {reason}: {why}",
    ]
    if found.because is not None:
        lines.append(f"because of:\n{_line(found.because)}")
    elif reason == "expired" and found.previous.get("expires_at"):
        lines.append(f"the grant expired at {_when(float(found.previous['expires_at']))}")
    lines.append("what the client did before:")
    lines.extend(_line(r) for r in found.before)
    return "\n".join(lines)
