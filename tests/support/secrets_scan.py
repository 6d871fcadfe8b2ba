"""The no-secret-in-clear check: the JSON log captured at a chosen level, the files of a
state dir, and one assertion that no secret (nor the secret half of a token) is in any of
them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from oauthd.log import ROOT, setup_logging

LOGGERS = (ROOT, "aiohttp", "asyncio")


@contextmanager
def json_log(level: str) -> Iterator[None]:
    """oauthd's JSON lines at `level` on stdout (for capsys); the loggers as they were
    afterwards."""
    saved = {
        name: (list(logger.handlers), logger.level, logger.propagate)
        for name in LOGGERS
        for logger in [logging.getLogger(name)]
    }
    setup_logging(level)
    try:
        yield
    finally:
        for name, (handlers, level_before, propagate) in saved.items():
            logger = logging.getLogger(name)
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers, logger.level, logger.propagate = handlers, level_before, propagate


def state_files(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def secret_forms(secret: str) -> set[str]:
    """The secret, and the secret half of a `<key>.<secret>` token (the key is an id)."""
    _, dot, rest = secret.partition(".")
    return {secret, rest} if dot and rest else {secret}


def assert_no_secret(secrets: Iterable[str], places: Mapping[str, bytes | str]) -> None:
    """No form of any of `secrets` in any of `places` (name -> content)."""
    for secret in secrets:
        for form in secret_forms(secret):
            for place, content in places.items():
                found = form.encode() in content if isinstance(content, bytes) else form in content
                assert not found, f"a secret ({form[:6]}...) is in {place}"
