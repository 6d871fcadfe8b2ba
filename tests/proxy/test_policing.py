"""The policy step of the gate: a resource's rules decide each JSON-RPC message before the
upstream sees it (every match form, each condition, the hierarchy, first match, batches),
and a refused call leaves the upstream's request counter unchanged."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from oauthd.config import LocalUser
from oauthd.http.keys import METRICS
from oauthd.users import Users
from tests.support.browser import Answer
from tests.support.configs import (
    OTHER_PASSWORD_HASH,
    OTHER_USER,
    PASSWORD_HASH,
    USER,
    resource,
    rule,
)
from tests.support.proxy_app import Granted, Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream

SCOPES = ("mcp", "files:read", "files:write")
RULES = (
    rule("deploy-ops", method="tools/call", name=("deploy",), groups=("ops",)),
    rule(
        "writes-need-write",
        method="tools/call",
        name=("write_*", "delete_*"),
        require_scopes=("files:write",),
    ),
    rule("reads-need-read", method="tools/call", name=("read_*",), require_scopes=("files:read",)),
    rule("diary-is-alices", name=("diary",), users=(USER,), message="only alice's"),
    rule("admin-client", method="tools/call", name=("admin_?",), clients=("trusted-app",)),
    rule("shadowed-first", method="tools/call", name=("shadow_ok",)),
    rule("shadows", method="tools/call", name=("shadow*",), effect="deny"),
    rule(
        "no-secrets",
        method="resources/*",
        name=("secret://*",),
        effect="deny",
        message="secrets stay secret",
    ),
)
USERS = (
    LocalUser(USER, PASSWORD_HASH, ("ops",)),
    LocalUser(OTHER_USER, OTHER_PASSWORD_HASH),
)


@pytest.fixture
async def policed(start_oauthd: StartOauthd, upstream: FakeUpstream) -> Oauthd:
    return await start_oauthd(
        users=USERS,
        oauth={"scopes": SCOPES, "scope_implies": (("files:write", ("files:read",)),)},
        resources=[resource("/mcp", upstream.url, scopes=SCOPES, rules=RULES)],
    )


def tool_call(name: str, rid: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name}}


async def call(oauthd: Oauthd, granted: Granted, body: Any) -> Answer:
    return await oauthd.mcp("POST", granted, json=body)


async def test_a_deny_rule_refuses_with_its_message_before_the_upstream(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await policed.grant()
    read = {"jsonrpc": "2.0", "id": 7, "method": "resources/read", "params": {"uri": "secret://x"}}
    answer = await call(policed, granted, read)
    assert answer.status == 403
    assert answer.json() == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32003, "message": "secrets stay secret"},
    }
    assert "WWW-Authenticate" not in answer.headers  # no token would help
    assert upstream.requests == []
    public = {"jsonrpc": "2.0", "id": 8, "method": "resources/read", "params": {"uri": "file://a"}}
    assert (await call(policed, granted, public)).status == 200
    assert len(upstream.requests) == 1


async def test_a_method_whose_body_policy_never_reads_is_405(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await policed.grant()
    for method in ("PUT", "PATCH"):
        answer = await policed.mcp(method, granted, json=tool_call("delete_all"))
        assert answer.status == 405 and answer.headers["Allow"] == "GET, POST, DELETE, OPTIONS"
    assert upstream.requests == []


async def test_match_forms_exact_glob_and_list(policed: Oauthd, upstream: FakeUpstream) -> None:
    reader = await policed.grant(scopes=("mcp", "files:read"))
    decided = {
        name: (await call(policed, reader, tool_call(name))).status
        for name in ("deploy", "write_file", "delete_all", "read_file", "anything_else")
    }
    assert decided == {
        "deploy": 200,  # exact; alice is in ops
        "write_file": 403,  # a glob of the list
        "delete_all": 403,  # the list's other glob
        "read_file": 200,
        "anything_else": 200,  # no rule: the resource's required scopes
    }
    assert len(upstream.requests) == 3


async def test_each_condition(policed: Oauthd, upstream: FakeUpstream) -> None:
    alice, bob = await policed.grant(), await policed.grant(user=OTHER_USER)
    assert (await call(policed, alice, tool_call("deploy"))).status == 200
    refused = await call(policed, bob, tool_call("deploy"))  # groups
    assert refused.status == 403 and refused.json()["error"]["code"] == -32003
    assert refused.json()["error"]["message"] == "this call is not allowed"
    diary = await call(policed, bob, tool_call("diary"))  # users, any method
    assert diary.json()["error"] == {"code": -32003, "message": "only alice's"}
    assert (await call(policed, alice, tool_call("diary"))).status == 200
    assert (await call(policed, alice, tool_call("admin_1"))).status == 403  # clients
    trusted = await policed.grant(client_id=await _client_named(policed, "trusted-app"))
    assert (await call(policed, trusted, tool_call("admin_1"))).status == 200
    assert len(upstream.requests) == 3


async def _client_named(oauthd: Oauthd, client_id: str) -> str:
    """A client registered under the id the `admin-client` rule names."""
    registered = await oauthd.auth.clients.find(await oauthd.register())
    assert registered is not None
    await oauthd.store.clients.put(dataclasses.replace(registered, client_id=client_id))
    return client_id


async def test_require_scopes_is_a_step_up_naming_every_scope_the_call_needs(
    policed: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await policed.grant()
    answer = await call(policed, granted, tool_call("write_file", 5))
    issuer = policed.config.server.issuer
    assert answer.status == 403
    assert answer.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="mcp files:write", '
        f'resource_metadata="{issuer}/.well-known/oauth-protected-resource/mcp"'
    )
    body = answer.json()
    assert body["id"] == 5 and body["error"]["code"] == -32004
    assert body["error"]["data"] == {
        "scopes": ["mcp", "files:write"],
        "upgrade_url": f"{issuer}/upgrade?grant={granted.grant_id}&scope=files%3Awrite",
    }
    assert upstream.requests == []


async def test_the_hierarchy_is_honoured(policed: Oauthd, upstream: FakeUpstream) -> None:
    writer = await policed.grant(scopes=("mcp", "files:write"))
    assert (await call(policed, writer, tool_call("read_file"))).status == 200  # implied
    assert (await call(policed, writer, tool_call("write_file"))).status == 200
    reader = await policed.grant(scopes=("mcp", "files:read"))
    assert (await call(policed, reader, tool_call("write_file"))).status == 403
    assert len(upstream.requests) == 2


async def test_the_first_matching_rule_decides(policed: Oauthd, upstream: FakeUpstream) -> None:
    granted = await policed.grant()
    assert (await call(policed, granted, tool_call("shadow_ok"))).status == 200
    assert (await call(policed, granted, tool_call("shadow_other"))).status == 403
    assert len(upstream.requests) == 1


async def test_a_batch_is_decided_per_element(policed: Oauthd, upstream: FakeUpstream) -> None:
    granted = await policed.grant()
    ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
    fine = await call(policed, granted, [ping, tool_call("read_x", 2)])
    assert fine.status == 403  # read_x needs files:read
    assert fine.json()["id"] is None
    assert fine.json()["error"]["data"]["scopes"] == ["mcp", "files:read"]
    both = await call(policed, granted, [tool_call("read_x", 1), tool_call("write_y", 2)])
    assert both.json()["error"]["data"]["scopes"] == ["mcp", "files:read", "files:write"]
    assert "files%3Aread%20files%3Awrite" in both.json()["error"]["data"]["upgrade_url"]
    denied = await call(policed, granted, [tool_call("write_y", 1), tool_call("shadow_x", 2)])
    assert denied.json()["error"]["code"] == -32003  # a denial wins over a step-up
    assert upstream.requests == []
    allowed = await call(policed, granted, [ping, tool_call("deploy", 2)])
    assert allowed.status == 200 and len(upstream.requests) == 1


async def test_a_body_that_is_not_json_is_refused(policed: Oauthd, upstream: FakeUpstream) -> None:
    granted = await policed.grant()
    answer = await policed.mcp("POST", granted, data=b"{nope")
    assert answer.status == 400 and answer.json()["error"]["code"] == -32700
    assert upstream.requests == []


async def test_groups_follow_a_reload_of_the_users(policed: Oauthd) -> None:
    granted = await policed.grant()
    assert (await call(policed, granted, tool_call("deploy"))).status == 200
    policed.auth.replace_users(Users([LocalUser(USER, PASSWORD_HASH, ("dev",))]))
    assert (await call(policed, granted, tool_call("deploy"))).status == 403


async def test_decisions_are_logged_with_their_rule_and_counted(
    policed: Oauthd, caplog: pytest.LogCaptureFixture
) -> None:
    granted = await policed.grant()
    caplog.set_level(logging.INFO, "oauthd.proxy")
    await call(policed, granted, tool_call("shadow_x"))
    await call(policed, granted, tool_call("write_x"))
    await call(policed, granted, tool_call("plain"))
    lines = [r.__dict__ for r in caplog.records if getattr(r, "event", "") == "proxy.policy"]
    assert [(line["rule"], line["decision"], line["target"]) for line in lines] == [
        ("shadows", "deny", "shadow_x"),
        ("writes-need-write", "step_up", "write_x"),
    ]
    assert lines[0]["user"] == USER and lines[0]["client"] == granted.client_id
    assert lines[0]["method"] == "tools/call"
    assert lines[0]["resource"] == policed.resource_uri("/mcp")
    metrics = (await policed.app[METRICS].render()).decode()
    for outcome in ("allow", "deny", "step_up"):
        assert f'oauthd_policy_decisions_total{{outcome="{outcome}",resource="/mcp"}} 1.0' in (
            metrics
        )


async def test_a_body_is_read_within_the_resources_limit(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(
        oauth={"scopes": SCOPES},
        resources=[
            resource("/mcp", upstream.url, scopes=SCOPES, rules=RULES, max_request_bytes=200)
        ],
    )
    granted = await oauthd.grant()
    big = tool_call("x" * 300)
    assert (await call(oauthd, granted, big)).status == 413

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * 100  # no Content-Length: counted as it comes
        yield orjson.dumps(tool_call("read_x"))

    streamed = await oauthd.mcp("POST", granted, data=chunked())
    assert streamed.status == 413
    assert upstream.requests == []
