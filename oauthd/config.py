"""The config file: TOML in, frozen dataclasses out.

The dataclasses below are the schema. Each key's field carries, in its metadata, the
converter that checks and converts the TOML value and the default as it would be written
in the file; one generic loader walks them. Unknown keys and sections are errors, and every
error names the file and the key path: `config.toml: storage.save_debounce: ...`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from oauthd.exits import ExitCode
from oauthd.passwords import parse_password_hash

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "AdminConfig",
    "Config",
    "ConfigError",
    "GithubConfig",
    "IntrospectionConfig",
    "Listen",
    "LocalUser",
    "LogConfig",
    "LoginConfig",
    "MetricsConfig",
    "OAuthConfig",
    "OidcConfig",
    "ServerConfig",
    "StorageConfig",
    "TokensConfig",
    "UpstreamConfig",
    "admin_socket_path",
    "default_config",
    "load_config",
    "parse_duration",
    "read_secret",
]

_D = TypeVar("_D", bound="DataclassInstance")
_SCHEMA = "oauthd.config"
_REQUIRED = object()  # default of a key that must be given
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """The config cannot be used; str() is `<file>: <key path>: <message>`."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG


def parse_duration(text: object) -> float:
    """Seconds in a duration such as "500ms", "30s", "10m", "2h", "30d"; must be > 0.

    Raises ValueError for anything else, including a non-string such as a bare 10.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f'expected a duration like "1s", got {_show(text)}')
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, got {_show(text)}")
    return seconds


# --- where a value sits, for error messages ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _At:
    file: str
    path: str  # "" for the whole file, else like "login.users[1].username"
    base_dir: Path  # relative paths in the file are resolved against this

    def key(self, name: str) -> _At:
        return _At(self.file, f"{self.path}.{name}" if self.path else name, self.base_dir)

    def item(self, index: int) -> _At:
        return _At(self.file, f"{self.path}[{index}]", self.base_dir)

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.path}: {message}")


def _show(value: object) -> str:
    """A value as the operator wrote it in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


# --- converters: (TOML value, where) -> Python value, or raise at.error(...) -------------

Converter = Callable[[object, _At], Any]


@dataclass(frozen=True, slots=True)
class _Key:
    convert: Converter
    default: object  # as written in TOML, converted like a given value; or _REQUIRED


def _key(convert: Converter, default: object = _REQUIRED) -> Mapping[str, _Key]:
    return {_SCHEMA: _Key(convert, default)}


def _string(value: object, at: _At) -> str:
    if not isinstance(value, str):
        raise at.error(f"expected a string, got {_show(value)}")
    return value


def _duration(value: object, at: _At) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise at.error(str(exc)) from None


