"""Key material and secret references, resolved when the daemon starts (not per request):
a secret that cannot be read is found at start, and no request reads a file.

`read_keyring` runs before the state is opened, so that a bad key never holds the state
lock; `session_sealer` runs after it, because its fallback key lives in the state dir.
The two secrets that are rotated in place, the introspection client secret and the
identity provider's client secret, are read again on SIGHUP (`Keyring.reload`, called by
`oauthd.reload`); their users read them from the `Keyring` when they need them.
`login.encryption_key` and each resource's `authorization` (`upstream.authorization`)
need a restart.

Like ssh with a private key, a key file (a `file:` reference) that its group or others may
read or write is refused: ConfigError naming the key and the path (exit 78), also on
SIGHUP. A file in systemd's credentials directory is exempt (systemd sets its mode and
hides it from every other service). An `env:` reference is accepted with a warning: the
environment is inherited by child processes, shown by `systemctl show`, and readable in
/proc by the same user; `credential:` (LoadCredential=) is the way for a service."""

from __future__ import annotations

import hmac
import logging
import os
import stat
from dataclasses import dataclass, field

from oauthd.config import Config, ConfigError, read_secret
from oauthd.crypto import Sealer, parse_key

log = logging.getLogger("oauthd.keyring")

INTROSPECTION_KEY = "introspection.client_secret"
TOO_OPEN = 0o077  # any permission for the group or others, as ssh refuses a private key


@dataclass(slots=True)
class Keyring:
    """The resolved keys and secrets (never in a repr). None: not configured, or (for an
    optional secret) configured but unreadable at start, which is logged."""

    sealer: Sealer | None = field(repr=False)  # login.encryption_key: upstream tokens
    idp_secret: str | None = field(repr=False)  # the IdP client secret; None sends none
    introspection_secret: str | None = field(repr=False)  # None refuses introspection
    # resource path -> the static `Authorization` value for its upstream; None sends none
    upstream_authorization: dict[str, str | None] = field(repr=False)
    login_key: bytes | None = field(repr=False, default=None)  # the sealer's key, raw
    process_key: bytes | None = field(repr=False, default=None)  # memory backend's session key

    def reload(self, config: Config) -> list[str]:
        """Read the rotatable secrets again from what `config` names; return the keys whose
        value changed (never the values). A configured secret that cannot be read raises
        ConfigError naming it, and nothing changes (the running secrets stay)."""
        _check_key_files(config)
        introspection = _read_now(config, INTROSPECTION_KEY, config.introspection.client_secret)
        idp = _read_now(config, _idp_key(config), _idp_ref(config))
        changed = [
            key
            for key, old, new in (
                (INTROSPECTION_KEY, self.introspection_secret, introspection),
                (_idp_key(config), self.idp_secret, idp),
            )
            if old != new
        ]
        self.introspection_secret, self.idp_secret = introspection, idp
        return changed


def read_keyring(config: Config) -> Keyring:
    """Every key and secret the config names; ConfigError (naming the key) for a bad
    `login.encryption_key` and for a key file others may read (see the module docstring).
    An optional secret that cannot be read is logged, and so is an `env:` reference."""
    _check_key_files(config)
    _warn_environment(config)
    introspection_ref = config.introspection.client_secret
    login_key = _login_key(config)
    return Keyring(
        sealer=None if login_key is None else Sealer(login_key),
        idp_secret=_read_or_log(_idp_key(config), _idp_ref(config), "sending none"),
        introspection_secret=_read_or_log(
            INTROSPECTION_KEY, introspection_ref, "introspection is refused"
        ),
        upstream_authorization=_upstream_authorization(config),
        login_key=login_key,
    )


def _references(config: Config) -> list[tuple[str, str]]:
    """(key, reference) of every secret the keyring reads that the config names."""
    refs = [
        ("login.encryption_key", config.login.encryption_key),
        (INTROSPECTION_KEY, config.introspection.client_secret),
        (_idp_key(config), _idp_ref(config)),
        *_authorization_refs(config),
    ]
    return [(key, ref) for key, ref in refs if ref]


def _check_key_files(config: Config) -> None:
    """ConfigError for the first key file that is too open (`key_file_problems`)."""
    problems = key_file_problems(config)
    if problems:
        raise ConfigError(problems[0])


