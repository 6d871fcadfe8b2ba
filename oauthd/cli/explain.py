"""`oauthd explain --user U [--client C]`: when and why that user was last made to log in
again, and what their client did before it, from the audit trail (`oauthd/audit/explain.py`)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson

from oauthd import store
from oauthd.audit.explain import Record, Relogin, explain
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


async def _records(config: Config, user: str) -> list[Record]:
    """The records `explain` needs: the user's, and every client's registration and
    deletion (a re-registered app is found by its fingerprint). Only those are kept in
    memory, however long the trail."""
    reader = await store.open_audit_reader(config)
    try:
        found: list[Record] = []
        for chain in await reader.chains():
            async for _, line in reader.lines(chain):
                record = orjson.loads(line)
                if record.get("user") == user or str(record.get("event")).startswith("client_"):
                    found.append(record)
        found.sort(key=lambda r: float(r.get("at", 0)))  # chains of several instances
        return found
    finally:
        await reader.close()


def cmd_explain(args: argparse.Namespace) -> ExitCode:
    config = options.load(args)
    records = asyncio.run(_records(config, args.user))
    found = explain(records, args.user, args.client)
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
