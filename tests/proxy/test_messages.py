"""The 2026-07-28 header rule as a table: which versions must mirror, what agrees."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from oauthd.proxy.messages import (
    Mismatch,
    NotJson,
    check_headers,
    parse,
    request_id,
    validates_headers,
)

NEW = {"MCP-Protocol-Version": "2026-07-28"}


def b64(text: str) -> str:
    return f"=?base64?{base64.b64encode(text.encode()).decode()}?="


def call(method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}


@pytest.mark.parametrize(
    ("version", "validates"),
    [
        ("2026-07-28", True),
        ("2027-01-01", True),
        ("2025-11-25", False),
        ("2025-06-18", False),
        (None, False),
        ("draft", False),
        ("2026-07-28x", False),
    ],
)
def test_which_versions_mirror_the_body(version: str | None, validates: bool) -> None:
    assert validates_headers(version) is validates


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Mcp-Method": "tools/list"}, call("tools/list")),
        (
            {"Mcp-Method": "tools/call", "Mcp-Name": "get_weather"},
            call("tools/call", name="get_weather"),
        ),
        ({"Mcp-Method": "prompts/get", "Mcp-Name": "greet"}, call("prompts/get", name="greet")),
        (
            {"Mcp-Method": "resources/read", "Mcp-Name": "file:///a b"},
            call("resources/read", uri="file:///a b"),
        ),
        # Base64 for what is not plain ASCII, and for what looks like the sentinel
        ({"Mcp-Method": "tools/call", "Mcp-Name": b64("météo")}, call("tools/call", name="météo")),
        (
            {"Mcp-Method": "tools/call", "Mcp-Name": b64("=?base64?x?=")},
            call("tools/call", name="=?base64?x?="),
        ),
        # a notification: headers not required, but agree when present
        ({}, {"jsonrpc": "2.0", "method": "notifications/initialized"}),
        ({"Mcp-Method": "notifications/x"}, {"jsonrpc": "2.0", "method": "notifications/x"}),
        # a response, not a request: nothing is mirrored
        ({}, {"jsonrpc": "2.0", "id": 1, "result": {}}),
        # Mcp-Name on a method that names nothing is not ours to judge
        ({"Mcp-Method": "tools/list", "Mcp-Name": "x"}, call("tools/list")),
        # a null name needs no header
        (
            {"Mcp-Method": "tools/call"},
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": None}},
        ),
        # the body's own version, when it carries one, agrees with the header's
        (
            {"Mcp-Method": "ping"},
            call("ping", _meta={"io.modelcontextprotocol/protocolVersion": "2026-07-28"}),
        ),
    ],
)
def test_headers_that_agree(headers: dict[str, str], message: Any) -> None:
    check_headers({**NEW, **headers}, message)


@pytest.mark.parametrize(
    ("headers", "message", "why"),
    [
        ({}, call("tools/list"), "Mcp-Method header is required"),
        (
            {"Mcp-Method": "tools/list"},
            call("tools/call", name="x"),
            "does not match body value 'tools/call'",
        ),
        (
            {"Mcp-Method": "Tools/call", "Mcp-Name": "x"},
            call("tools/call", name="x"),
            "does not match",
        ),
        ({"Mcp-Method": "tools/call"}, call("tools/call", name="x"), "Mcp-Name header is required"),
        (
            {"Mcp-Method": "tools/call", "Mcp-Name": "read"},
            call("tools/call", name="delete"),
            "'read' does not match body value 'delete'",
        ),
        (
            {"Mcp-Method": "tools/call", "Mcp-Name": "x"},
            call("tools/call"),
            "no counterpart in the body",
        ),
        (
            {"Mcp-Method": "resources/read", "Mcp-Name": "file:///a"},
            call("resources/read", uri="file:///b"),
            "does not match",
        ),
        (
            {"Mcp-Method": "tools/call", "Mcp-Name": "=?base64?!!?="},
            call("tools/call", name="x"),
            "not valid Base64",
        ),
        (
            {"Mcp-Method": "tools/call", "Mcp-Name": b64("other")},
            call("tools/call", name="météo"),
            "does not match",
        ),
        (
            {"Mcp-Method": "tools/call", "Mcp-Name": "m\x01"},
            call("tools/call", name="m\x01"),
            "invalid characters",
        ),
        (
            {"Mcp-Method": "tools/call", "Mcp-Name": "météo"},
            call("tools/call", name="météo"),
            "invalid characters",
        ),
        (
            {"Mcp-Method": "notifications/y"},
            {"jsonrpc": "2.0", "method": "notifications/x"},
            "does not match",
        ),
        (
            {"Mcp-Method": "ping"},
            call("ping", _meta={"io.modelcontextprotocol/protocolVersion": "2027-01-01"}),
            "MCP-Protocol-Version",
        ),
        ({"Mcp-Method": "ping"}, [call("ping")], "single JSON-RPC request"),
        ({"Mcp-Method": "ping"}, "ping", "single JSON-RPC request"),
    ],
)
def test_headers_that_disagree(headers: dict[str, str], message: Any, why: str) -> None:
    with pytest.raises(Mismatch, match=why.replace("(", r"\(")):
        check_headers({**NEW, **headers}, message)


def test_parse_and_request_id() -> None:
    assert parse(b'{"a": 1}') == {"a": 1}
    with pytest.raises(NotJson):
        parse(b"{")
    assert request_id({"id": "x"}) == "x"
    assert request_id({"id": 3}) == 3
    assert request_id({"id": True}) is None
    assert request_id({"method": "n"}) is None
    assert request_id([{"id": 1}]) is None
