"""`oauthd users hash-password`: a hash for `[[login.users]]`, from a prompt or stdin."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from oauthd.cli.output import fail
from oauthd.exits import ExitCode


def add_commands(sub: Any) -> None:
    """`users hash-password` (`sub` is argparse's subparsers action)."""
    users = sub.add_parser("users", help="local users").add_subparsers(dest="action", required=True)
    hashpw = users.add_parser("hash-password", help="print a hash for [[login.users]]")
    hashpw.add_argument("--stdin", action="store_true", help="read the password from stdin")
    hashpw.set_defaults(run=cmd_hash_password)


def cmd_hash_password(args: argparse.Namespace) -> ExitCode:
    from oauthd.passwords import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            return fail("no terminal to prompt on; use --stdin", ExitCode.USAGE)
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            return fail("the passwords differ", ExitCode.USAGE)
    if not password:
        return fail("empty password", ExitCode.USAGE)
    print(hash_password(password))
    return ExitCode.OK
