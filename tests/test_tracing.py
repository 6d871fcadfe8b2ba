"""oauthd/tracing.py: `[tracing]` and the extra it needs, the MCP attributes of a message,
the hop's spans and the `traceparent` it sends, sampling."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
from multidict import CIMultiDict
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from oauthd.config import ConfigError, TracingConfig, load_config
from oauthd.tracing import (
    HopTarget,
    Tracing,
    mcp_attributes,
    meta_carrier,
    missing_extra,
    start_tracing,
)

TARGET = HopTarget("http://127.0.0.1:9000/mcp", "127.0.0.1", 9000)
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = int("4bf92f3577b34da6a3ce929d0e0e4736", 16)


def on(exporter: str = "otlp", enabled: bool = True) -> TracingConfig:
    return TracingConfig(enabled, exporter, "", "oauthd", 1.0)


def load(tmp_path: Path, text: str) -> TracingConfig:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).tracing


def test_the_section_and_its_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == TracingConfig(False, "otlp", "", "oauthd", 1.0)
    text = (
        '[tracing]\nenabled = true\nexporter = "console"\n'
        'endpoint = "http://collector:4318/v1/traces"\nservice_name = "edge"\nsample_ratio = 0\n'
    )
    assert load(tmp_path, text) == TracingConfig(
        True, "console", "http://collector:4318/v1/traces", "edge", 0.0
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("sample_ratio = 1.5", "tracing.sample_ratio: expected a number from 0 to 1, got 1.5"),
        ("sample_ratio = true", "tracing.sample_ratio: expected a number from 0 to 1, got true"),
        ('exporter = "jaeger"', "tracing.exporter"),
        ('endpoint = "collector:4318"', "tracing.endpoint"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[tracing]\n{line}\n")
    assert message in str(info.value)


def test_the_extra_is_needed_only_when_on(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_otel(name: str, package: str | None = None) -> ModuleType:
        if name.startswith("opentelemetry"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_otel)
    assert missing_extra(on(enabled=False)) is None
    for exporter in ("otlp", "console"):
        assert missing_extra(on(exporter)) == (
            "tracing.enabled = true needs the otel extra: pip install 'oauthd[otel]'"
        )
    monkeypatch.undo()
    assert missing_extra(on()) is None  # installed here (dev)


def test_off_is_none_and_on_builds_the_exporter() -> None:
    assert start_tracing(on(enabled=False)) is None
    for exporter in ("console", "otlp"):
        tracing = start_tracing(on(exporter))
        assert tracing is not None
        tracing.shutdown()


def test_mcp_attributes_name_the_message_never_its_arguments() -> None:
    headers = {"Mcp-Session-Id": "s-1", "MCP-Protocol-Version": "2025-11-25"}
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "delete_file", "arguments": {"path": "/secret"}},
    }
    assert mcp_attributes(call, headers) == {
        "mcp.session.id": "s-1",
        "mcp.protocol.version": "2025-11-25",
        "mcp.method.name": "tools/call",
        "jsonrpc.request.id": "3",
        "gen_ai.tool.name": "delete_file",
        "gen_ai.operation.name": "execute_tool",
    }
    prompt = {"id": "a", "method": "prompts/get", "params": {"name": "greet"}}
    assert mcp_attributes(prompt, {})["gen_ai.prompt.name"] == "greet"
    read = {"id": 1, "method": "resources/read", "params": {"uri": "file:///x"}}
    assert mcp_attributes(read, {})["mcp.resource.uri"] == "file:///x"
    assert mcp_attributes([call], {}) == {}  # a batch names no one message
    assert mcp_attributes({"id": True, "method": 5}, {}) == {}
    assert len(str(mcp_attributes({"method": "x" * 1000}, {})["mcp.method.name"])) == 256


def test_meta_carrier() -> None:
    meta = {"traceparent": PARENT, "tracestate": "a=1", "progressToken": 1}
    assert meta_carrier({"params": {"_meta": meta}}) == {"traceparent": PARENT, "tracestate": "a=1"}
    assert meta_carrier({"params": {"_meta": {"traceparent": 1}}}) is None
    assert meta_carrier({"params": {}}) is None
    assert meta_carrier(None) is None


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def test_the_hop_replaces_the_clients_trace_context(exporter: InMemorySpanExporter) -> None:
    tracing = Tracing(SimpleSpanProcessor(exporter))
    headers = CIMultiDict({"TraceParent": PARENT, "tracestate": "client=1"})
    with tracing.server_span("POST /mcp", headers, {}):
        hop = tracing.hop("POST", TARGET, headers)
        hop.answered(503)
    client, server = exporter.get_finished_spans()
    context = client.get_span_context()
    assert context is not None and context.trace_id == TRACE_ID
    assert headers.getall("traceparent") == [f"00-{TRACE_ID:032x}-{context.span_id:016x}-01"]
    assert headers.getall("tracestate") == ["client=1"]  # the trace's own, carried on
    assert client.kind is SpanKind.CLIENT and client.status.status_code is StatusCode.ERROR
    assert client.attributes is not None and client.attributes["error.type"] == "503"
    assert client.attributes["server.port"] == 9000
    assert server.kind is SpanKind.SERVER


def test_a_failed_hop_and_a_malformed_traceparent(exporter: InMemorySpanExporter) -> None:
    tracing = Tracing(SimpleSpanProcessor(exporter))
    headers: dict[str, str] = {}
    with tracing.server_span("POST /mcp", {"traceparent": "00-zz-bad"}, {}):
        tracing.hop("POST", TARGET, headers).failed("504")
    client, server = exporter.get_finished_spans()
    assert server.parent is None  # a malformed traceparent starts a new trace
    assert client.attributes is not None and client.attributes["error.type"] == "504"
    assert headers["traceparent"].split("-")[1] == f"{server.context.trace_id:032x}"


def test_unsampled_traces_still_carry_the_trace_id(exporter: InMemorySpanExporter) -> None:
    """`sample_ratio = 0` keeps none of oauthd's own traces, yet a caller's trace id still
    reaches the upstream (with its sampled flag), and a sampled caller's trace is kept."""
    tracing = Tracing(SimpleSpanProcessor(exporter), sample_ratio=0.0)
    unsampled = PARENT[:-2] + "00"
    headers: dict[str, str] = {}
    with tracing.server_span("POST /mcp", {"traceparent": unsampled}, {}):
        tracing.hop("POST", TARGET, headers).answered(200)
    assert exporter.get_finished_spans() == ()
    assert headers["traceparent"].startswith(f"00-{TRACE_ID:032x}-")
    assert headers["traceparent"].endswith("-00")
    with tracing.server_span("POST /mcp", {"traceparent": PARENT}, {}):
        pass
    assert len(exporter.get_finished_spans()) == 1
