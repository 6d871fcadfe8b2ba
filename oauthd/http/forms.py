"""Reading request parameters once, strictly: OAuth parameters appear at most once
(RFC 6749 s3.1), bodies have a size limit, and bad input is an `invalid_request`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote_plus

import orjson
from aiohttp import web
from multidict import MultiMapping

from oauthd.oauth import OAuthError, invalid_request

FORM_LIMIT = 64 * 1024
JSON_LIMIT = 16 * 1024


def _once_each(pairs: Iterable[tuple[str, str]], max_value: int | None) -> dict[str, str]:
    """Parameters as a dict; `invalid_request` for a repeated one (RFC 6749 s3.1) or, with
    `max_value`, one longer than that."""
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            raise invalid_request(f"parameter {name!r} is repeated")
        if max_value is not None and len(value) > max_value:
            raise invalid_request(f"parameter {name!r} is too long")
        values[name] = value
    return values


def single_values(params: MultiMapping[str]) -> dict[str, str]:
    return _once_each(params.items(), 4096)


def _form_pairs(text: str) -> Iterator[tuple[str, str]]:
    """`parse_qsl(text, keep_blank_values=True)`, without its generic argument handling:
    `&`-separated, a field without `=` has an empty value, empty fields are skipped."""
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            yield unquote_plus(name), unquote_plus(value)


async def read_form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise invalid_request("the body must be application/x-www-form-urlencoded")
    body = await _read_limited(request, FORM_LIMIT)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_request("the form body is not valid UTF-8 form data") from None
    return _once_each(_form_pairs(text), None)  # the body as a whole is bounded by FORM_LIMIT


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise OAuthError("invalid_client_metadata", "the body must be application/json")
    body = await _read_limited(request, JSON_LIMIT)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OAuthError("invalid_client_metadata", f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise OAuthError("invalid_client_metadata", "the body must be a JSON object")
    return value


async def _read_limited(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None:
        if length > limit:
            raise OAuthError("invalid_request", f"the body is larger than {limit} bytes", 413)
        if length == 0:  # aiohttp's empty stream refuses even readexactly(0)
            return b""
        try:  # in one call: a form is small, and usually arrived with its headers
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise invalid_request("the body is shorter than its Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(8192):
        size += len(chunk)
        if size > limit:
            raise OAuthError("invalid_request", f"the body is larger than {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)
