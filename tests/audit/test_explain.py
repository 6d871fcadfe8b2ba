"""`explain` on scripted histories: each prints the reason that made the user log in
again, from the records around the new login."""

from __future__ import annotations

from typing import Any

from oauthd.audit import reasons
from oauthd.audit.explain import explain

CODE = "authorization_code"


def rec(at: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"at": at, "event": event, "user": "alice", **fields}


def issued(at: float, client: str = "c1", grant: str = "g1", **more: Any) -> dict[str, Any]:
    return rec(at, "token_issued", client_id=client, grant=grant, grant_type=CODE, **more)


def test_reuse_after_the_window() -> None:
    trail = [
        issued(1, expires_at=1000),
        rec(2, "token_refreshed", client_id="c1", grant="g1", expires_at=1002),
        rec(3, "reuse_detected", client_id="c1", grant="g1", reason=reasons.REPLAY_AFTER_GRACE),
        issued(4, grant="g2"),
    ]
    found = explain(trail, "alice")
    assert found is not None
    assert found.reason == reasons.REPLAY_AFTER_GRACE
    assert found.because is not None and found.because["event"] == "reuse_detected"
    assert [r["event"] for r in found.before][-2:] == ["token_refreshed", "reuse_detected"]


def test_client_reregistered_is_recognised_by_its_fingerprint() -> None:
    trail = [
        {"at": 0, "event": "client_registered", "client_id": "c1", "fingerprint": "f00d"},
        issued(1, expires_at=1000),
        {"at": 5, "event": "client_registered", "client_id": "c2", "fingerprint": "f00d"},
        issued(6, client="c2", grant="g2"),
    ]
    found = explain(trail, "alice")
    assert found is not None and found.reason == reasons.CLIENT_REREGISTERED
    assert found.client_id == "c2"


def test_a_new_client_of_another_app_is_no_relogin() -> None:
    trail = [
        {"at": 0, "event": "client_registered", "client_id": "c1", "fingerprint": "aaaa"},
        issued(1),
        {"at": 5, "event": "client_registered", "client_id": "c2", "fingerprint": "bbbb"},
        issued(6, client="c2", grant="g2"),
    ]
    assert explain(trail, "alice") is None


def test_admin_revoke() -> None:
    trail = [
        issued(1, expires_at=1000),
        rec(2, "token_revoked", client_id="c1", reason=reasons.REVOKED_BY_ADMIN, by="admin"),
        issued(3, grant="g2"),
    ]
    found = explain(trail, "alice", "c1")
    assert found is not None and found.reason == reasons.REVOKED_BY_ADMIN


def test_expiry_is_inferred_from_the_last_refresh() -> None:
    trail = [
        issued(1, expires_at=100),
        rec(50, "token_refreshed", client_id="c1", grant="g1", expires_at=150),
        issued(200, grant="g2"),
    ]
    found = explain(trail, "alice")
    assert found is not None and found.reason == reasons.EXPIRED
    assert found.because is None and found.previous["expires_at"] == 150


def test_a_live_grant_asked_again_is_no_expiry() -> None:
    trail = [issued(1, expires_at=1000), issued(2, grant="g2")]
    found = explain(trail, "alice")
    assert found is not None and found.reason == reasons.AUTHORIZED_AGAIN


def test_policy_step_up_names_its_rule() -> None:
    trail = [
        issued(1, expires_at=1000),
        rec(
            2,
            "call_decided",
            client_id="c1",
            decision="step_up",
            reason=reasons.policy_rule("admin-tools"),
            method="tools/call",
            target="drop",
        ),
        issued(3, grant="g2"),
    ]
    found = explain(trail, "alice")
    assert found is not None and found.reason == "policy_rule:admin-tools"


def test_client_deleted() -> None:
    trail = [
        issued(1, expires_at=1000),
        {"at": 2, "event": "client_deleted", "client_id": "c1", "reason": "client_deleted"},
        rec(2, "token_revoked", client_id="c1", reason=reasons.CLIENT_DELETED),
        issued(3, grant="g2"),
    ]
    found = explain(trail, "alice")
    assert found is not None and found.reason == reasons.CLIENT_DELETED


def test_the_last_relogin_of_that_user_only() -> None:
    trail = [
        issued(1, expires_at=10),
        issued(20, grant="g2", expires_at=1000),
        rec(21, "token_revoked", client_id="c1", reason=reasons.REVOKED_BY_USER),
        issued(22, grant="g3"),
        issued(23, grant="x", user="bob"),
    ]
    found = explain(trail, "alice")
    assert found is not None and (found.at, found.reason) == (22, reasons.REVOKED_BY_USER)
    assert explain(trail, "carol") is None
