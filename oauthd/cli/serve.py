"""`oauthd serve`: run the daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from oauthd.cli.options import load
from oauthd.cli.output import fail
from oauthd.config import ConfigError
from oauthd.exits import ExitCode
from oauthd.log import setup_logging


def add_commands(sub: Any) -> None:
    """`serve` (`sub` is argparse's subparsers action)."""
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


def cmd_serve(args: argparse.Namespace) -> ExitCode:
    from oauthd.admin.server import AdminSocketError
    from oauthd.daemon import StartupError, serve
    from oauthd.persist.errors import LockedError, RecoveryError
    from oauthd.store import Unavailable, missing_extra
    from oauthd.tracing import missing_extra as tracing_missing

    config = load(args)
    extra = missing_extra(config.storage.backend) or tracing_missing(config.tracing)
    if extra is not None:  # one line, exit 78: not a traceback, and no restart loop
        raise ConfigError(f"{config.source}: {extra}")
    setup_logging(config.log.level)
    try:
        asyncio.run(serve(config, accept_empty=args.accept_empty_state, recover=args.recover))
    except (LockedError, RecoveryError, StartupError, AdminSocketError) as exc:
        return _cannot_start(str(exc), ExitCode(exc.exit_code))
    except Unavailable as exc:  # a shared backend that is down at start: systemd retries
        reason = f"the storage backend is unavailable: {exc.reason}"
        return _cannot_start(reason, ExitCode.UNAVAILABLE)
    return ExitCode.OK


def _cannot_start(reason: str, code: ExitCode) -> ExitCode:
    logging.getLogger("oauthd.daemon").error(
        "cannot start", extra={"event": "daemon.failed", "reason": reason}
    )
    return fail(reason, code)
