"""The header rule at `/mcp`: a 2026-07-28 request whose headers disagree with its body is
refused before the upstream sees it; older requests pass as they are."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream

NEW = "2026-07-28"
CALL = {"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {"name": "delete_all"}}


def mirrored(version: str = NEW, **headers: str) -> dict[str, str]:
    return {"MCP-Protocol-Version": version, "Content-Type": "application/json", **headers}


async def test_a_mismatch_never_reaches_the_upstream(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    reply = await oauthd.mcp(
        "POST",
        granted,
        headers=mirrored(**{"Mcp-Method": "tools/call", "Mcp-Name": "read_file"}),
        data=orjson.dumps(CALL),
    )
    assert reply.status == 400
    error = reply.json()
    assert error["id"] == 41
    assert error["error"]["code"] == -32020
    assert "'read_file' does not match body value 'delete_all'" in error["error"]["message"]
    assert upstream.requests == []


async def test_missing_headers_are_a_mismatch(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted, headers=mirrored(), data=orjson.dumps(CALL))
    assert (reply.status, reply.json()["error"]["code"]) == (400, -32020)
    assert upstream.requests == []


async def test_agreeing_headers_pass_with_the_body_unchanged(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    body = orjson.dumps(CALL)
    headers = mirrored(**{"Mcp-Method": "tools/call", "Mcp-Name": "delete_all"})
    reply = await oauthd.mcp("POST", granted, headers=headers, data=body)
    assert reply.status == 200
    (seen,) = upstream.requests
    assert seen.body == body
    assert seen.headers["Mcp-Name"] == "delete_all"


async def test_a_large_chunked_body_is_read_whole_and_limited(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(upstream={"max_request_bytes": 300_000})
    granted = await oauthd.grant()
    headers = mirrored(**{"Mcp-Method": "tools/call", "Mcp-Name": "delete_all"})
    big = {**CALL, "params": {"name": "delete_all", "arguments": {"pad": "x" * 200_000}}}

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 50_000):
            yield data[start : start + 50_000]

    body = orjson.dumps(big)
    reply = await oauthd.mcp("POST", granted, headers=headers, data=chunks(body))
    assert reply.status == 200
    assert upstream.requests[-1].body == body
    too_big = orjson.dumps(
        {**big, "params": {**big["params"], "arguments": {"pad": "x" * 400_000}}}
    )
    reply = await oauthd.mcp("POST", granted, headers=headers, data=chunks(too_big))
    assert reply.status == 413
    assert len(upstream.requests) == 1


async def test_a_body_that_is_not_json_is_refused(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    reply = await oauthd.mcp(
        "POST", granted, headers=mirrored(**{"Mcp-Method": "ping"}), data=b'{"jsonrpc": '
    )
    assert (reply.status, reply.json()["error"]["code"]) == (400, -32700)
    assert upstream.requests == []


async def test_older_versions_are_decided_on_the_body_alone(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    for version in ("2025-11-25", "2025-06-18"):
        headers = mirrored(version, **{"Mcp-Method": "tools/list", "Mcp-Name": "x"})
        reply = await oauthd.mcp("POST", granted, headers=headers, data=orjson.dumps(CALL))
        assert reply.status == 200
    batch = orjson.dumps([CALL, {**CALL, "id": 42}])
    reply = await oauthd.mcp("POST", granted, headers=mirrored("2025-03-26"), data=batch)
    assert reply.status == 200
    assert len(upstream.requests) == 3


async def test_a_batch_is_not_one_2026_request(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    batch = orjson.dumps([CALL])
    headers = mirrored(**{"Mcp-Method": "tools/call", "Mcp-Name": "delete_all"})
    reply = await oauthd.mcp("POST", granted, headers=headers, data=batch)
    assert (reply.status, reply.json()["error"]["code"]) == (400, -32020)
    assert upstream.requests == []


async def test_gets_and_unauthenticated_requests_are_not_read(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    reply = await oauthd.mcp("POST", headers=mirrored(), data=b"not json")
    assert reply.status == 401  # the bearer first: a stranger learns nothing of the rule
    granted = await oauthd.grant()
    reply = await oauthd.mcp("GET", granted, headers=mirrored())
    assert reply.status == 200
    assert [seen.method for seen in upstream.requests] == ["GET"]
