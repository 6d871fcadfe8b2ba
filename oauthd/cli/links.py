"""`oauthd links ...`: the running daemon's account links (an enterprise identity, the
issuer and subject of its ID-JAGs, linked to a user of ours), over the admin socket."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from oauthd.admin.client import AdminClient, AdminRefused, AdminUnreachable
from oauthd.admin.views import LinkView
from oauthd.cli.admin import admin_command, admin_socket
from oauthd.cli.output import cell, fail, plural, table, utc, write_json
from oauthd.exits import ExitCode


def add_commands(sub: Any) -> None:
    links = sub.add_parser("links", help="enterprise identities linked to users (ID-JAG)")
    actions = links.add_subparsers(dest="action", required=True)
    admin_command(actions, "list", "list account links", cmd_links)
    remove = admin_command(
        actions, "remove", "forget a link (the next ID-JAG links anew)", cmd_links
    )
    remove.add_argument("issuer", metavar="ISSUER")
    remove.add_argument("subject", metavar="SUBJECT")


def cmd_links(args: argparse.Namespace, out: TextIO | None = None) -> ExitCode:
    """`out`: None is `sys.stdout` as it is now, not as it was when this was imported."""
    out = sys.stdout if out is None else out
    try:
        admin = AdminClient(admin_socket(args))
        if args.action == "list":
            links = admin.links()
            write_json(links, out) if args.json else render_links(links, out)
        else:
            link = admin.remove_link(args.issuer, args.subject)
            if args.json:
                write_json({"removed": link}, out)
            else:
                out.write(cell(f"removed the link of {link.subject} at {link.issuer}"))
                out.write(f" (user {link.user})\n")
    except (AdminUnreachable, AdminRefused) as exc:
        return fail(exc, exc.exit_code)
    return ExitCode.OK


def render_links(links: Sequence[LinkView], out: TextIO) -> None:
    if not links:
        out.write("no account links\n")
        return
    headers = ("ISSUER", "SUBJECT", "USER", "VIA", "CREATED")
    rows = [(v.issuer, v.subject, v.user, v.via, utc(v.created_at)) for v in links]
    table(headers, rows, out)
    out.write(f"\n{plural(len(links), 'link')}\n")
