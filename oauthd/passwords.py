"""The password-hash format of `[[login.users]]`: scrypt (`scrypt$ln=15,r=8,p=1$<salt>$<hash>`),
or argon2id when the `argon2` extra (argon2-cffi) is installed. Parse, make, verify.

A leaf: the config checks hashes with it and `oauthd.users` logs users in with it.
Passwords are never logged, stored or put in an error message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import os
import re
from dataclasses import dataclass
from types import ModuleType

__all__ = ["PasswordHash", "hash_password", "parse_password_hash", "random_hash", "verify_password"]

_LN, _R, _P = 15, 8, 1  # scrypt cost for new hashes: N = 2**15, about 32 MiB and 50-100 ms
_SALT_BYTES = 16
_DIGEST_BYTES = 32
_SCRYPT = re.compile(
    r"scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)
_HINT = 'make one with "oauthd users hash-password"'


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed password hash. For argon2id only `encoded` is used (argon2-cffi parses it)."""

    scheme: str  # "scrypt" or "argon2id"
    encoded: str
    salt: bytes = b""
    digest: bytes = b""
    ln: int = 0
    r: int = 0
    p: int = 0


def hash_password(password: str) -> str:
    """Hash a password for the config file: `scrypt$ln=15,r=8,p=1$<salt>$<hash>`."""
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, _LN, _R, _P, _DIGEST_BYTES)
    return f"scrypt$ln={_LN},r={_R},p={_P}${_b64(salt)}${_b64(digest)}"


def parse_password_hash(text: str) -> PasswordHash:
    """Parse a stored hash; raises ValueError saying what is wrong (never echoing the hash)."""
    if text.startswith("$argon2id$"):
        return _parse_argon2(text)
    match = _SCRYPT.fullmatch(text)
    if match is None:
        raise ValueError(f"not a recognised password hash ({_HINT})")
    ln, r, p = (int(group) for group in match.groups()[:3])
    if not (10 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range (ln 10-20, r 1-32, p 1-16)")
    salt, digest = _unb64(match[4]), _unb64(match[5])
    if len(salt) < 8 or not 16 <= len(digest) <= 64:
        raise ValueError(f"scrypt salt or hash has the wrong length ({_HINT})")
    return PasswordHash("scrypt", text, salt, digest, ln, r, p)


def verify_password(stored: PasswordHash, password: str) -> bool:
    """Check a password against a stored hash in constant time. CPU-bound: call in a thread."""
    if stored.scheme == "argon2id":
        return _verify_argon2(stored.encoded, password)
    actual = _scrypt(password, stored.salt, stored.ln, stored.r, stored.p, len(stored.digest))
    return hmac.compare_digest(actual, stored.digest)


def random_hash() -> PasswordHash:
    """A hash no password matches, with the default cost, for when there are no users."""
    salt, digest = os.urandom(_SALT_BYTES), os.urandom(_DIGEST_BYTES)
    return PasswordHash("scrypt", "", salt, digest, _LN, _R, _P)


def _scrypt(password: str, salt: bytes, ln: int, r: int, p: int, dklen: int) -> bytes:
    n = 2**ln
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024  # OpenSSL's need (V and B) plus slack
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise ValueError(f"scrypt salt or hash is not valid base64 ({_HINT})") from None


def _argon2() -> ModuleType | None:
    """The argon2-cffi module if installed: the optional `argon2` extra."""
    try:
        return importlib.import_module("argon2")
    except ImportError:
        return None


def _parse_argon2(text: str) -> PasswordHash:
    argon2 = _argon2()
    if argon2 is None:
        raise ValueError(
            "argon2id hashes need the argon2 extra (argon2-cffi), which is not installed: "
            "pip install 'oauthd[argon2]'"
        )
    try:
        argon2.extract_parameters(text)
    except ValueError:  # argon2's InvalidHashError
        raise ValueError("not a valid argon2id hash") from None
    return PasswordHash("argon2id", text)


def _verify_argon2(encoded: str, password: str) -> bool:
    argon2 = _argon2()
    if argon2 is None:  # parse_password_hash already refused it; stay closed anyway
        return False
    try:
        return bool(argon2.PasswordHasher().verify(encoded, password))
    except (argon2.exceptions.VerificationError, ValueError):  # mismatch, or bad hash
        return False
