"""The client address (`oauthd.peers`): the peer's, unless a trusted proxy names the client
in `X-Forwarded-For` or `Forwarded` (RFC 7239); hostile or broken headers never name one."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from oauthd.peers import client_address, forwarded_for, parse_address

PROXY = ("127.0.0.1/32", "10.0.0.0/8", "::1/128")


def address(peer: str | None, *headers: tuple[str, str], trusted: tuple[str, ...] = PROXY) -> str:
    return client_address(peer, CIMultiDict(headers), trusted)


def xff(value: str) -> tuple[str, str]:
    return ("X-Forwarded-For", value)


def fwd(value: str) -> tuple[str, str]:
    return ("Forwarded", value)


@pytest.mark.parametrize(
    ("hops", "expected"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("203.0.113.9, 10.1.2.3", "203.0.113.9"),  # a second trusted proxy in the chain
        ("1.1.1.1, 203.0.113.9", "203.0.113.9"),  # the left part is the client's to forge
        ("1.1.1.1,203.0.113.9,10.0.0.5,10.0.0.6", "203.0.113.9"),
        ("203.0.113.9:51000", "203.0.113.9"),  # a proxy that adds the port
        ("2001:db8::7", "2001:db8::7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("10.0.0.5, 10.0.0.6", "10.0.0.5"),  # every hop trusted: the left-most is the client
        ("  203.0.113.9  ", "203.0.113.9"),
    ],
)
def test_x_forwarded_for_from_a_trusted_peer(hops: str, expected: str) -> None:
    assert address("127.0.0.1", xff(hops)) == expected


def test_several_x_forwarded_for_lines_are_one_list() -> None:
    assert address("127.0.0.1", xff("1.1.1.1"), xff("203.0.113.9")) == "203.0.113.9"


@pytest.mark.parametrize(
    "hops",
    ["not-an-address", "", "unknown", "1.2.3.4.5", "203.0.113.9, garbage", "999.1.1.1", ","],
)
def test_a_garbage_hop_stands_for_the_proxy_that_reported_it(hops: str) -> None:
    assert address("127.0.0.1", xff(hops)) == "127.0.0.1"
    assert address("10.0.0.5", xff(f"{hops}, 10.0.0.6")) == "10.0.0.6"


def test_an_untrusted_peer_s_headers_are_ignored() -> None:
    forged = (xff("203.0.113.9"), fwd("for=203.0.113.9"))
    assert address("198.51.100.1", *forged) == "198.51.100.1"
    assert address("127.0.0.1", *forged, trusted=()) == "127.0.0.1"  # the default: none


def test_the_peer_alone() -> None:
    assert address("127.0.0.1") == "127.0.0.1"  # a trusted peer sending nothing is the client
    assert address("::ffff:192.0.2.1", trusted=()) == "192.0.2.1"
    assert address("fe80::1%eth0", trusted=()) == "fe80::1"
    assert address(None) == "unknown"  # no transport
    assert address("/run/oauthd.sock", xff("203.0.113.9")) == "/run/oauthd.sock"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("for=203.0.113.9", "203.0.113.9"),
        ('for="203.0.113.9:4711"', "203.0.113.9"),
        ('for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ("For=203.0.113.9;proto=https;by=10.0.0.1", "203.0.113.9"),
        ('proto=https; for="203.0.113.9";host="a;b,c"', "203.0.113.9"),
        ("for=1.1.1.1, for=203.0.113.9", "203.0.113.9"),
        ("for=203.0.113.9, for=10.0.0.6", "203.0.113.9"),
        ("for=_hidden", "_hidden"),  # an obfuscated node: the proxy's own name for its client
        ('for="_SEVKISEK"', "_SEVKISEK"),
        ("for=unknown", "127.0.0.1"),
        ("proto=https", "127.0.0.1"),  # an element without for=
        ("for=203.0.113.9;;;", "127.0.0.1"),  # an element that cannot be parsed
        ('for="203.0.113.9', "127.0.0.1"),  # an unterminated quoted string
        ("for=1.1.1.1, garbage here", "127.0.0.1"),
        ("", "127.0.0.1"),
    ],
)
def test_forwarded_from_a_trusted_peer(value: str, expected: str) -> None:
    assert address("127.0.0.1", fwd(value)) == expected


def test_x_forwarded_for_wins_over_forwarded() -> None:
    assert address("127.0.0.1", fwd("for=1.1.1.1"), xff("203.0.113.9")) == "203.0.113.9"


def test_forwarded_for_nodes_in_order() -> None:
    assert forwarded_for(['for=a, for="b,c";proto=x', "for=d"]) == ["a", "b,c", "d"]
    assert forwarded_for(['for="\\"quoted\\""']) == ['"quoted"']


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("10.0.0.1:80", "10.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:80", "::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("::1:80", "::1:80"),  # an unbracketed IPv6 address is read as written
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_parse_address(text: str, expected: str) -> None:
    assert str(parse_address(text)) == expected


@pytest.mark.parametrize("text", ["", "x", "[::1", "10.0.0.1:", "1.2.3.4:99999999", "_x"])
def test_parse_address_refuses(text: str) -> None:
    assert parse_address(text) is None
