"""oauthd/http/tracing.py: one server span per request, `METHOD route`, under the request's
`traceparent`; aiohttp's own answers (404, 405, redirects) are no errors of the span, a
handler's exception is (named, never recorded); no middleware at all with tracing off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from oauthd.http.tracing import tracing_middleware
from oauthd.tracing import Tracing
from tests.support.app import Running
from tests.support.configs import make_config
from tests.support.ports import free_port

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(tmp_path: Path, exporter: InMemorySpanExporter) -> AsyncIterator[Running]:
    running = Running(
        make_config(tmp_path, free_port()), tracing=Tracing(SimpleSpanProcessor(exporter))
    )
    await running.start()
    yield running
    await running.close()


async def test_each_request_is_a_server_span_named_by_its_route(
    traced: Running, exporter: InMemorySpanExporter
) -> None:
    answer = await traced.client.call("GET", "/healthz?secret=1", headers={"traceparent": PARENT})
    assert answer.status == 200
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert span.name == "GET /healthz"
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT.split("-")[2]
    assert dict(span.attributes or {}) == {
        "url.scheme": "http",
        "server.address": "127.0.0.1",
        "server.port": traced.config.server.listen.port,
        "http.request.method": "GET",
        "http.route": "/healthz",
        "url.path": "/healthz",
        "http.response.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_aiohttps_own_answers_are_no_errors(
    traced: Running, exporter: InMemorySpanExporter
) -> None:
    assert (
        await traced.client.call("GET", "/nowhere", headers={"Accept": "application/json"})
    ).status == 404
    assert (await traced.client.call("DELETE", "/token")).status == 405
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [s.attributes["http.response.status_code"] for s in spans if s.attributes] == [404, 405]
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    assert spans[0].parent is None  # no traceparent: a trace of its own
    routes = {s.attributes["http.route"] for s in spans if s.attributes}
    assert "/nowhere" not in routes  # the catch-all's pattern, not the path asked for


async def test_an_exception_is_an_error_named_not_recorded(exporter: InMemorySpanExporter) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a secret in the message")

    app = web.Application(
        middlewares=[tracing_middleware(Tracing(SimpleSpanProcessor(exporter)), "https://a.test")]
    )
    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/broken")).status == 500
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "RuntimeError"
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["server.port"] == 443
    assert not span.events and "secret" not in str(span.status.description)


async def test_no_middleware_with_tracing_off(tmp_path: Path) -> None:
    running = Running(make_config(tmp_path, free_port()))
    await running.start()
    try:
        assert list(running.app.middlewares) == []
    finally:
        await running.close()
