"""Listings filtered by policy: `tools/list`, `resources/list` and `prompts/list` answers
(JSON and SSE) lose what the caller may never call, keep what a step-up unlocks, and say
`cacheScope: "private"` on 2026-07-28; the SSE filter alone, over awkward chunkings."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
from aiohttp import web

from oauthd.policy import Caller, Policy, Rule
from oauthd.proxy.listings import ListingFilter
from oauthd.proxy.policing import Listed
from tests.support.configs import OTHER_USER, resource, rule
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream, Seen, sse_event, start_sse

SCOPES = ("mcp", "files:write")
RULES = (
    rule("deploy-ops", method="tools/call", name=("deploy",), users=("alice",)),
    rule("writes", method="tools/call", name=("write_*",), require_scopes=("files:write",)),
    rule("hidden", method="tools/call", name=("hidden_*",), effect="deny"),
    rule("secrets", method="resources/read", name=("secret://*",), effect="deny"),
    rule("prompts", method="prompts/get", name=("internal",), effect="deny"),
)
TOOLS = [{"name": n} for n in ("deploy", "write_file", "hidden_tool", "read_file")]
NEW = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}


def listing(method: str, rid: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method}


def result_of(method: str, rid: int = 1) -> dict[str, Any]:
    results = {
        "tools/list": {"tools": TOOLS, "ttlMs": 1000, "cacheScope": "public"},
        "resources/list": {"resources": [{"uri": "secret://a"}, {"uri": "file://b"}]},
        "prompts/list": {"prompts": [{"name": "internal"}, {"name": "hello"}]},
    }
    return {"jsonrpc": "2.0", "id": rid, "result": results[method]}


async def json_answer(request: web.Request, seen: Seen) -> web.StreamResponse:
    body = orjson.loads(seen.body or b"null")
    if isinstance(body, list):
        return web.json_response([result_of(m["method"], m["id"]) for m in body])
    return web.json_response(result_of(body["method"], body["id"]))


async def sse_answer(request: web.Request, seen: Seen) -> web.StreamResponse:
    """A notification first, then the answer split in the middle of its event."""
    body = orjson.loads(seen.body or b"null")
    response = await start_sse(request)
    await response.write(sse_event('{"jsonrpc":"2.0","method":"notifications/progress"}'))
    event = sse_event(orjson.dumps(result_of(body["method"], body["id"])).decode(), "e1")
    await response.write(event[:20])
    await response.write(event[20:] + sse_event('{"jsonrpc":"2.0","method":"after"}'))
    return response


@pytest.fixture
async def policed(start_oauthd: StartOauthd, upstream: FakeUpstream) -> Oauthd:
    return await start_oauthd(
        oauth={"scopes": SCOPES},
        resources=[resource("/mcp", upstream.url, scopes=SCOPES, rules=RULES)],
    )


def names(result: dict[str, Any], key: str = "tools", name: str = "name") -> list[str]:
    return [entry[name] for entry in result[key]]


async def test_a_json_listing_drops_what_the_caller_may_never_call(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    upstream.answer = json_answer
    bob = await policed.grant(user=OTHER_USER)
    answer = await policed.mcp("POST", bob, json=listing("tools/list"))
    assert answer.status == 200
    assert int(answer.headers["Content-Length"]) == len(answer.body)
    result = answer.json()["result"]
    assert names(result) == ["write_file", "read_file"]  # a step-up unlocks write_file
    assert result["cacheScope"] == "public"  # an older client's answer is not marked
    assert upstream.requests[0].headers["Accept-Encoding"] == "identity"
    alice = await policed.grant()
    mine = (await policed.mcp("POST", alice, json=listing("tools/list"))).json()["result"]
    assert names(mine) == ["deploy", "write_file", "read_file"]


async def test_on_2026_07_28_a_filtered_listing_is_private(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    upstream.answer = json_answer
    granted = await policed.grant()
    answer = await policed.mcp("POST", granted, json=listing("tools/list"), headers=NEW)
    assert answer.json()["result"]["cacheScope"] == "private"
    assert answer.json()["result"]["ttlMs"] == 1000


async def test_resources_and_prompts_and_batches(policed: Oauthd, upstream: FakeUpstream) -> None:
    upstream.answer = json_answer
    granted = await policed.grant()
    batch = [listing("resources/list", 1), listing("prompts/list", 2), listing("tools/list", 3)]
    answer = await policed.mcp("POST", granted, json=batch)
    resources, prompts, tools = answer.json()
    assert names(resources["result"], "resources", "uri") == ["file://b"]
    assert names(prompts["result"], "prompts") == ["hello"]
    assert names(tools["result"]) == ["deploy", "write_file", "read_file"]


async def test_an_sse_listing_is_filtered_event_by_event(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    upstream.answer = sse_answer
    granted = await policed.grant(user=OTHER_USER)
    answer = await policed.mcp("POST", granted, json=listing("tools/list", 4), headers=NEW)
    assert answer.status == 200 and answer.headers["Content-Type"] == "text/event-stream"
    events = [e for e in answer.text.split("\n\n") if e]
    assert len(events) == 3 and "notifications/progress" in events[0] and "after" in events[2]
    lines = events[1].split("\n")
    assert lines[:2] == ["id: e1", "event: message"]
    data = orjson.loads(lines[2].removeprefix("data: "))
    assert data["id"] == 4 and names(data["result"]) == ["write_file", "read_file"]
    assert data["result"]["cacheScope"] == "private"


async def test_a_get_stream_replaying_a_listing_is_filtered_too(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    """A client that resumes a listing's stream (GET with Last-Event-ID) gets the upstream's
    replay: answers to requests this GET never made, filtered by their shape."""

    async def replay(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = await start_sse(request)
        for method in ("tools/list", "prompts/list"):
            await response.write(sse_event(orjson.dumps(result_of(method, 9)).decode(), "e2"))
        await response.write(sse_event('{"jsonrpc":"2.0","id":10,"result":{"content":[]}}'))
        return response

    upstream.answer = replay
    granted = await policed.grant(user=OTHER_USER)
    answer = await policed.mcp("GET", granted, headers={"Last-Event-ID": "e1"})
    assert answer.status == 200
    tools, prompts, other = (
        orjson.loads(e.split("data: ", 1)[1]) for e in answer.text.split("\n\n") if e
    )
    assert names(tools["result"]) == ["write_file", "read_file"]
    assert names(prompts["result"], "prompts") == ["hello"]
    assert other["result"] == {"content": []}


async def test_a_hidden_tool_called_by_name_is_still_denied(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await policed.grant()
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "hidden_tool"}}
    assert (await policed.mcp("POST", granted, json=call)).status == 403
    assert upstream.requests == []


async def test_a_resource_without_rules_streams_listings_untouched(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd()
    upstream.answer = json_answer
    granted = await oauthd.grant()
    answer = await oauthd.mcp("POST", granted, json=listing("tools/list"), headers=NEW)
    assert answer.json()["result"]["tools"] == TOOLS
    assert upstream.requests[0].headers.get("Accept-Encoding") != "identity"  # the client's


# -- the SSE filter alone ------------------------------------------------------------------


def sse_filter() -> ListingFilter:
    policy = Policy((Rule("hide", names=("hidden",), effect="deny"),))
    caller = Caller("alice", "app")
    return ListingFilter(Listed(policy, caller, frozenset(), {7: "tools/list"}, False))


STREAM = (
    b": comment\r\n\r\n"
    b'data: {"jsonrpc":"2.0","method":"notifications/message"}\r\n\r\n'
    b'id: 1\r\ndata: {"jsonrpc":"2.0","id":7,\r\ndata: "result":{"tools":'
    b'[{"name":"hidden"},{"name":"shown"}]}}\r\n\r\n'
    b"data: the rest passes as it is\n\n"
)


@pytest.mark.parametrize("size", [1, 3, 17, len(STREAM)])
def test_the_sse_filter_over_any_chunking(size: int) -> None:
    sse = sse_filter().sse()
    out = b"".join(sse.feed(STREAM[i : i + size]) for i in range(0, len(STREAM), size))
    out += sse.flush()
    events = out.replace(b"\r\n", b"\n").split(b"\n\n")
    assert events[0] == b": comment"
    assert b"notifications/message" in events[1]
    head, data = events[2].split(b"\n")
    assert head == b"id: 1"
    assert orjson.loads(data.removeprefix(b"data: "))["result"] == {"tools": [{"name": "shown"}]}
    assert events[3] == b"data: the rest passes as it is"


def test_an_unterminated_last_event_is_filtered_too() -> None:
    """A stream that ends without the blank line after its listing: a lenient client
    reads that event, so it is filtered like the others."""
    sse = sse_filter().sse()
    last = b'data: {"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"hidden"}]}}\n'
    out = sse.feed(last) + sse.flush()
    assert b"hidden" not in out
    assert orjson.loads(out.removeprefix(b"data: "))["result"] == {"tools": []}


def test_after_the_listing_the_stream_passes_unparsed() -> None:
    sse = sse_filter().sse()
    answer = b'data: {"jsonrpc":"2.0","id":7,"result":{"tools":[]}}\n\n'
    assert sse.feed(answer + b"data: {half") == answer + b"data: {half"
    assert sse.feed(b"not even json") == b"not even json"
    assert sse.flush() == b""


async def test_a_listing_the_upstream_compressed_anyway_is_not_passed(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    """The request asked for no compression; an answer that cannot be filtered is a 502,
    never the unfiltered listing."""

    async def gzipped(request: web.Request, seen: Seen) -> web.StreamResponse:
        body = gzip.compress(orjson.dumps(result_of("tools/list")))
        return web.Response(
            body=body, content_type="application/json", headers={"Content-Encoding": "gzip"}
        )

    upstream.answer = gzipped
    granted = await policed.grant(user=OTHER_USER)
    answer = await policed.mcp("POST", granted, json=listing("tools/list"))
    assert answer.status == 502 and b"hidden_tool" not in answer.body


async def test_an_sse_listing_of_known_length_is_sent_with_its_new_one(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    async def whole(request: web.Request, seen: Seen) -> web.StreamResponse:
        event = sse_event(orjson.dumps(result_of("tools/list")).decode())
        return web.Response(body=event, content_type="text/event-stream")  # a Content-Length

    upstream.answer = whole
    granted = await policed.grant(user=OTHER_USER)
    answer = await policed.mcp("POST", granted, json=listing("tools/list"))
    data = orjson.loads(answer.text.split("data: ", 1)[1])
    assert names(data["result"]) == ["write_file", "read_file"]
    assert "Content-Length" not in answer.headers or int(answer.headers["Content-Length"]) == len(
        answer.body
    )
