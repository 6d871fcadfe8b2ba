"""The address policy of the SSRF guard, on its own; the guard at work (resolver, URL
shape, no connection made) is tested through the fetcher in test_cimd.py."""

from __future__ import annotations

import ipaddress

import pytest

from oauthd.outbound.ssrf import is_public_address

BLOCKED = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "::",
    "fd00::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::127.0.0.1",
    "64:ff9b::a00:1",
    "2002:a00:1::",
]


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_pass_the_policy(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        *BLOCKED,
        "192.0.2.1",
        "198.18.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "2001:db8::1",
        "2001::1",
        "100::1",
        "64:ff9b:1::a00:1",
        "fe80::1%eth0",
    ],
)
def test_special_addresses_fail_the_policy(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))
