"""The hash chain: records link, and a head can be put back."""

from __future__ import annotations

import orjson

from oauthd.audit import GENESIS, AuditEvent, Chain, ChainHead, head_of, record_hash
from oauthd.log import request_id_var


def test_records_link_and_count_from_one() -> None:
    chain = Chain("host-a")
    first, before = chain.seal(AuditEvent("login_succeeded", user="alice"), 100.0)
    second, _ = chain.seal(AuditEvent("token_issued", user="alice", client_id="c1"), 101.0)
    a, b = orjson.loads(first), orjson.loads(second)
    assert before == ChainHead()
    assert (a["n"], a["prev"], a["chain"]) == (1, GENESIS, "host-a")
    assert (b["n"], b["prev"]) == (2, a["hash"])
    assert chain.head == ChainHead(2, b["hash"]) == head_of(second)


def test_the_hash_covers_every_field_but_itself() -> None:
    line, _ = Chain("c").seal(AuditEvent("consent_granted", detail={"scopes": "mcp"}), 5.0)
    record = orjson.loads(line)
    digest = record.pop("hash")
    assert record_hash(GENESIS, record) == digest
    record["detail_edited"] = 1
    assert record_hash(GENESIS, record) != digest


def test_restore_puts_the_head_back() -> None:
    chain = Chain("c")
    chain.seal(AuditEvent("a"), 1.0)
    _, before = chain.seal(AuditEvent("b"), 2.0)
    chain.restore(before)
    line, _ = chain.seal(AuditEvent("c"), 3.0)
    assert orjson.loads(line)["n"] == 2


def test_the_request_id_rides_along_and_reserved_detail_is_ignored() -> None:
    token = request_id_var.set("req-1")
    try:
        line, _ = Chain("c").seal(AuditEvent("x", detail={"n": 99, "rule": "r1"}), 1.0)
    finally:
        request_id_var.reset(token)
    record = orjson.loads(line)
    assert (record["request_id"], record["n"], record["rule"]) == ("req-1", 1, "r1")


def test_detail_never_overrides_the_events_own_fields() -> None:
    event = AuditEvent("x", user="alice", detail={"user": "mallory", "event": "y", "op": 1})
    assert event.fields() == {"event": "x", "user": "alice", "op": 1}
    assert AuditEvent("x", user="alice", detail={"op": 1}).fields() == {
        "event": "x",
        "user": "alice",
        "op": 1,
    }