def _duration_or_off(value: object, at: _At) -> float:
    """A duration, or "0s" for none (a window that can be turned off)."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is not None and float(match[1]) == 0:
        return 0.0
    return _duration(value, at)


def _choice(allowed: tuple[str, ...], later: tuple[str, ...] = ()) -> Converter:
    def convert(value: object, at: _At) -> str:
        text = _string(value, at)
        if text in later:
            supported = ", ".join(allowed)
            raise at.error(
                f"{_show(text)} is not available in this version (supported: {supported})"
            )
        if text not in allowed:
            raise at.error(f"expected one of {', '.join(map(_show, allowed))}, got {_show(text)}")
        return text

    return convert


def _path(value: object, at: _At) -> Path:
    return at.base_dir / _string(value, at)  # an absolute path replaces base_dir


def _http_url(value: object, at: _At) -> str:
    text = _string(value, at)
    if not _is_http_url(text):
        raise at.error(f"expected an absolute http(s) URL, got {_show(text)}")
    return text


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _optional_url(value: object, at: _At) -> str:
    text = _string(value, at)
    return _http_url(text, at).rstrip("/") if text else ""


def _issuer(value: object, at: _At) -> str:
    text = _http_url(value, at)
    if "?" in text or "#" in text:
        raise at.error(f"must not have a query or fragment, got {_show(text)}")
    parts = urlsplit(text)
    if parts.username is not None:
        raise at.error("must not contain a user name or password")  # not echoed: a secret
    if parts.path.strip("/"):
        raise at.error(
            f"must be an origin without a path (oauthd serves /authorize, /mcp, ... at its "
            f"root), got {_show(text)}"
        )
    if parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
        raise at.error(
            f"https is required unless the host is localhost or a loopback address, "
            f"got {_show(text)}"
        )
    return text.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _username(value: object, at: _At) -> str:
    text = _string(value, at)
    if not text:
        raise at.error("must not be empty")
    return text


def _password_hash(value: object, at: _At) -> str:
    text = _string(value, at)
    try:
        parse_password_hash(text)
    except ValueError as exc:
        raise at.error(str(exc)) from None
    return text


def _bool(value: object, at: _At) -> bool:
    if not isinstance(value, bool):
        raise at.error(f"expected true or false, got {_show(value)}")
    return value


def _positive_int(value: object, at: _At) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise at.error(f"expected a whole number of at least 1, got {_show(value)}")
    return value


def _count(value: object, at: _At) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise at.error(f"expected a whole number of at least 0, got {_show(value)}")
    return value


def _words(value: object, at: _At) -> tuple[str, ...]:
    """An array of distinct non-empty strings without spaces (scopes, schemes)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise at.error(f"expected an array of strings, got {_show(value)}")
    for i, word in enumerate(value):
        if not word or any(c.isspace() for c in word):
            raise at.item(i).error(f"must be non-empty without spaces, got {_show(word)}")
    return tuple(dict.fromkeys(value))


def _secret_ref(value: object, at: _At) -> str:
    """Where a secret comes from, never the secret itself: "file:PATH", "env:NAME" or
    "credential:NAME" (systemd's $CREDENTIALS_DIRECTORY); "" for none."""
    text = _string(value, at)
    kind, _, name = text.partition(":")
    if text and (kind not in ("file", "env", "credential") or not name):
        raise at.error(
            'expected "file:PATH", "env:NAME" or "credential:NAME" (never the secret itself)'
        )
    if kind == "file":
        return f"file:{at.base_dir / name}"
    return text


def read_secret(ref: str) -> str | None:
    """The secret a `_secret_ref` names; None if it is empty or cannot be read."""
    kind, _, name = ref.partition(":")
    try:
        if kind == "env":
            return os.environ.get(name) or None
        if kind == "credential":
            base = os.environ.get("CREDENTIALS_DIRECTORY")
            return Path(base, name).read_text().strip() or None if base else None
        if kind == "file":
            return Path(name).read_text().strip() or None
    except OSError:
        return None
    return None


def _header_name(value: object, at: _At) -> str:
    text = _string(value, at)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", text) or text.lower() in (
        "authorization",
        "host",
        "cookie",
        "connection",
        "content-length",
        "transfer-encoding",
    ):
        raise at.error(f"expected an HTTP header name oauthd may set, got {_show(text)}")
    return text


def _origins(value: object, at: _At) -> tuple[str, ...]:
    """Browser origins ("https://app.example", "http://localhost:6274") allowed at /mcp."""
    words = _words(value, at)
    for i, origin in enumerate(words):
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise at.item(i).error(
                f'expected an origin like "https://app.example", got {_show(origin)}'
            )
    return tuple(o.lower() for o in words)


def _networks(value: object, at: _At) -> tuple[str, ...]:
    """Addresses or networks ("127.0.0.1", "10.0.0.0/8", "::1"), normalised to CIDR."""
    words = _words(value, at)
    out = []
    for i, word in enumerate(words):
        try:
            out.append(str(ipaddress.ip_network(word, strict=False)))
        except ValueError:
            raise at.item(i).error(
                f"expected an IP address or network, got {_show(word)}"
            ) from None
    return tuple(out)


def _section(cls: type[_D]) -> Converter:
    return lambda value, at: _build(cls, value, at)


