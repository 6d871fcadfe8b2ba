import asyncio
import base64
import hashlib
import re
import threading

import pytest

from oauthd import passwords, users
from oauthd.config import LocalUser
from oauthd.passwords import PasswordHash, hash_password, parse_password_hash, verify_password
from oauthd.users import Users

ALICE_HASH = hash_password("alice-password")  # computed once: each hash costs ~0.1 s


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def test_hash_has_the_documented_format() -> None:
    salt_and_hash = r"([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})"
    match = re.fullmatch(r"scrypt\$ln=15,r=8,p=1\$" + salt_and_hash, ALICE_HASH)
    assert match is not None
    parsed = parse_password_hash(ALICE_HASH)
    assert (parsed.scheme, parsed.ln, parsed.r, parsed.p) == ("scrypt", 15, 8, 1)
    assert len(parsed.salt) == 16 and len(parsed.digest) == 32


def test_round_trip_and_wrong_password() -> None:
    stored = parse_password_hash(ALICE_HASH)
    assert verify_password(stored, "alice-password")
    assert not verify_password(stored, "alice-password ")
    assert not verify_password(stored, "")


def test_same_password_gets_a_fresh_salt() -> None:
    assert hash_password("alice-password") != ALICE_HASH


def test_other_scrypt_parameters_verify() -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"pw", salt=salt, n=2**10, r=4, p=2, dklen=64)
    stored = parse_password_hash(f"scrypt$ln=10,r=4,p=2${b64(salt)}${b64(digest)}")
    assert verify_password(stored, "pw")
    assert not verify_password(stored, "pW")


def test_non_ascii_password() -> None:
    stored = parse_password_hash(hash_password("pässwörd ✓"))
    assert verify_password(stored, "pässwörd ✓")
    assert not verify_password(stored, "passwörd ✓")


SALT, DIGEST = b64(b"s" * 16), b64(b"d" * 32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a recognised password hash"),
        ("hunter2", "not a recognised password hash"),
        ("$2b$12$abcdefghijklmnopqrstuu5Tj0bGq3xVv3cS9CZ3YJg2oWwCz7c9K", "not a recognised"),
        ("$argon2i$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "not a recognised password hash"),
        (f"scrypt$ln=15,r=8,p=1${SALT}", "not a recognised password hash"),
        (f"scrypt$ln=15,r=8${SALT}${DIGEST}", "not a recognised password hash"),
        (f"scrypt$ln=15,r=8,p=1${SALT}${DIGEST}$", "not a recognised password hash"),
        (f"scrypt$ln=15,r=8,p=1$!!{SALT}${DIGEST}", "not a recognised password hash"),
        (f"scrypt$ln=15,r=8,p=1$abcde${DIGEST}", "not valid base64"),
        (f"scrypt$ln=30,r=8,p=1${SALT}${DIGEST}", "out of range"),
        (f"scrypt$ln=15,r=0,p=1${SALT}${DIGEST}", "out of range"),
        (f"scrypt$ln=15,r=8,p=1${b64(b'short')}${DIGEST}", "wrong length"),
        (f"scrypt$ln=15,r=8,p=1${SALT}${b64(b'd' * 8)}", "wrong length"),
    ],
)
def test_malformed_hashes_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_password_hash(text)
    if text:
        assert text not in str(info.value)


def test_argon2_without_the_package_says_what_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_argon2", lambda: None)
    argon2_hash = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"
    with pytest.raises(ValueError, match=r"argon2-cffi.*pip install 'oauthd\[argon2\]'"):
        parse_password_hash(argon2_hash)


def test_argon2_round_trip_with_the_argon2_extra() -> None:
    import argon2  # the `argon2` extra, part of `dev`: this test never skips

    encoded = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    stored = parse_password_hash(encoded)
    assert stored.scheme == "argon2id"
    assert verify_password(stored, "pw")
    assert not verify_password(stored, "wrong")
    with pytest.raises(ValueError, match="not a valid argon2id hash"):
        parse_password_hash("$argon2id$garbage")


def make_users() -> Users:
    return Users((LocalUser("alice", ALICE_HASH),))


async def test_authenticate() -> None:
    known = make_users()
    assert await known.authenticate("alice", "alice-password") == "alice"
    assert await known.authenticate("alice", "wrong") is None
    assert await known.authenticate("Alice", "alice-password") is None
    assert "alice" in known and "bob" not in known


def count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap verify_password; returns the ids of the threads it ran on."""
    threads: list[int] = []
    real = users.verify_password

    def counting(stored: PasswordHash, password: str) -> bool:
        threads.append(threading.get_ident())
        return real(stored, password)

    monkeypatch.setattr(users, "verify_password", counting)
    return threads


async def test_unknown_user_costs_a_verification_too(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = count_verifications(monkeypatch)
    known = make_users()
    assert await known.authenticate("bob", "alice-password") is None
    assert await known.authenticate("alice", "wrong") is None
    assert len(threads) == 2


async def test_no_users_still_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = count_verifications(monkeypatch)
    assert await Users(()).authenticate("bob", "") is None
    assert len(threads) == 1


async def test_verification_runs_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = count_verifications(monkeypatch)
    await make_users().authenticate("alice", "alice-password")
    assert threads and threads[0] != threading.get_ident()


async def test_authenticate_does_not_block_the_event_loop() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await make_users().authenticate("alice", "alice-password")  # ~50-100 ms of scrypt
    ticker.cancel()
    assert ticks >= 3


def test_groups_of_a_user() -> None:
    users = Users((LocalUser("alice", ALICE_HASH, ("ops", "staff")), LocalUser("bob", ALICE_HASH)))
    assert users.groups("alice") == ("ops", "staff")
    assert users.groups("bob") == ()
    assert users.groups("nobody") == ()


def test_groups_of_a_local_user() -> None:
    known = Users((LocalUser("alice", ALICE_HASH, ("ops", "dev")), LocalUser("bob", ALICE_HASH)))
    assert known.groups_of("alice") == frozenset({"ops", "dev"})
    assert known.groups_of("bob") == frozenset()
    assert known.groups_of("carol") == frozenset()
