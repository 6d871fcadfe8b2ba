"""Call records (`[audit] calls`): a tools/call's decision is durable before the upstream
sees the call, its outcome (upstream status, latency) is recorded after; a refused call is
recorded and never forwarded; no argument reaches a record. And the proxy's 401s carry
their reason (log, metric, record when the grant is known)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from aiohttp import web

from oauthd.audit import MemoryTrail, reasons, settle_pending
from oauthd.clock import FakeClock
from oauthd.http.keys import METRICS
from oauthd.policy import Call
from oauthd.proxy.call_audit import CallAudit, Decided, allowed_calls
from oauthd.store.audit_reader import FileAuditReader
from tests.support.proxy_app import Oauthd
from tests.support.records import make_grant
from tests.support.upstream import FakeUpstream, Seen, echo

CALL = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "add", "arguments": {"a": "s3cr3t-argument", "b": 2}},
}


@pytest.fixture
async def oauthd(start_oauthd: Any) -> Oauthd:
    """oauthd with `[audit] calls` on (off by default)."""
    started: Oauthd = await start_oauthd(audit={"calls": True})
    return started


async def all_lines(oauthd: Oauthd) -> list[bytes]:
    """Every audit record so far: the memory trail's, or read back from the state dir
    (the segments, then the journal) as `oauthd audit` reads them."""
    trail = oauthd.store.audit
    if isinstance(trail, MemoryTrail):
        return list(trail.lines)
    reader = FileAuditReader(oauthd.config.storage.path)
    try:
        return [line async for _, line in reader.lines(trail.chain.name)]
    finally:
        await reader.close()


async def records(oauthd: Oauthd, event: str) -> list[dict[str, Any]]:
    lines = (orjson.loads(line) for line in await all_lines(oauthd))
    return [r for r in lines if r["event"] == event]


async def test_the_decision_is_recorded_before_the_upstream_sees_the_call(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    on_arrival: list[list[dict[str, Any]]] = []

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        on_arrival.append(await records(oauthd, "call_decided"))
        return await echo(request, seen)

    upstream.answer = answer
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted, json=CALL)
    assert reply.status == 200, reply.text
    await settle_pending()
    ((decided,),) = on_arrival
    assert decided["method"] == "tools/call" and decided["target"] == "add"
    assert decided["decision"] == "allow" and decided["client_id"] == granted.client_id
    assert decided["resource"] == "/mcp" and decided["grant"] == granted.grant_id[:8]
    (completed,) = await records(oauthd, "call_completed")
    assert completed["call"] == decided["call"]
    assert completed["upstream_status"] == 200 and completed["latency_ms"] >= 0
    assert b"s3cr3t-argument" not in b"".join(await all_lines(oauthd))


async def test_without_call_records_nothing_is_recorded(
    start_oauthd: Any, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd()  # `[audit] calls` is off by default
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted, json=CALL)
    assert reply.status == 200
    assert await records(oauthd, "call_decided") == []


async def test_an_expired_token_is_refused_with_its_reason(
    oauthd: Oauthd, caplog: pytest.LogCaptureFixture
) -> None:
    granted = await oauthd.grant()
    oauthd.clock.advance(oauthd.config.tokens.access_ttl + 1)
    with caplog.at_level(logging.INFO, "oauthd.proxy"):
        reply = await oauthd.mcp("POST", granted, json=CALL)
    assert reply.status == 401
    await settle_pending()
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "proxy.refused"]
    assert line.reason == reasons.EXPIRED  # type: ignore[attr-defined]
    (refused,) = await records(oauthd, "refused")
    assert refused["reason"] == reasons.EXPIRED and refused["status"] == 401
    labels = {"endpoint": "/mcp", "error": "invalid_token", "reason": reasons.EXPIRED}
    count = oauthd.app[METRICS].registry.get_sample_value("oauthd_refusals_total", labels)
    assert count == 1


async def test_an_unknown_token_is_logged_and_counted_but_not_recorded(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    reply = await oauthd.call("POST", "/mcp", headers={"Authorization": "Bearer nope.nope"})
    assert reply.status == 401
    await settle_pending()
    assert await records(oauthd, "refused") == []


async def test_a_refused_call_is_recorded_with_its_rule() -> None:
    trail = MemoryTrail(FakeClock(1000.0))
    grant = make_grant(user="alice")
    decided = [
        Decided(Call("tools/call", "drop"), "deny", "no-drop"),
        Decided(Call("tools/list"), "allow"),
    ]
    ids, durable = CallAudit(trail).decided(grant, "/mcp", decided, "req-1")
    assert ids == ["req-1.1"]  # a listing is no audited call
    assert durable is not None
    await durable
    (record,) = [orjson.loads(line) for line in trail.lines]
    assert record["reason"] == "policy_rule:no-drop" and record["rule"] == "no-drop"
    assert record["decision"] == "deny"


def test_allowed_calls_finds_the_audited_methods_of_a_batch() -> None:
    batch = [CALL, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, {"id": 3}]
    assert allowed_calls(batch) == [Decided(Call("tools/call", "add"), "allow")]
    assert allowed_calls(None) == []


async def test_a_body_that_does_not_parse_is_refused_not_forwarded_unrecorded(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    """orjson refuses NaN where the upstream's parser may take it: a call that could run
    without its record never leaves oauthd."""
    granted = await oauthd.grant()
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
        b'"params":{"name":"x","arguments":{"a":NaN}}}'
    )
    reply = await oauthd.mcp(
        "POST", granted, data=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 400 and reply.json()["error"]["code"] == -32700
    assert upstream.of_method("POST") == []