def _users(value: object, at: _At) -> tuple[LocalUser, ...]:
    if not isinstance(value, list):
        raise at.error(f"expected an array of tables ([[login.users]]), got {_show(value)}")
    users = tuple(_build(LocalUser, item, at.item(i)) for i, item in enumerate(value))
    first_index: dict[str, int] = {}
    for i, user in enumerate(users):
        if user.username in first_index:
            other = at.item(first_index[user.username]).key("username").path
            raise at.item(i).key("username").error(f"duplicate username, already in {other}")
        first_index[user.username] = i
    return users


def _listen(value: object, at: _At) -> Listen:
    text = _string(value, at)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\[\]:]+):(\d{1,5})", text)
    if match is None:
        raise at.error(f'expected "host:port" or "[ipv6]:port", got {_show(text)}')
    host, port = match[1] or match[3], int(match[2] or match[4])
    if port > 65535:
        raise at.error(f"port must be 0-65535, got {port}")
    return Listen(host, port)


# --- the schema ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listen:
    host: str  # IPv6 without brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: Listen = field(metadata=_key(_listen, "127.0.0.1:8080"))
    issuer: str = field(metadata=_key(_issuer, "http://127.0.0.1:8080"))
    shutdown_timeout: float = field(metadata=_key(_duration, "10s"))


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str = field(metadata=_key(_http_url, "http://127.0.0.1:9000/mcp"))
    connect_timeout: float = field(metadata=_key(_duration, "5s"))
    read_timeout: float = field(metadata=_key(_duration, "300s"))
    max_connections: int = field(metadata=_key(_positive_int, 100))
    max_request_bytes: int = field(metadata=_key(_positive_int, 4 * 1024 * 1024))
    required_scopes: tuple[str, ...] = field(metadata=_key(_words, ["mcp"]))
    allowed_origins: tuple[str, ...] = field(metadata=_key(_origins, []))
    user_header: str = field(metadata=_key(_header_name, "X-Forwarded-User"))
    client_header: str = field(metadata=_key(_header_name, "X-Forwarded-Client-Id"))
    scopes_header: str = field(metadata=_key(_header_name, "X-Forwarded-Scopes"))
    forward_idp_token: bool = field(metadata=_key(_bool, False))
    idp_token_header: str = field(metadata=_key(_header_name, "X-Forwarded-Access-Token"))
    authorization: str = field(metadata=_key(_secret_ref, ""))


def _redis_url(value: object, at: _At) -> str:
    text = _string(value, at)
    scheme = text.partition("://")[0]
    if scheme not in ("redis", "rediss", "unix") or not text.partition("://")[2]:
        # not echoed: the URL may hold a password
        raise at.error("expected a redis://, rediss:// or unix:// URL")
    return text


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = field(metadata=_key(_choice(("memory", "file", "redis", "postgres")), "file"))
    path: Path = field(metadata=_key(_path, "var/oauthd"))
    durability: str = field(metadata=_key(_choice(("journal", "snapshot")), "journal"))
    save_interval: float = field(metadata=_key(_duration, "30s"))
    save_debounce: float = field(metadata=_key(_duration, "1s"))
    save_max_wait: float = field(metadata=_key(_duration, "5s"))
    redis_url: str = field(metadata=_key(_redis_url, "redis://127.0.0.1:6379/0"))
    redis_prefix: str = field(metadata=_key(_string, "oauthd:"))
    redis_pool_size: int = field(metadata=_key(_positive_int, 20))
    timeout: float = field(metadata=_key(_duration, "2s"))
    postgres_dsn: str = field(metadata=_key(_string, "postgresql://postgres@127.0.0.1:5432/oauthd"))
    postgres_pool_size: int = field(metadata=_key(_positive_int, 10))
    # redis/postgres: grants and MCP session bindings kept in memory per kind (0: off)
    cache_size: int = field(metadata=_key(_count, 10000))


