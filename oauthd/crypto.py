"""Tokens and secrets: minting, hashing for rest, constant-time comparison.

A token is `<key>.<secret>`: the key finds its record in O(1) in every backend, and only
the SHA-256 digest of the secret is ever stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SECRET_BYTES = 32  # 256 bits
KEY_BYTES = 16


@dataclass(slots=True, frozen=True)
class MintedToken:
    key: str
    secret_hash: bytes
    token: str  # the clear value: hand it to the client, never store or log it


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_key() -> str:
    return _b64(secrets.token_bytes(KEY_BYTES))


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def mint_token(key: str | None = None) -> MintedToken:
    """A fresh token; pass `key` to reuse a record's key with a new secret."""
    key = key or new_key()
    secret = _b64(secrets.token_bytes(SECRET_BYTES))
    return MintedToken(key=key, secret_hash=hash_secret(secret), token=f"{key}.{secret}")


def split_token(token: str) -> tuple[str, str] | None:
    """(key, secret) of a well-formed token, else None."""
    key, dot, secret = token.partition(".")
    if not dot or not key or not secret or "." in secret or len(token) > 512:
        return None
    return key, secret


def secret_matches(secret: str, stored_hash: bytes | None) -> bool:
    if stored_hash is None:
        return False
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def lookup_key(value: str) -> str:
    """A stable, non-reversible key for a value that must not be stored in clear
    (an upstream `Mcp-Session-Id`, for instance)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


PKCE_VERIFIER_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (RFC 7636 s4.2)."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def is_pkce_value(value: str) -> bool:
    """43-128 unreserved characters: the shape of a verifier, and of an S256 challenge."""
    return 43 <= len(value) <= 128 and all(c in PKCE_VERIFIER_CHARS for c in value)


def pkce_matches(verifier: str, challenge: str) -> bool:
    if not is_pkce_value(verifier):
        return False
    return hmac.compare_digest(pkce_challenge(verifier), challenge)


def new_secret() -> str:
    """A random secret (client secrets, browser binding), 256 bits, URL-safe."""
    return _b64(secrets.token_bytes(SECRET_BYTES))


def keyed_digest(key: str, message: str) -> str:
    """HMAC-SHA256 as URL-safe text: CSRF tokens bound to a browser secret."""
    return _b64(hmac.new(key.encode(), message.encode(), hashlib.sha256).digest())


def texts_match(given: str, expected: str) -> bool:
    """Constant-time comparison of two strings (CSRF tokens, configured secrets)."""
    return hmac.compare_digest(given.encode(), expected.encode())


class Sealer:
    """AES-256-GCM for secrets from an upstream identity provider. Each ciphertext is bound
    to the record that holds it (associated data), so it cannot be moved to another one."""

    NONCE_BYTES = 12

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ValueError("the encryption key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, bound_to: str) -> bytes:
        nonce = secrets.token_bytes(self.NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, bound_to.encode())

    def open(self, sealed: bytes, bound_to: str) -> bytes:
        """The plaintext; `ValueError` if the ciphertext was altered or moved."""
        from cryptography.exceptions import InvalidTag

        nonce, body = sealed[: self.NONCE_BYTES], sealed[self.NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, bound_to.encode())
        except InvalidTag:
            raise ValueError("sealed value does not open (altered, or bound elsewhere)") from None


def parse_key(text: str) -> bytes:
    """A 32-byte key written as 64 hex digits or base64 (standard or URL-safe)."""
    text = text.strip()
    try:
        if len(text) == 64:
            return bytes.fromhex(text)
        return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "==")
    except ValueError:
        raise ValueError("the encryption key must be 64 hex digits or base64 of 32 bytes") from None