def key_file_problems(config: Config) -> list[str]:
    """Every `file:` key that the group or others may read or write, unless it is in
    systemd's credentials directory, as the message `serve` refuses to start with. A file
    that cannot be found is left to the read (an error for the encryption key, a logged
    one for the others)."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    problems: list[str] = []
    for key, ref in _references(config):
        kind, _, name = ref.partition(":")
        if kind != "file" or (credentials and _is_below(name, credentials)):
            continue
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except OSError:
            continue
        if mode & TOO_OPEN:
            problems.append(
                f"{config.source}: {key}: permissions {mode:04o} of {name} are too open: "
                f"a key file must be readable by its owner only (chmod 600 {name}), or "
                'come from systemd\'s credentials directory ("credential:NAME")'
            )
    return problems


def _is_below(path: str, directory: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)


def _warn_environment(config: Config) -> None:
    for key, ref in _references(config):
        if ref.startswith("env:"):
            log.warning(
                f"{key} is read from the environment; prefer credential:NAME",
                extra={"event": "config.secret_in_environment", "key": key},
            )


def _idp_key(config: Config) -> str:
    return f"login.{config.login.provider}.client_secret"


def _idp_ref(config: Config) -> str:
    login = config.login
    refs = {"oidc": login.oidc.client_secret, "github": login.github.client_secret}
    return refs.get(login.provider, "")


def _read_now(config: Config, key: str, ref: str) -> str | None:
    value = _optional_secret(ref)
    if ref and value is None:
        raise ConfigError(f"{config.source}: {key}: cannot read {ref!r}")
    return value


def _read_or_log(key: str, ref: str, consequence: str) -> str | None:
    value = _optional_secret(ref)
    if ref and value is None:
        log.error(
            f"{key} cannot be read; {consequence}",
            extra={"event": "config.secret_unreadable", "key": key},
        )
    return value


def _authorization_refs(config: Config) -> list[tuple[str, str]]:
    """(key, reference) of each resource's static upstream credential: `upstream.
    authorization` for the `[upstream]` shorthand, `resource[i].authorization` else."""
    if not config.resource:
        return [("upstream.authorization", config.upstream.authorization)]
    return [
        (f"resource[{i}].authorization", resource.upstream.authorization)
        for i, resource in enumerate(config.resource)
    ]


def _upstream_authorization(config: Config) -> dict[str, str | None]:
    """Each resource's static `Authorization` value for its upstream, by path; one that is
    configured but unreadable sends none and is logged (the upstream, not oauthd, decides
    whether that is fatal)."""
    values: dict[str, str | None] = {}
    for resource, (key, ref) in zip(config.resources, _authorization_refs(config), strict=True):
        value = values[resource.path] = _optional_secret(ref)
        if ref and value is None:
            log.error(
                f"{key} cannot be read; sending none",
                extra={"event": "proxy.no_static_credential", "key": key},
            )
    return values


def _optional_secret(ref: str) -> str | None:
    return read_secret(ref) if ref else None


def _login_key(config: Config) -> bytes | None:
    """The AES-256-GCM key for upstream tokens; required (and checked) for upstream login."""
    ref = config.login.encryption_key
    if not ref:
        return None
    text = read_secret(ref)
    if text is None:
        raise ConfigError(f"{config.source}: login.encryption_key: cannot read {ref!r}")
    try:
        key = parse_key(text)
        Sealer(key)  # checks the length
    except ValueError as exc:
        raise ConfigError(f"{config.source}: login.encryption_key: {exc}") from None
    return key


def session_sealer(config: Config, keyring: Keyring) -> Sealer:
    """The key that seals MCP session ids (`session_key`)."""
    if keyring.sealer is not None:
        return keyring.sealer
    return Sealer(session_key(config, keyring))


def device_code_key(config: Config, keyring: Keyring) -> bytes:
    """The HMAC key of device user codes, derived from `session_key`: kept with it (in the
    state dir, or `login.encryption_key`), so that flows survive a restart and every
    instance on a shared backend finds the flows the others started."""
    return hmac.new(session_key(config, keyring), b"oauthd device user codes", "sha256").digest()


def known_browser_key(config: Config, keyring: Keyring) -> bytes:
    """The HMAC key of known-browser cookies (`oauthd.oauth.known_browsers`), derived from
    `session_key` as `device_code_key` is: a cookie stays valid across a restart and on
    every instance of a shared backend."""
    return hmac.new(session_key(config, keyring), b"oauthd known browsers", "sha256").digest()


def session_key(config: Config, keyring: Keyring) -> bytes:
    """The key that seals MCP session ids: `login.encryption_key` if set. Without it, a key
    kept in the state dir (0600), so that a revocation after a restart can still close them
    upstream; with the memory backend, a key for this process only. A shared backend needs
    the configured key (the config check refuses it without): every instance must open the
    ids the others sealed."""
    if keyring.login_key is not None:
        return keyring.login_key
    backend = config.storage.backend
    if backend == "memory":
        if keyring.process_key is None:
            keyring.process_key = os.urandom(32)
        return keyring.process_key
    if backend != "file":
        raise ConfigError(
            f"{config.source}: login.encryption_key: required when storage.backend = "
            f'"{backend}" (instances on a shared backend seal MCP session ids for each other)'
        )
    path = config.storage.path / "session.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    try:
        os.write(fd, os.urandom(32).hex().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return bytes.fromhex(path.read_text().strip())
