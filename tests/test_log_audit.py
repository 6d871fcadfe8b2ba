"""Audit events in the JSON log after a scripted run (`tests/support/scripted_run.py`): one
line per sign-in, consent, token issue, refresh, reuse detected, revocation and
registration, with who and what, the request id, and never a secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.configs import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER
from tests.support.scripted_run import scripted_run, start
from tests.support.secrets_scan import assert_no_secret, json_log


@pytest.fixture
def info_log() -> Iterator[None]:
    with json_log("info"):
        yield


KEY_EVENTS = ("audit.key_created", "audit.key_rotated", "audit.key_retired")


def grant_of(token: str) -> str:
    return token.partition(".")[0][:8]


async def test_audit_lines_after_a_scripted_run(
    tmp_path: Path, info_log: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await start(tmp_path)
    try:
        script = await scripted_run(run)
        secrets = run.client.secrets()
    finally:
        await run.close()
    out = capsys.readouterr().out
    lines = [orjson.loads(line) for line in out.splitlines()]
    audit = [doc for doc in lines if str(doc.get("event", "")).startswith("audit.")]
    by_event: dict[str, list[dict[str, Any]]] = {}
    for doc in audit:
        by_event.setdefault(doc["event"], []).append(doc)
        assert doc["logger"] == "oauthd.audit"
        if doc["event"] not in KEY_EVENTS:  # the key ring's work is no request's
            assert len(doc["request_id"]) >= 8, doc
    a, b, c, d = script.tokens
    client_id = script.client_id

    assert [e["client_id"] for e in by_event["audit.client_registered"]] == [client_id]
    (registered,) = by_event["audit.client_registered"]
    assert registered["client_name"] == "Scripted App"
    assert registered["auth_method"] == "none"

    logins = [(e["result"], e["user"], e["client_id"]) for e in by_event["audit.login"]]
    assert logins == [
        ("failure", USER, client_id),
        ("success", USER, client_id),
        ("success", USER, client_id),
        ("success", OTHER_USER, client_id),
        ("success", USER, client_id),
    ]
    assert all(
        e["method"] == "password" and e["address"] == "127.0.0.1" for e in by_event["audit.login"]
    )
    assert by_event["audit.login"][0]["level"] == "warning"

    consents = [(e["decision"], e["user"], e["remembered"]) for e in by_event["audit.consent"]]
    assert consents == [
        ("allow", USER, False),
        ("allow", USER, True),  # the first consent, applied without a page
        ("deny", OTHER_USER, False),
        ("allow", USER, True),
    ]
    assert all(e["scopes"] == "mcp" and e["device"] is False for e in by_event["audit.consent"])
    assert all(e["resource"] == "/mcp" for e in by_event["audit.consent"])

    issued = by_event["audit.token_issued"]
    assert [e["grant"] for e in issued] == [grant_of(t["access_token"]) for t in (a, c, d)]
    assert all(
        e["grant_type"] == "authorization_code"
        and e["user"] == USER
        and e["client_id"] == client_id
        and len(e["grant"]) == 8
        and e["resource"] == "/mcp"
        for e in issued
    )

    (refreshed,) = by_event["audit.token_refreshed"]
    assert refreshed["grant"] == grant_of(b["refresh_token"]) == grant_of(a["refresh_token"])
    assert refreshed["resource"] == "/mcp"

    reuse = [(e["token_type"], e["grant"], e["level"]) for e in by_event["audit.reuse_detected"]]
    assert reuse == [
        ("refresh_token", grant_of(a["refresh_token"]), "warning"),
        ("authorization_code", grant_of(d["refresh_token"]), "warning"),
    ]

    (revoked,) = by_event["audit.token_revoked"]
    assert revoked["token_type"] == "refresh_token" and revoked["by"] == "client"
    assert revoked["grant"] == grant_of(c["refresh_token"])
    assert revoked["user"] == USER and revoked["client_id"] == client_id
    assert revoked["resource"] == "/mcp"

    assert set(by_event) == {
        "audit.client_registered",
        "audit.login",
        "audit.consent",
        "audit.token_issued",
        "audit.token_refreshed",
        "audit.reuse_detected",
        "audit.token_revoked",
        "audit.key_created",  # the first start made the first signing key
    }
    (created,) = by_event["audit.key_created"]
    assert created["state"] == "active" and created["alg"] == "ES256"

    # never a secret, anywhere in the log: tokens (and their secret halves), codes, the
    # browser cookies, the passwords typed
    assert secrets, "the run handed out no secret?"
    assert_no_secret([*secrets, PASSWORD, OTHER_PASSWORD, "not the password"], {"the log": out})
