"""Reading a config file: TOML in, a checked `Config` out (or `ConfigError`)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from oauthd.config.schema import At, ConfigError, build
from oauthd.config.sections import Config, check_config


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
    if isinstance(raw.get("resource"), list) and "upstream" in raw:
        raise ConfigError(
            f"{file}: upstream: [upstream] is the one-resource shorthand and cannot be used "
            'with [[resource]]; move its keys into a [[resource]] table with path = "/mcp"'
        )
    return build(Config, raw, At(file, "", source.parent), check_config, source=source)


def default_config(base_dir: Path) -> Config:
    """All defaults, no users, as if from an empty `base_dir/config.toml` (for tests)."""
    source = base_dir / "config.toml"
    return build(Config, {}, At(str(source), "", base_dir), check_config, source=source)
