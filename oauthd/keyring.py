"""Key material and secret references, resolved once when the daemon starts (not per
request): a secret that cannot be read is found at start, and no request reads a file.

`read_keyring` runs before the state is opened, so that a bad key never holds the state
lock; `session_sealer` runs after it, because its fallback key lives in the state dir.
The introspection client secret is read again on SIGHUP (`oauthd.reload`), so that a
rotated secret takes effect without a restart."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from oauthd.config import Config, ConfigError, read_secret
from oauthd.crypto import Sealer, parse_key

log = logging.getLogger("oauthd.keyring")


@dataclass(slots=True, frozen=True)
class Keyring:
    sealer: Sealer | None  # login.encryption_key: upstream tokens (and MCP session ids)
    idp_secret: str | None  # the identity provider's client secret; None sends none
    introspection_secret: str | None  # [introspection] client_secret; None refuses all
    upstream_authorization: str | None  # upstream.authorization; None sends none


def read_keyring(config: Config) -> Keyring:
    """Every key and secret the config names; ConfigError (naming the key) for a bad
    `login.encryption_key`."""
    login = config.login
    idp = {"oidc": login.oidc.client_secret, "github": login.github.client_secret}
    return Keyring(
        sealer=_login_sealer(config),
        idp_secret=_optional_secret(idp.get(login.provider, "")),
        introspection_secret=introspection_secret(config),
        upstream_authorization=_upstream_authorization(config),
    )


def introspection_secret(config: Config) -> str | None:
    """The secret `/introspect` callers authenticate with (None: introspection refused,
    with an error logged if one is configured but cannot be read)."""
    ref = config.introspection.client_secret
    value = _optional_secret(ref)
    if ref and value is None:
        log.error(
            "introspection.client_secret cannot be read; introspection is refused",
            extra={"event": "config.secret_unreadable", "key": "introspection.client_secret"},
        )
    return value


def _upstream_authorization(config: Config) -> str | None:
    """The static `Authorization` value for the upstream; if it is configured but
    unreadable, requests go without one and an error is logged (the upstream, not
    oauthd, decides whether that is fatal)."""
    ref = config.upstream.authorization
    value = _optional_secret(ref)
    if ref and value is None:
        log.error(
            "upstream.authorization cannot be read; sending none",
            extra={"event": "proxy.no_static_credential"},
        )
    return value


def _optional_secret(ref: str) -> str | None:
    return read_secret(ref) if ref else None


def _login_sealer(config: Config) -> Sealer | None:
    """The AES-256-GCM key for upstream tokens; required (and checked) for upstream login."""
    ref = config.login.encryption_key
    if not ref:
        return None
    text = read_secret(ref)
    if text is None:
        raise ConfigError(f"{config.source}: login.encryption_key: cannot read {ref!r}")
    try:
        return Sealer(parse_key(text))
    except ValueError as exc:
        raise ConfigError(f"{config.source}: login.encryption_key: {exc}") from None


def session_sealer(config: Config, keyring: Keyring) -> Sealer:
    """The key that seals MCP session ids: `login.encryption_key` if set. Without it, a key
    kept in the state dir (0600), so that a revocation after a restart can still close them
    upstream; with the memory backend, a key for this process only. A shared backend needs
    the configured key (the config check refuses it without): every instance must open the
    ids the others sealed."""
    if keyring.sealer is not None:
        return keyring.sealer
    backend = config.storage.backend
    if backend == "memory":
        return Sealer(os.urandom(32))
    if backend != "file":
        raise ConfigError(
            f"{config.source}: login.encryption_key: required when storage.backend = "
            f'"{backend}" (instances on a shared backend seal MCP session ids for each other)'
        )
    path = config.storage.path / "session.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Sealer(bytes.fromhex(path.read_text().strip()))
    try:
        os.write(fd, os.urandom(32).hex().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return Sealer(bytes.fromhex(path.read_text().strip()))
