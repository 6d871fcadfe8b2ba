"""The no-secret-in-clear check: the JSON log captured at a chosen level, the files of a
state dir, and one assertion that no secret (nor the secret half of a token) is in any of
them; a signing key's private forms (`private_key_forms`: its PEM body, its JWK private
members) are secrets like any other."""

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


def private_key_forms(pem: bytes) -> set[str]:
    """What of a private key must never be seen in clear: each line of its PEM body, and
    each private member of its JWK (`d`; for RSA also `p`, `q`, `dp`, `dq`, `qi`), in the
    base64 and base64url spellings they would have."""
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    key: ECKey | RSAKey
    try:
        key = ECKey.import_key(pem)
    except (ValueError, JoseError):
        key = RSAKey.import_key(pem)
    members = key.as_dict(private=True)
    forms = {line for line in pem.decode().splitlines() if line and not line.startswith("-")}
    forms |= {str(members[m]) for m in ("d", "p", "q", "dp", "dq", "qi") if m in members}
    return forms
