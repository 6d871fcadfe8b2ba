"""`oauthd migrate`: create or upgrade the PostgreSQL schema."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from oauthd.cli.options import load
from oauthd.cli.output import fail
from oauthd.config import ConfigError
from oauthd.exits import ExitCode


def add_commands(sub: Any) -> None:
    """`migrate` (`sub` is argparse's subparsers action)."""
    migrate = sub.add_parser("migrate", help="create or upgrade the PostgreSQL schema")
    migrate.add_argument("--config", help="config file (default: $OAUTHD_CONFIG)")
    migrate.set_defaults(run=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> ExitCode:
    from oauthd.store import Unavailable
    from oauthd.store.postgres_schema import SchemaError, migrate

    config = load(args)
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
        return fail(exc, exc.exit_code)
    except Unavailable as exc:
        return fail(exc.reason, ExitCode.UNAVAILABLE)
    if applied:
        print(f"schema migrated from version {before} to {applied[-1]}")
    else:
        print(f"schema up to date (version {before})")
    return ExitCode.OK
