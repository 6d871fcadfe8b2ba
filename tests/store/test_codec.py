"""Records written before format 4 on a shared backend (Redis, PostgreSQL keep records one
by one, not in a migrated snapshot): the fields format 4 added take their defaults, and a
consent keeps the key it was stored under."""

from __future__ import annotations

import orjson

from oauthd.model import Consent, Grant, McpSession
from oauthd.store import codec
from tests.support.records import make_grant, make_mcp_session


def _without(record: object, *names: str) -> dict[str, object]:
    doc = orjson.loads(codec.encode(record))
    for name in names:
        del doc[name]
    return doc


def test_format_3_records_decode_with_the_defaults_of_format_4() -> None:
    consent = Consent("alice", "c1", ("mcp",), 1.0, None)
    old = codec.decode("consents", _without(consent, "resource"))
    assert isinstance(old, Consent) and old.resource == "/mcp"
    assert old.key == "alice\x1fc1"  # the key it was stored under before format 4
    grant = codec.decode("grants", _without(make_grant(), "groups"))
    assert isinstance(grant, Grant) and grant.groups == ()
    session = codec.decode("mcp_sessions", _without(make_mcp_session(), "resource"))
    assert isinstance(session, McpSession) and session.resource == ""  # its grant's holds


def test_format_4_fields_round_trip() -> None:
    grant = make_grant(groups=("ops",))
    assert codec.decode("grants", orjson.loads(codec.encode(grant))) == grant
    consent = Consent("a", "c", ("files:read",), 1.0, None, resource="/files/mcp")
    assert codec.decode("consents", orjson.loads(codec.encode(consent))) == consent
