"""Local users: the users of `[[login.users]]`, logged in by password.

Passwords are never logged, stored or put in an error message; only their hashes (the
format is `oauthd.passwords`) live in the config file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from oauthd.passwords import parse_password_hash, random_hash, verify_password

if TYPE_CHECKING:
    from oauthd.config import LocalUser

__all__ = ["Users"]


class Users:
    """The local users from the config, checked by password."""

    def __init__(self, users: Iterable[LocalUser]) -> None:
        users = tuple(users)
        self._hashes = {user.username: parse_password_hash(user.password_hash) for user in users}
        self._groups = {user.username: tuple(user.groups) for user in users}
        self._group_sets = {user.username: frozenset(user.groups) for user in users if user.groups}
        # An unknown user is checked against a real hash (the result thrown away) so that
        # "no such user" takes as long as "wrong password" and does not reveal who exists.
        self._dummy = next(iter(self._hashes.values()), random_hash())

    def __contains__(self, username: object) -> bool:
        return username in self._hashes

    def groups(self, username: str) -> tuple[str, ...]:
        """The user's `groups` in order (none for a user that is not configured)."""
        return self._groups.get(username, ())

    def groups_of(self, username: str) -> frozenset[str]:
        """The groups (`[[login.users]] groups`) of a local user as a set (policy asks on
        every call); empty for anyone else."""
        return self._group_sets.get(username, frozenset())

    async def authenticate(self, username: str, password: str) -> str | None:
        """Return the username if the password is right, else None; runs scrypt in a thread."""
        stored = self._hashes.get(username)
        ok = await asyncio.to_thread(verify_password, stored or self._dummy, password)
        return username if stored is not None and ok else None