@dataclass(frozen=True, slots=True)
class TokensConfig:
    access_ttl: float = field(metadata=_key(_duration, "1h"))
    refresh_ttl: float = field(metadata=_key(_duration, "30d"))
    code_ttl: float = field(metadata=_key(_duration, "60s"))
    device_ttl: float = field(metadata=_key(_duration, "10m"))
    pending_ttl: float = field(metadata=_key(_duration, "10m"))
    consent_ttl: float = field(metadata=_key(_duration, "90d"))
    refresh_grace: float = field(metadata=_key(_duration_or_off, "10s"))


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    scopes: tuple[str, ...] = field(metadata=_key(_words, ["mcp"]))
    resource_name: str = field(metadata=_key(_string, "MCP server"))
    registration: bool = field(metadata=_key(_bool, True))
    client_id_metadata_documents: bool = field(metadata=_key(_bool, True))
    allowed_redirect_schemes: tuple[str, ...] = field(metadata=_key(_words, []))
    registrations_per_minute: int = field(metadata=_key(_positive_int, 20))
    device_guesses_per_minute: int = field(metadata=_key(_positive_int, 10))


@dataclass(frozen=True, slots=True)
class IntrospectionConfig:
    client_id: str = field(metadata=_key(_string, ""))
    client_secret: str = field(metadata=_key(_secret_ref, ""))


@dataclass(frozen=True, slots=True)
class LocalUser:
    username: str = field(metadata=_key(_username))
    password_hash: str = field(metadata=_key(_password_hash))


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str = field(metadata=_key(_optional_url, ""))
    client_id: str = field(metadata=_key(_string, ""))
    client_secret: str = field(metadata=_key(_secret_ref, ""))
    scopes: tuple[str, ...] = field(metadata=_key(_words, ["openid", "email", "profile"]))
    subject_claim: str = field(metadata=_key(_string, "email"))


@dataclass(frozen=True, slots=True)
class GithubConfig:
    client_id: str = field(metadata=_key(_string, ""))
    client_secret: str = field(metadata=_key(_secret_ref, ""))
    scopes: tuple[str, ...] = field(metadata=_key(_words, ["read:user"]))
    authorize_url: str = field(metadata=_key(_http_url, "https://github.com/login/oauth/authorize"))
    token_url: str = field(metadata=_key(_http_url, "https://github.com/login/oauth/access_token"))
    user_url: str = field(metadata=_key(_http_url, "https://api.github.com/user"))
    username_field: str = field(metadata=_key(_string, "login"))


@dataclass(frozen=True, slots=True)
class LoginConfig:
    provider: str = field(metadata=_key(_choice(("local", "oidc", "github")), "local"))
    users: tuple[LocalUser, ...] = field(metadata=_key(_users, []))
    max_failures: int = field(metadata=_key(_positive_int, 5))
    failure_window: float = field(metadata=_key(_duration, "15m"))
    encryption_key: str = field(metadata=_key(_secret_ref, ""))
    oidc: OidcConfig = field(metadata=_key(_section(OidcConfig), {}))
    github: GithubConfig = field(metadata=_key(_section(GithubConfig), {}))


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    allow: tuple[str, ...] = field(metadata=_key(_networks, ["127.0.0.1/32", "::1/128"]))


@dataclass(frozen=True, slots=True)
class AdminConfig:
    socket: str = field(metadata=_key(_string, ""))  # "" = admin.sock in the state dir


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = field(metadata=_key(_choice(("debug", "info", "warning", "error")), "info"))


@dataclass(frozen=True, slots=True)
class Config:
    source: Path  # the config file, absolute
    server: ServerConfig = field(metadata=_key(_section(ServerConfig), {}))
    upstream: UpstreamConfig = field(metadata=_key(_section(UpstreamConfig), {}))
    storage: StorageConfig = field(metadata=_key(_section(StorageConfig), {}))
    tokens: TokensConfig = field(metadata=_key(_section(TokensConfig), {}))
    oauth: OAuthConfig = field(metadata=_key(_section(OAuthConfig), {}))
    introspection: IntrospectionConfig = field(metadata=_key(_section(IntrospectionConfig), {}))
    login: LoginConfig = field(metadata=_key(_section(LoginConfig), {}))
    metrics: MetricsConfig = field(metadata=_key(_section(MetricsConfig), {}))
    admin: AdminConfig = field(metadata=_key(_section(AdminConfig), {}))
    log: LogConfig = field(metadata=_key(_section(LogConfig), {}))


