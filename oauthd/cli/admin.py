"""`oauthd sessions ...`, `oauthd clients ...` and `oauthd keys ...`: the running daemon's
sessions, clients and signing keys, over the admin socket. Tables for people, `--json` for
scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from oauthd.admin.client import AdminClient, AdminRefused, AdminUnreachable
from oauthd.admin.views import ClientGroupView, ClientView, KeyView, SessionView
from oauthd.cli import client_add
from oauthd.cli.options import load
from oauthd.cli.output import cell, fail, plural, table, utc, write_json
from oauthd.config import ConfigError, admin_socket_path
from oauthd.exits import ExitCode


def add_commands(sub: Any) -> None:
    """The `sessions` and `clients` commands (`sub` is argparse's subparsers action)."""
    sessions = sub.add_parser("sessions", help="sessions (grants) of the running daemon")
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = admin_command(actions, "list", "list live sessions")
    listing.add_argument("--user", help="only this user's")
    listing.add_argument("--client", metavar="CLIENT_ID", help="only this client's")
    listing.add_argument("--resource", metavar="R", help=RESOURCE_HELP.format("only those"))
    listing.add_argument(
        "--principal",
        choices=PRINCIPALS,
        help="only those of people (user) or of clients acting for themselves (service)",
    )
    revoke = admin_command(actions, "revoke", "end sessions now (their tokens stop working)")
    which = revoke.add_mutually_exclusive_group()
    which.add_argument("--id", help="the session with this id")
    which.add_argument("--user", help="every session of this user")
    which.add_argument("--client", metavar="CLIENT_ID", help="every session of this client")
    revoke.add_argument(
        "--resource",
        metavar="R",
        help=RESOURCE_HELP.format("every session")
        + " (with --user or --client: only theirs there)",
    )
    revoke.set_defaults(selectors=revoke)  # checked by `cmd_admin`: a usage error (64)

    clients = sub.add_parser("clients", help="clients known to the running daemon")
    actions = clients.add_subparsers(dest="action", required=True)
    admin_command(actions, "list", "list registered clients and cached documents")
    admin_command(actions, "stats", "registrations grouped by app (name and redirect URIs)")
    show = admin_command(actions, "show", "one client: grant types, authentication, principal")
    show.add_argument("client_id", metavar="CLIENT_ID")
    client_add.add_arguments(admin_command(actions, "add", client_add.HELP))
    delete = admin_command(actions, "delete", "forget a client and end its sessions")
    delete.add_argument("client_id", metavar="CLIENT_ID")

    keys = sub.add_parser("keys", help="the running daemon's signing keys")
    actions = keys.add_subparsers(dest="action", required=True)
    admin_command(actions, "list", "list the signing keys (next, active, retired)")
    admin_command(actions, "rotate", "add a next key: published now, signing after jwks_max_age")
    retire = admin_command(
        actions,
        "retire",
        "retire a key: a next key is dropped; the active key only with a next key, which "
        "signs at once (an emergency rotation)",
    )
    retire.add_argument("kid", metavar="KID")


RESOURCE_HELP = "{} of this resource (its path, e.g. /mcp, or its identifier)"
PRINCIPALS = ("user", "service")
ID_OPTIONS = frozenset({"--id", "--client", "--user"})
OWN_OPTIONS = frozenset({"--config", "--socket", "--json", "-h", "--help"})


def dash_safe(argv: Sequence[str]) -> list[str]:
    """Session and client ids are base64url and may start with "-", which argparse takes
    for an option: `--id -x` becomes `--id=-x`, and the id of `clients delete -x` goes
    last, after `--`."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ID_OPTIONS:
            value = next(args, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    if out[:2] not in (["clients", "delete"], ["clients", "show"]):
        return out
    rest, ids, skip = out[2:], [], False
    for i, arg in enumerate(rest):
        if skip:
            skip = False
        elif arg in ("--config", "--socket"):
            skip = True  # its value, even one that starts with "-"
        elif arg.startswith("-") and arg.split("=", 1)[0] not in OWN_OPTIONS and arg != "--":
            ids.append(i)
    if not ids:
        return out
    kept = [a for i, a in enumerate(rest) if i not in ids and a != "--"]
    return [*out[:2], *kept, "--", *(rest[i] for i in ids)]


def admin_command(
    actions: Any, name: str, text: str, run: Callable[..., ExitCode] | None = None
) -> argparse.ArgumentParser:
    """A command that talks to the daemon's admin socket (`--config` or `--socket`,
    `--json`), run by `run` (default: `cmd_admin`)."""
    cmd: argparse.ArgumentParser = actions.add_parser(name, help=text)
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--config", help="config file (default: $OAUTHD_CONFIG)")
    where.add_argument("--socket", help="the admin socket (instead of --config)")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.set_defaults(run=run or cmd_admin)
    return cmd


def admin_socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    config = load(args)
    if config.storage.backend == "memory" and not config.admin.socket:
        raise ConfigError(
            f"{config.source}: the memory backend keeps no state dir, so the daemon has an "
            "admin socket only where admin.socket says"
        )
    return admin_socket_path(config)


def cmd_admin(args: argparse.Namespace) -> ExitCode:
    selectors: argparse.ArgumentParser | None = getattr(args, "selectors", None)
    if selectors is not None:
        problem = _revoke_selectors_problem(args)
        if problem:  # a usage error, as argparse reports one
            selectors.print_usage(sys.stderr)
            sys.stderr.write(f"{selectors.prog}: error: {problem}\n")
            return ExitCode.USAGE
    try:
        return run(args, admin_socket(args))
    except (AdminUnreachable, AdminRefused) as exc:
        return fail(exc, exc.exit_code)


def run(args: argparse.Namespace, socket: Path, out: TextIO | None = None) -> ExitCode:
    """One admin command, written to `out` (None: `sys.stdout` as it is now, not as it was
    when this module was imported); the daemon answers in no order, so the listings are
    sorted here (by user, then client; clients by name)."""
    out = sys.stdout if out is None else out
    admin = AdminClient(socket)
    if args.command == "sessions" and args.action == "list":
        sessions = _by_user(admin.sessions(args.user, args.client, args.resource, args.principal))
        _emit(args, out, sessions, lambda: render_sessions(sessions, out))
    elif args.command == "keys":
        _keys(args, admin, out)
    elif args.command == "sessions":
        ended = _by_user(admin.revoke(args.id, args.user, args.client, args.resource))
        _emit(args, out, {"revoked": ended}, lambda: render_ended(ended, out))
    elif args.action == "list":
        clients = sorted(admin.clients(), key=lambda c: (c.client_name.casefold(), c.client_id))
        _emit(args, out, clients, lambda: render_clients(clients, out))
    elif args.action == "add":
        return client_add.run(args, admin, out)
    elif args.action == "show":
        found = [c for c in admin.clients() if c.client_id == args.client_id]
        if not found:
            raise AdminRefused(f"no client {args.client_id!r}")
        _emit(args, out, found[0], lambda: render_client(found[0], out))
    elif args.action == "stats":
        groups = sorted(
            admin.client_stats(),
            key=lambda g: (-g.clients, g.client_name.casefold(), g.redirect_uris),
        )
        _emit(args, out, groups, lambda: render_client_stats(groups, out))
    else:
        client, ended = admin.delete_client(args.client_id)
        doc = {"client": client, "ended": _by_user(ended)}
        _emit(args, out, doc, lambda: render_deleted(args.client_id, client, ended, out))
    return ExitCode.OK


def _keys(args: argparse.Namespace, admin: AdminClient, out: TextIO) -> None:
    if args.action == "list":
        keys = sorted(admin.keys(), key=lambda k: k.created_at, reverse=True)
        _emit(args, out, keys, lambda: render_keys(keys, out))
    elif args.action == "rotate":
        added = admin.rotate_key()
        _emit(args, out, {"created": added}, lambda: render_rotated(added, out))
    else:
        retired, promoted = admin.retire_key(args.kid)
        doc = {"retired": retired, "promoted": promoted}
        _emit(args, out, doc, lambda: render_retired(retired, promoted, out))


def _revoke_selectors_problem(args: argparse.Namespace) -> str | None:
    if args.id is not None and args.resource is not None:
        return "argument --resource: not allowed with argument --id (one session)"
    if args.id is None and args.user is None and args.client is None and args.resource is None:
        return "one of the arguments --id --user --client --resource is required"
    return None


def _by_user(sessions: list[SessionView]) -> list[SessionView]:
    return sorted(sessions, key=lambda s: (s.user, s.client_name, s.client_id, s.created_at))


def _emit(args: argparse.Namespace, out: TextIO, doc: Any, render: Callable[[], None]) -> None:
    if args.json:
        write_json(doc, out)
    else:
        render()


# -- rendering -------------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    return "never" if ts is None else utc(ts)


def render_sessions(sessions: Sequence[SessionView], out: TextIO) -> None:
    if not sessions:
        out.write("no sessions\n")
        return
    headers = (
        "SESSION",
        "USER",
        "PRINCIPAL",
        "CLIENT",
        "CLIENT ID",
        "RESOURCE",
        "SCOPES",
        "CREATED",
        "LAST USED",
        "EXPIRES",
    )
    rows = [
        (
            s.id,
            s.user,
            s.principal,
            s.client_name,
            s.client_id,
            s.resource,
            " ".join(s.scopes),
            _when(s.created_at),
            _when(s.last_used_at),
            _when(s.expires_at),
        )
        for s in sessions
    ]
    table(headers, rows, out)
    out.write(f"\n{plural(len(sessions), 'session')}\n")


def render_ended(ended: Sequence[SessionView], out: TextIO) -> None:
    for s in ended:
        who = f"user {s.user}, client {s.client_name or s.client_id}"
        who += f", resource {s.resource}" if s.resource else ""
        out.write(cell(f"revoked {s.id} ({who})"))
        out.write("\n")
    out.write(f"{plural(len(ended), 'session')} revoked\n")


def render_clients(clients: Sequence[ClientView], out: TextIO) -> None:
    if not clients:
        out.write("no clients\n")
        return
    headers = (
        "CLIENT ID",
        "NAME",
        "SOURCE",
        "AUTH",
        "GRANTS",
        "PRINCIPAL",
        "SESSIONS",
        "CREATED",
        "REDIRECT URIS",
    )
    rows = [
        (
            c.client_id,
            c.client_name,
            c.source,
            c.auth_method,
            " ".join(short_grant(g) for g in c.grant_types),
            c.principal,
            str(c.sessions),
            _when(c.created_at),
            " ".join(c.redirect_uris),
        )
        for c in clients
    ]
    table(headers, rows, out)
    out.write(f"\n{plural(len(clients), 'client')}\n")


def short_grant(grant: str) -> str:
    """A grant type as a table shows it: the last part of a URN."""
    return grant.rsplit(":", 1)[-1] if grant.startswith("urn:") else grant


def render_client(c: ClientView, out: TextIO) -> None:
    """One client, a field a line."""
    fields = (
        ("client_id", c.client_id),
        ("name", c.client_name),
        ("source", c.source),
        ("auth method", c.auth_method),
        ("grant types", " ".join(c.grant_types)),
        ("principal", c.principal),
        ("scope", c.scope),
        ("resource", c.resource or "(the default resource)"),
        ("jwks_uri", c.jwks_uri or "-"),
        ("redirect URIs", " ".join(c.redirect_uris) or "-"),
        ("sessions", str(c.sessions)),
        ("created", _when(c.created_at)),
    )
    for name, value in fields:
        out.write(cell(f"{name + ':':<15}{value}") + "\n")


def render_client_stats(groups: Sequence[ClientGroupView], out: TextIO) -> None:
    if not groups:
        out.write("no registrations\n")
        return
    headers = (
        "NAME",
        "CLIENTS",
        "USED",
        "NEVER USED",
        "SESSIONS",
        "OLDEST",
        "NEWEST",
        "LAST USED",
        "REDIRECT URIS",
    )
    rows = [
        (
            g.client_name,
            str(g.clients),
            str(g.used),
            str(g.never_used),
            str(g.sessions),
            _when(g.oldest),
            _when(g.newest),
            _when(g.last_used_at),
            " ".join(g.redirect_uris),
        )
        for g in groups
    ]
    table(headers, rows, out)
    total = sum(g.clients for g in groups)
    out.write(f"\n{plural(total, 'registration')} of {plural(len(groups), 'app')}\n")


def render_deleted(
    client_id: str, client: ClientView | None, ended: Sequence[SessionView], out: TextIO
) -> None:
    what = f"client {client_id}" + (f" ({client.client_name})" if client else " (not cached)")
    out.write(cell(f"deleted {what}; {plural(len(ended), 'session')} ended") + "\n")


def render_keys(keys: Sequence[KeyView], out: TextIO) -> None:
    if not keys:
        out.write("no signing keys\n")
        return
    headers = ("KID", "ALG", "STATE", "CREATED", "SIGNS FROM", "RETIRED", "UNPUBLISHED")
    rows = [
        (
            k.kid,
            k.alg,
            k.state,
            _when(k.created_at),
            _when(k.activated_at if k.activated_at is not None else k.activate_after),
            _when(k.retired_at),
            _when(k.expires_at),
        )
        for k in keys
    ]
    table(headers, rows, out)
    out.write(f"\n{plural(len(keys), 'key')}\n")


def render_rotated(key: KeyView, out: TextIO) -> None:
    out.write(
        f"created next key {key.kid} ({key.alg}): published now, "
        f"signs from {_when(key.activate_after)}\n"
    )


def render_retired(retired: KeyView, promoted: KeyView | None, out: TextIO) -> None:
    out.write(f"retired key {retired.kid}; published until {_when(retired.expires_at)}\n")
    if promoted is not None:
        out.write(
            f"key {promoted.kid} signs from now on (emergency rotation: verifiers that "
            "cached the JWKS before it was published may refuse what it signs until their "
            "cache expires)\n"
        )
