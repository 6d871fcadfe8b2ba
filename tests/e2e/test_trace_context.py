"""One trace from a client through oauthd to a real MCP server: the client's `traceparent`
(a header, or `params._meta.traceparent`) is the parent of oauthd's spans (the SDK's
in-memory exporter), and the upstream, the demo server of examples/ (the official `mcp`
SDK), receives that trace id with the hop's span id (its `trace_context` tool says what
arrived)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from oauthd.tracing import Tracing
from tests.support.configs import make_config, resource, rule
from tests.support.ports import free_port
from tests.support.proxy_app import Granted, Oauthd
from tests.support.upstream import DemoUpstream

pytestmark = pytest.mark.timeout(30)

ACCEPT = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoUpstream]:
    upstream = DemoUpstream(tmp_path / "demo.log", stateless=True)
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def start(tmp_path: Path, exporter: InMemorySpanExporter, **keys: Any) -> Oauthd:
    config = make_config(tmp_path, free_port(), **keys)
    running = Oauthd(config, tracing=Tracing(SimpleSpanProcessor(exporter)))
    await running.start()
    return running


@pytest.fixture
async def oauthd(
    tmp_path: Path, demo: DemoUpstream, exporter: InMemorySpanExporter
) -> AsyncIterator[Oauthd]:
    running = await start(tmp_path, exporter, upstream_url=demo.url)
    yield running
    await running.close()


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def call(name: str, meta: dict[str, str] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": {}}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}


async def arrived(oauthd: Oauthd, granted: Granted, **kwargs: Any) -> dict[str, str]:
    """What the demo's `trace_context` tool says arrived upstream."""
    answer = await oauthd.mcp("POST", granted, **kwargs)
    assert answer.status == 200, answer.text
    text = answer.text
    if text.startswith(("event:", "data:", "id:")):  # SSE: the one message's data line
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    result = json.loads(text)["result"]
    assert not result.get("isError"), result
    found: dict[str, str] = result["structuredContent"]
    return found


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


async def test_one_trace_from_the_client_through_oauthd_to_the_upstream(
    oauthd: Oauthd, exporter: InMemorySpanExporter
) -> None:
    granted = await oauthd.grant()
    exporter.clear()
    header, trace_id, client_span = traceparent()
    headers = {**ACCEPT, "traceparent": header, "tracestate": "vendor=1"}
    seen = await arrived(oauthd, granted, json=call("trace_context"), headers=headers)

    spans = exporter.get_finished_spans()
    assert spans and {hex_ids(s)[0] for s in spans} == {trace_id}  # one trace, the client's
    by_name = {s.name: s for s in spans}
    server = by_name["POST /mcp"]
    assert server.kind is SpanKind.SERVER and parent_id(server) == client_span
    assert server.attributes is not None
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/mcp"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["server.address"] == "127.0.0.1"
    hop = next(s for s in spans if s.kind is SpanKind.CLIENT and s.name == "POST")
    assert parent_id(hop) == hex_ids(server)[1]
    assert hop.attributes is not None and hop.attributes["http.response.status_code"] == 200
    assert hop.attributes["url.full"] == oauthd.config.upstream.url
    assert any(s.name == "get grants" and parent_id(s) == hex_ids(server)[1] for s in spans)

    # the upstream got the client's trace, as the child of oauthd's hop
    assert seen["traceparent"] == f"00-{trace_id}-{hex_ids(hop)[1]}-01"
    assert seen["tracestate"] == "vendor=1"
    # never a token: not in any attribute of any span
    values = [str(v) for s in spans for v in (s.attributes or {}).values()]
    assert not any(granted.access in v or granted.access.partition(".")[2] in v for v in values)


async def test_the_trace_context_in_params_meta_of_a_parsed_message(
    tmp_path: Path, demo: DemoUpstream, exporter: InMemorySpanExporter
) -> None:
    """A resource with rules parses every POST: the message's own trace context (the MCP
    convention) parents a span of the message, and the upstream gets that trace."""
    mounted = resource("/mcp", demo.url, rules=[rule("all", method="tools/call")])
    oauthd = await start(tmp_path, exporter, resources=[mounted])
    try:
        granted = await oauthd.grant()
        exporter.clear()
        meta, trace_id, client_span = traceparent()
        body = call("trace_context", {"traceparent": meta})
        seen = await arrived(oauthd, granted, json=body, headers=ACCEPT)
    finally:
        await oauthd.close()

    spans = exporter.get_finished_spans()
    message = next(s for s in spans if s.name == "tools/call trace_context")
    assert message.kind is SpanKind.SERVER
    assert hex_ids(message)[0] == trace_id and parent_id(message) == client_span
    assert message.attributes is not None
    assert message.attributes["mcp.method.name"] == "tools/call"
    assert message.attributes["gen_ai.tool.name"] == "trace_context"
    assert message.attributes["gen_ai.operation.name"] == "execute_tool"
    assert message.attributes["jsonrpc.request.id"] == "7"
    assert message.attributes["mcp.protocol.version"] == "2025-11-25"
    assert "arguments" not in json.dumps(dict(message.attributes))
    server = next(s for s in spans if s.name == "POST /mcp")
    assert [link.context.span_id for link in message.links] == [
        server.get_span_context().span_id  # type: ignore[union-attr]
    ]
    assert server.attributes is not None and server.attributes["mcp.method.name"] == "tools/call"
    hop = next(s for s in spans if s.kind is SpanKind.CLIENT and s.name == "POST")
    assert hex_ids(hop)[0] == trace_id and parent_id(hop) == hex_ids(message)[1]
    assert seen["traceparent"] == f"00-{trace_id}-{hex_ids(hop)[1]}-01"


async def test_a_token_grant_and_the_store_calls_are_spans_of_the_request(
    oauthd: Oauthd, exporter: InMemorySpanExporter
) -> None:
    granted = await oauthd.grant()
    exporter.clear()
    header, trace_id, _ = traceparent()
    form = {"grant_type": "refresh_token", "refresh_token": granted.refresh}
    form["client_id"] = granted.client_id
    answer = await oauthd.call("POST", "/token", data=form, headers={"traceparent": header})
    assert answer.status == 200, answer.text
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server, grant = spans["POST /token"], spans["token refresh_token"]
    assert {hex_ids(server)[0], hex_ids(grant)[0]} == {trace_id}
    assert parent_id(grant) == hex_ids(server)[1]
    update = spans["update grants"]
    assert parent_id(update) == hex_ids(grant)[1]
    assert update.attributes is not None
    assert update.attributes["db.operation.name"] == "update"
    assert update.attributes["db.collection.name"] == "grants"
    assert update.attributes["db.system.name"] == "oauthd.file"
    # a refused grant: its error code, never its description
    form["refresh_token"] = "unknown.token"
    answer = await oauthd.call("POST", "/token", data=form, headers={"traceparent": header})
    assert answer.status == 400
    refused = [s for s in exporter.get_finished_spans() if s.name == "token refresh_token"][-1]
    assert refused.attributes is not None and refused.attributes["error.type"] == "invalid_grant"
    assert not refused.events  # no exception recorded
