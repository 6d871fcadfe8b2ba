"""The `oauthd` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from oauthd.cli import admin, migrate, serve, state, users
from oauthd.cli.output import fail
from oauthd.config import ConfigError
from oauthd.exits import ExitCode

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Every command; each family's module adds its own (and sets `run`)."""
    parser = argparse.ArgumentParser(prog="oauthd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for family in (serve, users, state, migrate, admin):
        family.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (a `ConfigError` anywhere: 78, Ctrl-C: 130)."""
    args = build_parser().parse_args(admin.dash_safe(sys.argv[1:] if argv is None else argv))
    run: Callable[[argparse.Namespace], ExitCode] = args.run
    try:
        return int(run(args))
    except ConfigError as exc:
        return int(fail(exc, exc.exit_code))
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
