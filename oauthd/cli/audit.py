"""`oauthd audit verify|export`: the audit trail, read offline (also while the daemon runs)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, BinaryIO, TextIO

import orjson

from oauthd.audit import AuditReader, Problem, Verdict
from oauthd.audit.verify import ChainCheck
from oauthd.cli.options import load
from oauthd.cli.output import fail
from oauthd.exits import ExitCode


class Unreadable(Exception):
    """A record `export` cannot read."""


FILTERS = (("user", "user"), ("client", "client_id"), ("resource", "resource"))


def add_commands(sub: Any) -> None:
    """`audit verify|export` (`sub` is argparse's subparsers action)."""
    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="action", required=True
    )
    cmd = audit.add_parser("verify", help="check every chain; exit 1 on any problem")
    cmd.add_argument("--config")
    cmd.add_argument("--chain", help="only this chain")
    cmd.set_defaults(run=cmd_verify)
    cmd = audit.add_parser("export", help="stream records as JSON lines")
    cmd.add_argument("--config")
    cmd.add_argument("--since", type=moment, help="RFC 3339 time, ISO date or unix seconds")
    cmd.add_argument("--until", type=moment, help="the same; records before it")
    cmd.add_argument("--user")
    cmd.add_argument("--client")
    cmd.add_argument("--resource")
    cmd.add_argument("--format", choices=("jsonl",), default="jsonl")
    cmd.set_defaults(run=cmd_export)


def moment(text: str) -> float:
    """Unix seconds, an RFC 3339 time or an ISO date (UTC when no offset is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (RFC 3339, ISO date or unix seconds)"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def _reader(args: argparse.Namespace) -> AuditReader:
    from oauthd.store import open_audit_reader

    return await open_audit_reader(load(args))


def _kept_whole(verdict: Verdict, retention: float) -> Verdict:
    """With retention off nothing may be missing at the chain's start either."""
    if not verdict.ok or retention > 0 or verdict.records == 0 or verdict.first == 1:
        return verdict
    what = (
        f"records 1..{verdict.first - 1} are missing, and [audit] retention is 0 "
        "(nothing is ever deleted): the oldest records were dropped"
    )
    return replace(verdict, problem=Problem("the chain's start", verdict.first, what))


def cmd_verify(args: argparse.Namespace) -> ExitCode:
    return asyncio.run(_verify(args, sys.stdout))


async def _verify(args: argparse.Namespace, out: TextIO) -> ExitCode:
    reader = await _reader(args)
    try:
        chains = await reader.chains()
        if args.chain is not None:
            if args.chain not in chains:
                return fail(f"no audit chain {args.chain!r} (found: {chains})", ExitCode.FAILURE)
            chains = [args.chain]
        if not chains:
            out.write("no audit records\n")
        retention = load(args).audit.retention
        verdicts = [_kept_whole(await _checked(reader, name), retention) for name in chains]
    finally:
        await reader.close()
    for verdict in verdicts:
        out.write(_verdict_line(verdict) + "\n")
    return ExitCode.OK if all(v.ok for v in verdicts) else ExitCode.FAILURE


async def _checked(reader: AuditReader, chain: str) -> Verdict:
    """`verify` of one chain as it is read: one record in memory at a time. Its anchor is
    read first: a store still writing only adds records after it."""
    try:
        anchor = await reader.anchor(chain)
    except ValueError as exc:
        return Verdict(chain, 0, 0, 0, Problem("the anchor", None, str(exc)))
    check = ChainCheck(chain, anchor)
    async for where, line in reader.lines(chain):
        if not check.feed(where, line):
            break
    return check.verdict()


def _verdict_line(verdict: Verdict) -> str:
    span = f"{verdict.first}..{verdict.last}" if verdict.records else "none"
    head = f"chain {verdict.chain}: {verdict.records} records checked ({span})"
    problem = verdict.problem
    if problem is None:
        return head + ", intact"
    at = f"record {problem.n}" if problem.n is not None else "a record"
    return f"{head}; {at} at {problem.where}: {problem.what}"


def cmd_export(args: argparse.Namespace) -> ExitCode:
    return asyncio.run(_export(args, sys.stdout.buffer))


async def _export(args: argparse.Namespace, out: BinaryIO) -> ExitCode:
    reader = await _reader(args)
    try:
        for name in await reader.chains():
            async for line in _matching(args, reader.lines(name)):
                out.write(line + b"\n")
    except Unreadable as exc:
        return fail(exc, ExitCode.FAILURE)
    finally:
        await reader.close()
        out.flush()
    return ExitCode.OK


async def _matching(
    args: argparse.Namespace, lines: AsyncIterator[tuple[str, bytes]]
) -> AsyncIterator[bytes]:
    wanted = {field: getattr(args, option) for option, field in FILTERS}
    async for where, line in lines:
        try:
            record = orjson.loads(line)
            at = float(record["at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise Unreadable(f"{where}: an unreadable record; `oauthd audit verify`") from None
        if args.since is not None and at < args.since:
            continue
        if args.until is not None and at >= args.until:
            continue
        if any(v is not None and record.get(f) != v for f, v in wanted.items()):
            continue
        yield line
