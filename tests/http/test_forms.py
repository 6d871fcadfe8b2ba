"""Form bodies read once and strictly: the same pairs as `parse_qsl`, repeated
parameters refused, a body shorter than its Content-Length refused."""

from __future__ import annotations

from unittest import mock
from urllib.parse import parse_qsl

import pytest
from aiohttp import streams
from aiohttp.test_utils import make_mocked_request

from oauthd.http.forms import _form_pairs, read_form
from oauthd.oauth import OAuthError

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "text",
    [
        "a=1&b=2",
        "a=&b",
        "a+b=c%20d&&x=%E2%82%AC",
        "=v",
        "a=1=2",
        "%zz=1&y=%FF",
        "",
        "&",
        "t=a.b-_~",
    ],
)
def test_pairs_are_parse_qsl_s(text: str) -> None:
    assert list(_form_pairs(text)) == parse_qsl(text, keep_blank_values=True)


def _request(body: bytes, length: int) -> object:
    protocol = mock.Mock(_reading_paused=False)
    payload = streams.StreamReader(protocol, 2**16, loop=mock.Mock())
    payload.feed_data(body)
    payload.feed_eof()
    headers = {"Content-Type": FORM, "Content-Length": str(length)}
    return make_mocked_request("POST", "/token", headers=headers, payload=payload)


async def test_a_form_is_read_whole() -> None:
    body = b"grant_type=refresh_token&refresh_token=k.s&client_id=c%2B1"
    form = await read_form(_request(body, len(body)))  # type: ignore[arg-type]
    assert form == {"grant_type": "refresh_token", "refresh_token": "k.s", "client_id": "c+1"}


async def test_a_body_shorter_than_its_length_is_invalid() -> None:
    with pytest.raises(OAuthError) as raised:
        await read_form(_request(b"grant_type=x", 100))  # type: ignore[arg-type]
    assert raised.value.error == "invalid_request"


async def test_a_repeated_parameter_is_invalid() -> None:
    body = b"scope=a&scope=b"
    with pytest.raises(OAuthError) as raised:
        await read_form(_request(body, len(body)))  # type: ignore[arg-type]
    assert "repeated" in (raised.value.description or "")
