"""`oauthd clients add`: an operator creates a confidential client for machines (the
client credentials grant, the JWT bearer grant) over the admin socket. The command reads
the JWKS file (the daemon may not be able to) and checks what the command line alone can
say; the daemon checks the rest (scopes offered, the resource, the keys) and answers
DATAERR (65) when it refuses."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from oauthd.admin.client import AdminClient, NewClient
from oauthd.cli.output import cell, fail, write_json
from oauthd.exits import ExitCode

HELP = "create a confidential client (client credentials, JWT bearer grant)"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANT_ALIASES = {"jwt-bearer": JWT_BEARER}
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
MAX_JWKS = 64 * 1024


class Refused(Exception):
    """The command line cannot be done; `exit_code` says how the command ends."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--name", required=True, help="what operators and logs call it")
    cmd.add_argument(
        "--grant",
        action="append",
        required=True,
        metavar="GRANT",
        help=f"client_credentials, or jwt-bearer ({JWT_BEARER}); repeatable",
    )
    cmd.add_argument("--auth", required=True, choices=AUTH_METHODS, help="how it authenticates")
    keys = cmd.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", metavar="F", help="its public keys (a JWKS), private_key_jwt")
    keys.add_argument("--jwks-uri", metavar="URL", help="where its JWKS is served (https)")
    cmd.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="S",
        help="what it may ask for (repeatable; default: every scope the server offers)",
    )
    cmd.add_argument(
        "--resource",
        metavar="URL",
        help="the resource its tokens are for when it names none (default: the server's)",
    )


def spec_of(args: argparse.Namespace) -> NewClient:
    """The client the command line asks for; Refused (USAGE, NOINPUT) when it cannot be."""
    has_keys = args.jwks_file is not None or args.jwks_uri is not None
    if args.auth == "private_key_jwt" and not has_keys:
        raise Refused("--auth private_key_jwt needs --jwks-file or --jwks-uri", ExitCode.USAGE)
    if args.auth != "private_key_jwt" and has_keys:
        raise Refused(
            f"--jwks-file and --jwks-uri are for private_key_jwt, not {args.auth}", ExitCode.USAGE
        )
    return NewClient(
        name=args.name,
        grant_types=tuple(dict.fromkeys(GRANT_ALIASES.get(g, g) for g in args.grant)),
        auth_method=args.auth,
        jwks=None if args.jwks_file is None else _read_jwks(Path(args.jwks_file)),
        jwks_uri=args.jwks_uri,
        scopes=tuple(dict.fromkeys(s for given in args.scope for s in given.split())),
        resource=args.resource,
    )


def _read_jwks(path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_JWKS + 1)
    except OSError as exc:
        raise Refused(f"cannot read {path}: {exc.strerror or exc}", ExitCode.NOINPUT) from None
    if len(data) > MAX_JWKS:
        raise Refused(f"{path} is larger than {MAX_JWKS} bytes", ExitCode.DATAERR)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise Refused(f"{path} is not UTF-8 text (a JWKS is JSON)", ExitCode.DATAERR) from None


def run(args: argparse.Namespace, admin: AdminClient, out: TextIO) -> ExitCode:
    try:
        spec = spec_of(args)
    except Refused as exc:
        return fail(exc, exc.exit_code)
    client, secret = admin.add_client(spec)
    if args.json:
        write_json({"client_id": client.client_id, "client_secret": secret, "client": client}, out)
        return ExitCode.OK
    out.write(f"client_id: {client.client_id}\n")
    if secret is not None:
        out.write(f"client_secret: {secret}\n")
        out.write("(the secret is shown this once: store it now)\n")
    out.write(cell(f"created {client.client_name} ({client.auth_method}, {client.principal})"))
    out.write("\n")
    return ExitCode.OK
