"""The `oauthd` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from oauthd import cli_admin
from oauthd.admin.client import AdminRefused, AdminUnreachable
from oauthd.config import Config, ConfigError, admin_socket_path, load_config
from oauthd.log import setup_logging

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_DAMAGE = 1


def _config_path(args: argparse.Namespace) -> str:
    path: str | None = args.config or os.environ.get("OAUTHD_CONFIG")
    if not path:
        raise ConfigError("no configuration: pass --config PATH or set OAUTHD_CONFIG")
    return path


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from oauthd.admin.server import AdminSocketError
    from oauthd.daemon import StartupError, serve
    from oauthd.persist.errors import LockedError, RecoveryError
    from oauthd.store import Unavailable

    config = _load(args)
    setup_logging(config.log.level)
    try:
        asyncio.run(serve(config, accept_empty=args.accept_empty_state, recover=args.recover))
    except (LockedError, RecoveryError, StartupError, AdminSocketError) as exc:
        return _cannot_start(str(exc), exc.exit_code)
    except Unavailable as exc:  # a shared backend that is down at start: systemd retries
        return _cannot_start(f"the storage backend is unavailable: {exc.reason}", EX_UNAVAILABLE)
    return 0


def _cannot_start(reason: str, exit_code: int) -> int:
    logging.getLogger("oauthd.daemon").error(
        "cannot start", extra={"event": "daemon.failed", "reason": reason}
    )
    print(f"oauthd: {reason}", file=sys.stderr)
    return exit_code


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    print(
        f"{config.source}: OK ({len(config.login.users)} local users, "
        f"storage {config.storage.backend} at {config.storage.path})"
    )
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    from oauthd.users import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            print("oauthd: no terminal to prompt on; use --stdin", file=sys.stderr)
            return EX_USAGE
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("oauthd: the passwords differ", file=sys.stderr)
            return EX_USAGE
    if not password:
        print("oauthd: empty password", file=sys.stderr)
        return EX_USAGE
    print(hash_password(password))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from oauthd.store import Unavailable
    from oauthd.store.postgres import SchemaError, migrate

    config = _load(args)
    if config.storage.backend != "postgres":
        raise ConfigError(
            f"{config.source}: storage.backend is {config.storage.backend!r}: only the "
            "postgres backend has a schema to migrate"
        )
    try:
        before, applied = asyncio.run(
            migrate(config.storage.postgres_dsn, op_timeout=config.storage.timeout)
        )
    except SchemaError as exc:
        print(f"oauthd: {exc}", file=sys.stderr)
        return exc.exit_code
    except Unavailable as exc:
        print(f"oauthd: {exc.reason}", file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    if applied:
        print(f"schema migrated from version {before} to {applied[-1]}")
    else:
        print(f"schema up to date (version {before})")
    return 0


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir)
    return _load(args).storage.path


def cmd_state(args: argparse.Namespace) -> int:
    from oauthd.cli_state import render_inspect, render_verify
    from oauthd.store.offline import examine

    path = _state_dir(args)
    if not path.is_dir():
        print(f"oauthd: {path}: no such state directory", file=sys.stderr)
        return EX_DAMAGE
    report = examine(path, time.time())
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        (render_inspect if args.action == "inspect" else render_verify)(report, sys.stdout)
    return EX_DAMAGE if args.action == "verify" and report.damage else 0


def _admin_socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    config = _load(args)
    if config.storage.backend == "memory" and not config.admin.socket:
        raise ConfigError(
            f"{config.source}: the memory backend keeps no state dir, so the daemon has an "
            "admin socket only where admin.socket says"
        )
    return admin_socket_path(config)


def cmd_admin(args: argparse.Namespace) -> int:
    try:
        return cli_admin.main(args, _admin_socket(args))
    except (AdminUnreachable, AdminRefused) as exc:
        print(f"oauthd: {exc}", file=sys.stderr)
        return exc.exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oauthd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", help="config file (default: $OAUTHD_CONFIG)")
    serve.add_argument(
        "--accept-empty-state",
        action="store_true",
        help="start empty although the state dir was initialised before",
    )
    serve.add_argument(
        "--recover",
        action="store_true",
        help="start from what is intact; damaged files are moved aside",
    )
    serve.set_defaults(run=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("--config")
    check.set_defaults(run=cmd_check_config)

    users = sub.add_parser("users", help="local users").add_subparsers(dest="action", required=True)
    hashpw = users.add_parser("hash-password", help="print a hash for [[login.users]]")
    hashpw.add_argument("--stdin", action="store_true", help="read the password from stdin")
    hashpw.set_defaults(run=cmd_hash_password)

    state = sub.add_parser("state", help="offline state dir tools").add_subparsers(
        dest="action", required=True
    )
    for action, text in (
        ("inspect", "summarise the state dir"),
        ("verify", "check every file; exit 1 on any damage"),
    ):
        cmd = state.add_parser(action, help=text)
        where = cmd.add_mutually_exclusive_group()
        where.add_argument("--config")
        where.add_argument("--state-dir")
        cmd.add_argument("--json", action="store_true", help="machine-readable output")
        cmd.set_defaults(run=cmd_state)
    from oauthd.cli_copy import add_command as add_state_copy

    add_state_copy(state)

    migrate = sub.add_parser("migrate", help="create or upgrade the PostgreSQL schema")
    migrate.add_argument("--config", help="config file (default: $OAUTHD_CONFIG)")
    migrate.set_defaults(run=cmd_migrate)

    cli_admin.add_commands(sub, cmd_admin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(cli_admin.dash_safe(sys.argv[1:] if argv is None else argv))
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ConfigError as exc:
        print(f"oauthd: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
