"""Test configs: the known users and their password hashes, and the one way to write a
daemon's TOML config (`write_config`)."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from oauthd import crypto
from oauthd.config import (
    Config,
    IntrospectionConfig,
    Listen,
    LocalUser,
    ResourceConfig,
    RuleConfig,
    default_config,
)
from oauthd.passwords import hash_password
from tests.support.ports import free_port

USER = "alice"
PASSWORD = "correct horse battery staple"
OTHER_USER = "bob"
OTHER_PASSWORD = "hunter2 but longer"
INTROSPECTION_ID = "resource-server"

TomlValue = str | int | float | bool | list[str]


def write_secret(path: Path, text: str) -> Path:
    """A key or secret file as an operator keeps it: readable by its owner only (0600);
    oauthd refuses a key file that others may read (`oauthd.keyring`)."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def fast_password_hash(password: str) -> str:
    """A hash `Users` accepts, at the lowest allowed cost (ln=10) so logins take ~1 ms."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    return f"scrypt$ln=10,r=8,p=1${_b64(salt)}${_b64(digest)}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


PASSWORD_HASH = fast_password_hash(PASSWORD)
OTHER_PASSWORD_HASH = fast_password_hash(OTHER_PASSWORD)


def _value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)  # a JSON string (or list of strings) is valid TOML


def render_toml(
    sections: Mapping[str, Mapping[str, TomlValue]], users: Iterable[tuple[str, str]] = ()
) -> str:
    """`sections` as TOML tables (in order), then one [[login.users]] per (name, hash)."""
    parts = [
        f"[{name}]\n" + "".join(f"{key} = {_value(v)}\n" for key, v in keys.items())
        for name, keys in sections.items()
    ]
    parts += [
        f"[[login.users]]\nusername = {_value(name)}\npassword_hash = {_value(hashed)}\n"
        for name, hashed in users
    ]
    return "\n".join(parts)


def write_config(
    path: Path,
    port: int,
    sections: Mapping[str, Mapping[str, TomlValue]] = {},
    *,
    issuer: str | None = None,
    users: Iterable[tuple[str, str]] = ((USER, PASSWORD_HASH),),
) -> Path:
    """A daemon config at `path`: [server] listening on 127.0.0.1:`port` (the issuer is
    that address unless given) with a 2 s shutdown, then `sections` (a [server] entry there
    adds keys), then the users."""
    server: dict[str, TomlValue] = {
        "listen": f"127.0.0.1:{port}",
        "issuer": issuer or f"http://127.0.0.1:{port}",
        "shutdown_timeout": "2s",
        **sections.get("server", {}),
    }
    rest = {name: keys for name, keys in sections.items() if name != "server"}
    path.write_text(render_toml({"server": server, **rest}, users))
    return path


def rule(rule_id: str, **keys: Any) -> RuleConfig:
    """A `[[resource.rule]]` with `keys` (`name`, `require_scopes`, `users`, ...) over the
    defaults: any method, any name, no condition, allow."""
    defaults: dict[str, Any] = {
        "method": "*",
        "name": (),
        "require_scopes": (),
        "users": None,
        "groups": None,
        "clients": None,
        "effect": "allow",
        "message": "",
    }
    return RuleConfig(id=rule_id, **{**defaults, **keys})


def resource(
    path: str,
    url: str,
    *,
    scopes: tuple[str, ...] = ("mcp",),
    rules: Iterable[RuleConfig] = (),
    name: str = "",
    **upstream: Any,
) -> ResourceConfig:
    """A `[[resource]]` at `path` in front of `url`; `upstream`: any other key of
    `[upstream]` (`required_scopes` is `("mcp",)` unless given)."""
    keys = {"required_scopes": ("mcp",), **upstream}
    base = default_config(Path("/nonexistent")).upstream
    return ResourceConfig(
        path,
        name or path,
        dataclasses.replace(base, url=url, **keys),
        scopes,
        tuple(rules),
    )


def make_config(
    tmp: Path,
    port: int,
    *,
    issuer: str | None = None,
    upstream_url: str | None = None,
    resources: Iterable[ResourceConfig | tuple[str, str, tuple[str, ...]]] = (),
    users: Iterable[LocalUser] | None = None,
    **sections: Mapping[str, Any],
) -> Config:
    """An in-process app's config: the defaults, plus issuer and listen on `port`, the file
    backend in `tmp/state`, `upstream_url` (by default one nobody listens on: /mcp answers
    502 after its bearer check), the users alice and bob (or `users`), and an introspection
    client whose secret is in `tmp/introspection.secret`. `resources`: `[[resource]]`
    tables in place of the `[upstream]` shorthand: `resource(...)`, or (path, name, scopes)
    each in front of that upstream.
    `sections` change single keys: `oauth={"allowed_redirect_schemes": ("cursor",)}`."""
    base = default_config(tmp)
    secret_file = tmp / "introspection.secret"
    write_secret(secret_file, crypto.new_secret() + "\n")
    config = dataclasses.replace(
        base,
        server=dataclasses.replace(
            base.server,
            listen=Listen("127.0.0.1", port),
            issuer=issuer or f"http://127.0.0.1:{port}",
        ),
        storage=dataclasses.replace(base.storage, backend="file", path=tmp / "state"),
        upstream=dataclasses.replace(
            base.upstream, url=upstream_url or f"http://127.0.0.1:{free_port()}/mcp"
        ),
        login=dataclasses.replace(
            base.login,
            users=tuple(users)
            if users is not None
            else (
                LocalUser(USER, PASSWORD_HASH),
                LocalUser(OTHER_USER, OTHER_PASSWORD_HASH),
            ),
        ),
        introspection=IntrospectionConfig(INTROSPECTION_ID, f"file:{secret_file}"),
    )
    changed: dict[str, Any] = {
        name: dataclasses.replace(getattr(config, name), **keys) for name, keys in sections.items()
    }
    tables = tuple(
        r if isinstance(r, ResourceConfig) else ResourceConfig(r[0], r[1], config.upstream, r[2])
        for r in resources
    )
    if tables:
        changed["resource"] = tables
    return dataclasses.replace(config, **changed)


def introspection_secret(config: Config) -> str:
    return Path(config.introspection.client_secret.removeprefix("file:")).read_text().strip()


# The SDK interop tests sign in with the real password scheme (hashed once per session).
INTEROP_USER = "interop-user"
INTEROP_PASSWORD = "interop password, long enough"


@functools.cache
def real_password_hash(password: str) -> str:
    return hash_password(password)


def state_config(directory: Path, port: int, **storage: str) -> Path:
    """`<directory>/oauthd.toml`: file state in `<directory>/state`, saved only at exit
    unless `storage` says otherwise; a 5 s shutdown; no users."""
    keys = {"path": "state", "save_interval": "1h", "save_debounce": "1h", "save_max_wait": "1h"}
    sections: dict[str, dict[str, TomlValue]] = {
        "server": {"shutdown_timeout": "5s"},
        "storage": {**keys, **storage},
    }
    return write_config(directory / "oauthd.toml", port, sections, users=())
