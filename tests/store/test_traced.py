"""oauthd/store/traced.py: each table call a span (named, attributed, under the current
span), the store's own code unaffected (a file store's snapshot, the tables' own
attributes)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from oauthd.clock import FakeClock
from oauthd.store import FileStore, MemoryStore
from oauthd.store.file import make_engine
from oauthd.store.traced import TracedTable, trace_tables
from oauthd.tracing import Tracing
from tests.support.records import make_client


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def test_every_table_call_is_a_span(exporter: InMemorySpanExporter) -> None:
    store = MemoryStore(FakeClock(time.time()))
    tracing = Tracing(SimpleSpanProcessor(exporter))
    trace_tables(store, tracing, "memory")
    trace_tables(store, tracing, "memory")  # once only
    assert all(isinstance(t, TracedTable) for t in store.tables())
    assert not isinstance(store.clients.inner, TracedTable)  # type: ignore[attr-defined]
    record = make_client()
    key = record.key
    with tracing.span("request", {}):
        await store.clients.add(record)
        assert await store.clients.get(key) == record
        await store.clients.update(key, lambda c: c)
        assert [c async for c in store.clients.scan()] == [record]
        assert await store.clients.count() == 1
        assert await store.clients.delete(key)
        assert await store.clients.take(key) is None
    *calls, request = exporter.get_finished_spans()
    names = ["add", "get", "update", "count", "delete", "take"]
    assert [s.name for s in calls] == [f"{n} clients" for n in names]
    for span, name in zip(calls, names, strict=True):
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        assert span.kind is SpanKind.INTERNAL
        assert dict(span.attributes or {}) == {
            "db.system.name": "oauthd.memory",
            "db.operation.name": name,
            "db.collection.name": "clients",
        }


async def test_shared_backends_are_client_spans(exporter: InMemorySpanExporter) -> None:
    store = MemoryStore(FakeClock(time.time()))
    trace_tables(store, Tracing(SimpleSpanProcessor(exporter)), "postgres")
    await store.grants.get("nothing")
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.CLIENT and span.attributes is not None
    assert span.attributes["db.system.name"] == "postgresql"


async def test_a_traced_file_store_saves_and_loads(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    clock = FakeClock(time.time())

    async def opened() -> FileStore:
        engine = make_engine(tmp_path, journaled=True, interval=60, debounce=60, max_wait=60)
        return await FileStore.open(engine, clock, accept_empty=True)

    store = await opened()
    trace_tables(store, Tracing(SimpleSpanProcessor(exporter)), "file")
    record = make_client()
    await store.clients.add(record)
    assert await store.engine.save()  # the snapshot reaches the tables' records through the wrapper
    await store.close()
    again = await opened()
    try:
        assert await again.clients.get(record.key) == record
    finally:
        await again.close()
