import base64
import hashlib

from oauthd import crypto


def test_minted_token_is_key_dot_secret_with_only_the_hash_kept() -> None:
    minted = crypto.mint_token()
    key, secret = minted.token.split(".")
    assert key == minted.key
    assert len(base64.urlsafe_b64decode(secret + "=")) == crypto.SECRET_BYTES
    assert minted.secret_hash == hashlib.sha256(secret.encode()).digest()
    assert secret not in repr(minted.secret_hash)


def test_tokens_are_unique_and_can_reuse_a_key() -> None:
    first, second = crypto.mint_token(), crypto.mint_token()
    assert first.key != second.key and first.token != second.token
    again = crypto.mint_token(first.key)
    assert again.key == first.key and again.secret_hash != first.secret_hash


def test_split_token_rejects_malformed_values() -> None:
    assert crypto.split_token("abc.def") == ("abc", "def")
    for bad in ("", "abc", "abc.", ".def", "a.b.c", "a." + "x" * 600):
        assert crypto.split_token(bad) is None, bad


def test_secret_matches_in_constant_time_helper() -> None:
    minted = crypto.mint_token()
    _, secret = minted.token.split(".")
    assert crypto.secret_matches(secret, minted.secret_hash)
    assert not crypto.secret_matches(secret + "x", minted.secret_hash)
    assert not crypto.secret_matches(secret, None)


def test_lookup_key_is_stable_and_not_the_value() -> None:
    assert crypto.lookup_key("session-1") == crypto.lookup_key("session-1")
    assert crypto.lookup_key("session-1") != crypto.lookup_key("session-2")
    assert "session-1" not in crypto.lookup_key("session-1")
