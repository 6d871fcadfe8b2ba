"""Known browsers: OWASP's device cookies
(https://owasp.org/www-community/Slow_Down_Online_Guessing_Attacks_with_Device_Cookies).

A browser that signed in as a user gets a cookie naming that user, signed by oauthd:
`<user, base64url>.<expires>.<nonce>.<mac>`, the MAC an HMAC-SHA256 over the rest under a
key derived from the session key (`oauthd.keyring.known_browser_key`), so every instance
on a shared backend, and the next start, recognise it. A sign-in from a browser holding a
valid cookie for the user it names counts its failures against that cookie alone, so a
stranger guessing a user's password can exhaust only the "unknown browsers" limit of that
user, never lock out a browser the user has signed in with (`oauthd.oauth.signin`).

Nothing is stored: a cookie is valid until it expires. The counter of a cookie is keyed by
a digest of its nonce, never by the nonce itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from oauthd.clock import Clock

MAX_COOKIE = 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class KnownBrowsers:
    """Issues and recognises the signed known-browser cookies."""

    def __init__(self, key: bytes, clock: Clock, ttl: float) -> None:
        self._key = key
        self._clock = clock
        self.ttl = ttl

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def issue(self, user: str) -> str:
        """A new cookie value saying this browser signed in as `user`."""
        expires = int(self._clock.now() + self.ttl)
        body = f"{_b64(user.encode())}.{expires}.{_b64(secrets.token_bytes(16))}"
        return f"{body}.{self._mac(body)}"

    def recognise(self, value: str | None, user: str) -> str | None:
        """The counter key of this browser if `value` is a valid, unexpired cookie for
        `user` (as typed, exactly); else None."""
        if not value or len(value) > MAX_COOKIE:
            return None
        body, _, mac = value.rpartition(".")
        if not body or not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        try:  # signed by us, so well formed; checked all the same
            name, expires, nonce = body.split(".")
            named = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
            live = int(expires) > self._clock.now()
        except ValueError:  # binascii.Error, UnicodeDecodeError included
            return None
        if not live or not hmac.compare_digest(named.encode(), user.encode()):
            return None
        return hashlib.sha256(nonce.encode()).hexdigest()[:32]