def _check_storage(storage: StorageConfig, at: _At) -> None:
    if storage.save_max_wait < storage.save_debounce:
        raise at.key("save_max_wait").error(
            f"must be at least save_debounce ({storage.save_debounce:g}s), "
            f"got {storage.save_max_wait:g}s"
        )


def _check_config(config: Config, at: _At) -> None:
    unknown = [s for s in config.upstream.required_scopes if s not in config.oauth.scopes]
    if unknown:
        raise (
            at.key("upstream")
            .key("required_scopes")
            .error(f"{_show(unknown[0])} is not in oauth.scopes, so no token could ever carry it")
        )
    _check_shared_key(config, at)


def _check_shared_key(config: Config, at: _At) -> None:
    # Instances on one shared backend seal MCP session ids for each other: a revocation on
    # any of them must open the ids another one stored to close the sessions upstream.
    backend = config.storage.backend
    if backend in ("redis", "postgres") and not config.login.encryption_key:
        raise (
            at.key("login")
            .key("encryption_key")
            .error(
                f'required when storage.backend = "{backend}": every instance on the shared '
                "backend must seal MCP session ids with the same key, so that a revocation "
                "on any instance can close the sessions another one opened; "
                '"file:PATH", "env:NAME" or "credential:NAME" holding 32 bytes'
            )
        )


def _check_login(login: LoginConfig, at: _At) -> None:
    if login.provider == "local":
        return
    section = login.oidc if login.provider == "oidc" else login.github
    required = ("issuer", "client_id") if login.provider == "oidc" else ("client_id",)
    for name in required:
        if not getattr(section, name):
            raise (
                at.key(login.provider)
                .key(name)
                .error(f'required when login.provider = "{login.provider}"')
            )
    if not login.encryption_key:
        raise at.key("encryption_key").error(
            f'required when login.provider = "{login.provider}" (upstream tokens are kept '
            'encrypted): "file:PATH", "env:NAME" or "credential:NAME" holding 32 bytes'
        )


# Rules that involve more than one key of a section, run once the section is built.
_CHECKS: dict[type[Any], Callable[[Any, _At], None]] = {
    StorageConfig: _check_storage,
    LoginConfig: _check_login,
    Config: _check_config,
}


# --- the loader ---------------------------------------------------------------------------


def admin_socket_path(config: Config) -> Path:
    """Where the admin socket lives: `admin.socket`, else `admin.sock` in the state dir."""
    if config.admin.socket:
        return config.source.parent / config.admin.socket
    return config.storage.path / "admin.sock"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check a config file; raises ConfigError naming the file and key."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as stream:
            raw = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    source = Path(file).absolute()
    return _build(Config, raw, _At(file, "", source.parent), source=source)


def default_config(base_dir: Path) -> Config:
    """All defaults, no users, as if from an empty `base_dir/config.toml` (for tests)."""
    source = base_dir / "config.toml"
    return _build(Config, {}, _At(str(source), "", base_dir), source=source)


def _build(cls: type[_D], value: object, at: _At, **given: object) -> _D:
    """Build dataclass `cls` from a TOML table, converting each key its field declares."""
    if not isinstance(value, dict):
        raise at.error(f"expected a table, got {_show(value)}")
    schema = {f.name: f.metadata[_SCHEMA] for f in fields(cls) if _SCHEMA in f.metadata}
    for name in value:
        if name not in schema:
            raise at.key(name).error("unknown key" if at.path else "unknown section")
    values = {name: _value(key, value, name, at.key(name)) for name, key in schema.items()}
    built = cls(**values, **given)
    check = _CHECKS.get(cls)
    if check is not None:
        check(built, at)
    return built


def _value(key: _Key, table: dict[str, object], name: str, at: _At) -> Any:
    if name in table:
        return key.convert(table[name], at)
    if key.default is _REQUIRED:
        raise at.error("missing (this key is required)")
    return key.convert(key.default, at)
