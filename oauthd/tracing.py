"""OpenTelemetry tracing (`[tracing]`, the optional `otel` extra).

One `Tracing` per app when `tracing.enabled`, None otherwise: every place that traces holds
a `Tracing | None` and does nothing more when it is None, so that tracing off costs one
comparison where it would start a span. opentelemetry is imported only here, and only once
tracing is on (`missing_extra` tells `serve` and `check-config` when it cannot be).

The spans (docs/tracing.md): one server span per HTTP request, `METHOD route`, whose parent
is the request's W3C `traceparent` (`oauthd/http/tracing.py`); a token grant's
(`token <grant type>`); every call of a store table (`oauthd/store/traced.py`); and the hop
to an MCP upstream, a client span whose context goes upstream as its `traceparent`
(`Hop`, `oauthd/proxy/relay.py`). An MCP message the proxy parsed names itself on the
request's span with the MCP and GenAI semantic-convention attributes; one that carries its
own trace context in `params._meta.traceparent` (the MCP convention) gets a server span of
its own under that context, `{mcp.method.name} {tool or prompt}`, linked to the HTTP span,
and the hop is its child. Never a token, a secret, a code or a tool's arguments.

No aiohttp here, and no import of a room.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oauthd import __version__
from oauthd.config import TracingConfig

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span, SpanKind, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.util.types import AttributeValue

Attributes = dict[str, "AttributeValue"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SESSION_HEADER = "Mcp-Session-Id"
PROTOCOL_VERSION_HEADER = "MCP-Protocol-Version"
MAX_VALUE = 256  # longest attribute value taken from a request (names, ids, URIs)
INSTALL = "pip install 'oauthd[otel]'"
# What each exporter needs of the extra.
EXTRA_MODULES = {
    "console": ("opentelemetry.sdk.trace",),
    "otlp": ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
}


def missing_extra(config: TracingConfig) -> str | None:
    """The one line naming the key and the install command when tracing is on and the
    `otel` extra's modules do not import (None when they do, or when tracing is off)."""
    if not config.enabled:
        return None
    for module in EXTRA_MODULES[config.exporter]:
        try:
            importlib.import_module(module)
        except ImportError:
            return f"tracing.enabled = true needs the otel extra: {INSTALL}"
    return None


def start_tracing(config: TracingConfig) -> Tracing | None:
    """The app's `Tracing` (None when `tracing.enabled` is false), exporting in batches
    from a thread of the SDK's, never from the event loop."""
    if not config.enabled:
        return None
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if config.exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.endpoint or None)
    return Tracing(
        BatchSpanProcessor(exporter),
        service_name=config.service_name,
        sample_ratio=config.sample_ratio,
    )


