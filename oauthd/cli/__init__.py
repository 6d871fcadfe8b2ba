"""The `oauthd` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from oauthd import __version__
from oauthd.cli import admin, audit, check, explain, links, migrate, serve, state, users
from oauthd.cli.output import fail
from oauthd.config import ConfigError
from oauthd.exits import ExitCode

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 (EX_USAGE) as the README says, not 2. The
    subcommands' parsers are of this class too (argparse makes them of the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Every command; each family's module adds its own (and sets `run`)."""
    parser = _Parser(prog="oauthd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"oauthd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for family in (serve, check, users, state, migrate, admin, links, audit, explain):
        family.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (a `ConfigError` anywhere: 78, Ctrl-C: 130,
    a usage error: 64, `--help` and `--version`: 0)."""
    try:
        args = build_parser().parse_args(admin.dash_safe(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse ends usage errors, --help and --version this way
        return exc.code if isinstance(exc.code, int) else int(ExitCode.USAGE)
    run: Callable[[argparse.Namespace], ExitCode] = args.run
    try:
        return int(run(args))
    except ConfigError as exc:
        return int(fail(exc, exc.exit_code))
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
