"""The option most commands share: which config file (`--config`, else $OAUTHD_CONFIG)."""

from __future__ import annotations

import argparse
import os

from oauthd.config import Config, ConfigError, load_config


def _path(args: argparse.Namespace) -> str:
    path: str | None = args.config or os.environ.get("OAUTHD_CONFIG")
    if not path:
        raise ConfigError("no configuration: pass --config PATH or set OAUTHD_CONFIG")
    return path


def load(args: argparse.Namespace) -> Config:
    """The config the command line names; raises `ConfigError` (main prints it, exit 78)."""
    return load_config(_path(args))