class Tracing:
    """The tracer of one app, on a provider of its own (never the global one, so that a
    test can build many apps), sampling `sample_ratio` of the traces it starts and
    following the sampling decision of a caller's `traceparent`."""

    def __init__(
        self, processor: SpanProcessor, *, service_name: str = "oauthd", sample_ratio: float = 1.0
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider: TracerProvider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        self._provider.add_span_processor(processor)
        self.tracer: Tracer = self._provider.get_tracer("oauthd", __version__)
        self._propagator: TraceContextTextMapPropagator = TraceContextTextMapPropagator()

    def shutdown(self) -> None:
        """Export what is pending and stop (blocking: run it in a thread)."""
        self._provider.shutdown()

    def extract(self, carrier: Mapping[str, str]) -> Context:
        """The W3C trace context of `carrier` (headers, or an MCP `_meta`); an empty
        context when it has none or a malformed one (a new trace then)."""
        return self._propagator.extract(carrier)

    def server_span(
        self, name: str, carrier: Mapping[str, str], attributes: Attributes
    ) -> contextlib.AbstractContextManager[Span]:
        """A request's server span, the current span while the block runs."""
        from opentelemetry.trace import SpanKind

        return self._current(name, self.extract(carrier), SpanKind.SERVER, attributes)

    def span(self, name: str, attributes: Attributes) -> contextlib.AbstractContextManager[Span]:
        """An internal span under the current one (a token grant, a store call)."""
        from opentelemetry.trace import SpanKind

        return self._current(name, None, SpanKind.INTERNAL, attributes)

    def client_span(
        self, name: str, attributes: Attributes
    ) -> contextlib.AbstractContextManager[Span]:
        """A client span under the current one (a call of a shared store backend)."""
        from opentelemetry.trace import SpanKind

        return self._current(name, None, SpanKind.CLIENT, attributes)

    @contextlib.contextmanager
    def _current(
        self, name: str, parent: Context | None, kind: SpanKind, attributes: Attributes
    ) -> Iterator[Span]:
        """A span, current while the block runs. An exception is named in `error.type`
        (an `OAuthError` by its error code), never recorded: its message or traceback may
        hold what a trace must not."""
        from opentelemetry.trace import StatusCode

        with self.tracer.start_as_current_span(
            name,
            parent,
            kind,
            attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                code = getattr(exc, "error", None)
                span.set_attribute(
                    "error.type", code if isinstance(code, str) else type(exc).__name__
                )
                span.set_status(StatusCode.ERROR)
                raise

    def hop(
        self,
        method: str,
        target: HopTarget,
        headers: MutableMapping[str, str],
        message: object = None,
        incoming: Mapping[str, str] | None = None,
    ) -> Hop:
        """The hop of a relayed request to its upstream: the MCP message named on the
        request's span (and a server span of its own under `params._meta.traceparent`),
        then a client span whose context replaces `traceparent` (and `tracestate`) in
        `headers`. `incoming`: the client's headers (MCP session, protocol version)."""
        from opentelemetry import trace

        described = mcp_attributes(message, incoming or {})
        current = trace.get_current_span()
        if described:
            current.set_attributes(described)
        parent, own = None, None
        meta = meta_carrier(message)
        if meta is not None:
            remote = self.extract(meta)
            if trace.get_current_span(remote).get_span_context().is_valid:
                own = self._message_span(remote, current, described)
                parent = trace.set_span_in_context(own)
        client = self.tracer.start_span(
            method,
            parent,
            trace.SpanKind.CLIENT,
            {
                "http.request.method": method,
                "server.address": target.host,
                "server.port": target.port,
                "url.full": target.url,
                **{k: v for k, v in described.items() if k.startswith("mcp.method")},
            },
        )
        headers.pop(TRACESTATE, None)  # the client's, unless the hop's context has one
        self._propagator.inject(headers, trace.set_span_in_context(client, parent))
        return Hop(client, own)

    def _message_span(self, remote: Context, http: Span, described: Attributes) -> Span:
        from opentelemetry.trace import Link, SpanKind

        method = str(described.get("mcp.method.name", "mcp"))
        target = described.get("gen_ai.tool.name") or described.get("gen_ai.prompt.name")
        links = [Link(http.get_span_context())] if http.get_span_context().is_valid else None
        return self.tracer.start_span(
            f"{method} {target}" if target else method,
            remote,
            SpanKind.SERVER,
            {**described, "network.transport": "tcp", "network.protocol.name": "http"},
            links,
        )


@dataclass(slots=True, frozen=True)
class HopTarget:
    """Where a relay sends its requests (its upstream URL, without a client's query)."""

    url: str
    host: str
    port: int


@dataclass(slots=True)
class Hop:
    """The spans of one hop upstream, ended by `answered` or `failed`."""

    client: Span
    message: Span | None = None

    def answered(self, status: int) -> None:
        self.client.set_attribute("http.response.status_code", status)
        self._end(str(status) if status >= 400 else None)

    def failed(self, error: str) -> None:
        """No answer from the upstream: `error` is the status oauthd answers itself
        ("502", "504", "413"), or "cancelled" (the client went away)."""
        self._end(error)

    def _end(self, error: str | None) -> None:
        from opentelemetry.trace import StatusCode

        for span in (self.client, self.message):
            if span is None:
                continue
            if error is not None:
                span.set_attribute("error.type", error)
                if span is self.client:
                    span.set_status(StatusCode.ERROR)
            span.end()


def finish_http(span: Span, status: int) -> None:
    """The answer's status on a server span; a 5xx is an error (semantic conventions:
    a 4xx is the client's, not the server's)."""
    from opentelemetry.trace import StatusCode

    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(StatusCode.ERROR)


def mcp_attributes(message: object, headers: Mapping[str, str]) -> Attributes:
    """The MCP and GenAI semantic-convention attributes of a JSON-RPC message (a dict; a
    batch names nothing) and of its request's MCP headers. Names only: no arguments."""
    found: Attributes = {}
    if (session := headers.get(SESSION_HEADER)) is not None:
        found["mcp.session.id"] = session[:MAX_VALUE]
    if (version := headers.get(PROTOCOL_VERSION_HEADER)) is not None:
        found["mcp.protocol.version"] = version[:MAX_VALUE]
    if not isinstance(message, dict):
        return found
    method = message.get("method")
    if isinstance(method, str):
        found["mcp.method.name"] = method[:MAX_VALUE]
    request_id = message.get("id")
    if isinstance(request_id, str | int) and not isinstance(request_id, bool):
        found["jsonrpc.request.id"] = str(request_id)[:MAX_VALUE]
    params = message.get("params")
    if isinstance(params, dict):
        found.update(_target(method, params))
    return found


def _target(method: object, params: dict[str, Any]) -> Attributes:
    name, uri = params.get("name"), params.get("uri")
    if method == "tools/call" and isinstance(name, str):
        return {"gen_ai.tool.name": name[:MAX_VALUE], "gen_ai.operation.name": "execute_tool"}
    if method == "prompts/get" and isinstance(name, str):
        return {"gen_ai.prompt.name": name[:MAX_VALUE]}
    if method == "resources/read" and isinstance(uri, str):
        return {"mcp.resource.uri": uri[:MAX_VALUE]}
    return {}


def meta_carrier(message: object) -> dict[str, str] | None:
    """`params._meta`'s `traceparent` (and `tracestate`) of a JSON-RPC message, if any."""
    if not isinstance(message, dict):
        return None
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get(TRACEPARENT), str):
        return None
    carrier = {TRACEPARENT: meta[TRACEPARENT]}
    if isinstance(meta.get(TRACESTATE), str):
        carrier[TRACESTATE] = meta[TRACESTATE]
    return carrier
