"""Secrets are named, never written, in the config: "file:PATH", "env:NAME" or
"credential:NAME" (systemd's $CREDENTIALS_DIRECTORY)."""

from __future__ import annotations

import os
from pathlib import Path

from oauthd.config.convert import string
from oauthd.config.schema import At


def secret_ref(value: object, at: At) -> str:
    """Where a secret comes from, never the secret itself: "file:PATH", "env:NAME" or
    "credential:NAME" (systemd's $CREDENTIALS_DIRECTORY); "" for none."""
    text = string(value, at)
    kind, _, name = text.partition(":")
    if text and (kind not in ("file", "env", "credential") or not name):
        raise at.error(
            'expected "file:PATH", "env:NAME" or "credential:NAME" (never the secret itself)'
        )
    if kind == "file":
        return f"file:{at.base_dir / name}"
    return text


def read_secret(ref: str) -> str | None:
    """The secret a `secret_ref` names; None if it is empty or cannot be read."""
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
