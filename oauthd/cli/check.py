"""`oauthd check-config`: what `serve` would say about a config, without starting.

The file is checked whole (every key error at once, "did you mean" for unknown keys); then
what `serve` needs beyond the file: the backend's extra imports, the secrets the file
references can be read, the admin socket's directory exists or can be made. Errors exit
78, as `serve` would; warnings are what `serve` would start with but log (an unreadable
optional secret, nobody who can sign in)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

from oauthd.admin.server import wanted as admin_socket_wanted
from oauthd.cli.options import load
from oauthd.cli.output import fail
from oauthd.config import Config, ResourceConfig, admin_socket_path, read_secret
from oauthd.crypto import Sealer, parse_key
from oauthd.exits import ExitCode
from oauthd.keyring import key_file_problems
from oauthd.store import missing_extra
from oauthd.tracing import missing_extra as tracing_missing

SUN_PATH_MAX = 107  # bytes of a Unix socket path (sun_path is 108 with the final NUL)


@dataclass(slots=True)
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def add_commands(sub: Any) -> None:
    """`check-config` (`sub` is argparse's subparsers action)."""
    check = sub.add_parser("check-config", help="check a config file as `serve` would")
    check.add_argument("--config", help="config file (default: $OAUTHD_CONFIG)")
    check.set_defaults(run=cmd_check_config)


def cmd_check_config(args: argparse.Namespace) -> ExitCode:
    config = load(args)  # every error of the file itself: ConfigError, exit 78
    found = preflight(config)
    for warning in found.warnings:
        fail(f"warning: {warning}", ExitCode.OK)
    if found.errors:
        return fail("\n".join(found.errors), ExitCode.CONFIG)
    paths = ", ".join(r.path for r in config.resources)
    print(
        f"{config.source}: OK ({len(config.login.users)} local users, "
        f"storage {config.storage.backend} at {config.storage.path}, resources {paths})"
    )
    return ExitCode.OK


def preflight(config: Config) -> Findings:
    """Everything `serve` checks at start beyond the file, each problem once."""
    found = Findings()
    for extra in (missing_extra(config.storage.backend), tracing_missing(config.tracing)):
        if extra is not None:
            found.errors.append(f"{config.source}: {extra}")
    _check_secrets(config, found)
    _check_admin_socket(config, found)
    if config.login.provider == "local" and not config.login.users:
        found.warnings.append(
            f'{config.source}: nobody can sign in: login.provider = "local" and there are no '
            '[[login.users]] (add one with a hash from "oauthd users hash-password", or '
            "configure an identity provider)"
        )
    return found


def _secrets(config: Config) -> list[tuple[str, str, str]]:
    """(key, reference, what `serve` does when it cannot be read) of the optional ones."""
    login = config.login
    idp = {"oidc": login.oidc.client_secret, "github": login.github.client_secret}
    return [
        (f"login.{login.provider}.client_secret", idp.get(login.provider, ""), "sending none"),
        ("introspection.client_secret", config.introspection.client_secret, "refusing it"),
        *(
            (f"{where}.authorization", resource.upstream.authorization, "sending none")
            for where, resource in _resource_keys(config)
        ),
    ]


def _resource_keys(config: Config) -> list[tuple[str, ResourceConfig]]:
    """Each resource and where its keys are in the file."""
    if not config.resource:
        return [("upstream", config.resources[0])]
    return [(f"resource[{i}]", resource) for i, resource in enumerate(config.resources)]


def _check_secrets(config: Config, found: Findings) -> None:
    where = config.source
    found.errors.extend(key_file_problems(config))  # serve refuses these too
    key_ref = config.login.encryption_key
    if key_ref and not _unchecked(key_ref, "login.encryption_key", config, found):
        text = read_secret(key_ref)  # serve refuses to start without it, and so do we
        if text is None:
            found.errors.append(f"{where}: login.encryption_key: cannot read {key_ref!r}")
        else:
            try:
                Sealer(parse_key(text))  # as serve does: the key's length is checked here
            except ValueError as exc:
                found.errors.append(f"{where}: login.encryption_key: {exc}")
    for key, ref, consequence in _secrets(config):
        if ref and not _unchecked(ref, key, config, found) and read_secret(ref) is None:
            found.warnings.append(
                f"{where}: {key}: cannot read {ref!r}; serve would start, {consequence}"
            )


def _unchecked(ref: str, key: str, config: Config, found: Findings) -> bool:
    """A systemd credential outside the unit: only the service can read it."""
    if ref.startswith("credential:") and not os.environ.get("CREDENTIALS_DIRECTORY"):
        found.warnings.append(
            f"{config.source}: {key}: {ref!r} is read from the service's credentials "
            "($CREDENTIALS_DIRECTORY is not set here): not checked"
        )
        return True
    return False


def _check_admin_socket(config: Config, found: Findings) -> None:
    if not admin_socket_wanted(config):
        return
    path = admin_socket_path(config)
    where = f"{config.source}: the admin socket {path}"
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        found.errors.append(f"{where}: path longer than {SUN_PATH_MAX} bytes (set admin.socket)")
        return
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        found.errors.append(f"{where}: {existing} is not a directory")
    elif not os.access(existing, os.W_OK | os.X_OK):
        found.errors.append(f"{where}: cannot be made: {existing} is not writable by this user")
