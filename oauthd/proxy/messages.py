"""The JSON-RPC message of a POST, and the 2026-07-28 rule that its mirrored headers agree
with it (transports/streamable-http, "Request Metadata" and "Server Validation").

From `MCP-Protocol-Version: 2026-07-28` on, a client mirrors the body's `method` into
`Mcp-Method` and, for `tools/call`, `prompts/get` and `resources/read`, `params.name` or
`params.uri` into `Mcp-Name` (Base64 in a `=?base64?...?=` sentinel when not plain
ASCII). Components that route or decide on the headers must not be told one thing while
the upstream executes another, so oauthd, which reads the body, refuses any disagreement:
400 with JSON-RPC error -32020 (HeaderMismatch), before the upstream sees the request.
Requests of older versions (or none) are decided on the body alone. `Mcp-Param-*`
headers are the upstream's to check (they depend on its tools' schemas) and pass as they
are.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import orjson
from multidict import istr

# istr: aiohttp's header lookups need not case-fold them on every request
PROTOCOL_VERSION_HEADER = istr("MCP-Protocol-Version")
METHOD_HEADER = istr("Mcp-Method")
NAME_HEADER = istr("Mcp-Name")
FIRST_VALIDATING_VERSION = "2026-07-28"
HEADER_MISMATCH = -32020
PARSE_ERROR = -32700
BODY_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
_HEADER_SAFE = re.compile(r"[\x20-\x7e\t]*")
_SENTINEL = re.compile(r"=\?base64\?(.*)\?=")


class NotJson(ValueError):
    """The body is not one JSON value."""


class Mismatch(ValueError):
    """The headers do not agree with the body; the message says which and how."""


def validates_headers(version: str | None) -> bool:
    """True if a request of this `MCP-Protocol-Version` must mirror its body in headers.
    Versions are dates, so they compare as strings; anything else is an older client."""
    return (
        version is not None
        and _VERSION.fullmatch(version) is not None
        and version >= FIRST_VALIDATING_VERSION
    )


def parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotJson("the request body is not JSON") from None


def request_id(message: Any) -> Any:
    """The id to answer `message` with (None for a notification or no request at all)."""
    if isinstance(message, dict):
        value = message.get("id")
        if isinstance(value, str | int) and not isinstance(value, bool):
            return value
    return None


def check_headers(headers: Mapping[str, str], message: Any) -> None:
    """Raise `Mismatch` unless the mirrored headers agree with `message` (the body of a
    2026-07-28 POST)."""
    if not isinstance(message, dict):
        raise Mismatch("the body must be a single JSON-RPC request or notification")
    method = message.get("method")
    if not isinstance(method, str):
        return  # not a request: nothing is mirrored (the upstream answers what it is)
    is_request = "id" in message
    _check_one(headers, METHOD_HEADER, method, required=is_request)
    key = NAMED_BY.get(method)
    params = message.get("params")
    if key is not None:
        named = params.get(key) if isinstance(params, dict) else None
        _check_one(headers, NAME_HEADER, named if isinstance(named, str) else None, is_request)
    meta = params.get("_meta") if isinstance(params, dict) else None
    body_version = meta.get(BODY_VERSION_KEY) if isinstance(meta, dict) else None
    header_version = headers.get(PROTOCOL_VERSION_HEADER)
    if isinstance(body_version, str) and body_version != header_version:
        raise Mismatch(
            f"{PROTOCOL_VERSION_HEADER} header value {header_version!r} does not match "
            f"body value {body_version!r}"
        )


def mirrored(headers: Mapping[str, str], header: str) -> str | None:
    """A mirrored header's value (`Mcp-Name` decoded from its Base64 sentinel), None if
    absent; `Mismatch` if it is malformed."""
    raw = headers.get(header)
    return None if raw is None else _decoded(header, raw)


def _check_one(
    headers: Mapping[str, str], header: str, body_value: str | None, required: bool
) -> None:
    raw = headers.get(header)
    if raw is None:
        if body_value is not None and required:
            raise Mismatch(f"{header} header is required (body value {body_value!r})")
        return
    value = _decoded(header, raw)
    if body_value is None:
        raise Mismatch(f"{header} header value {value!r} has no counterpart in the body")
    if value != body_value:
        raise Mismatch(f"{header} header value {value!r} does not match body value {body_value!r}")


def _decoded(header: str, raw: str) -> str:
    if _HEADER_SAFE.fullmatch(raw) is None:
        raise Mismatch(f"{header} header contains invalid characters")
    if header != NAME_HEADER:
        return raw
    sentinel = _SENTINEL.fullmatch(raw)
    if sentinel is None:
        return raw
    try:
        return base64.b64decode(sentinel[1], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Mismatch(f"{header} header is not valid Base64 of UTF-8 text") from None
