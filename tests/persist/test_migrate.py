"""Snapshot format versions: the migration chain, and a stored snapshot of every format
version that the current code must still load.

`tests/persist/fixtures/snapshots/v1.json` was written by oauthd with format version 1 (a
`FileStore` holding `FIXTURE_RECORDS`, saved at seq 11) by running this file:
`.venv/bin/python -m tests.persist.test_migrate` writes `v<CURRENT_VERSION>.json` if it
is missing. Once a version has been released its file is never rewritten: when
`CURRENT_VERSION` goes up, the stored files of the old versions keep proving that the
migration steps still bring them up to date, and the new version's file is added.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from oauthd.clock import FakeClock
from oauthd.model import (
    AccountLink,
    AccountSession,
    AuthCode,
    Client,
    Consent,
    DeviceFlow,
    Grant,
    McpSession,
    PendingAuthorization,
    Record,
    RegistrationGroup,
    SigningKey,
    UsedAssertion,
)
from oauthd.persist.errors import RecoveryError, TooNewError
from oauthd.persist.migrate import migrate
from oauthd.persist.statedir import SNAPSHOT
from oauthd.store.codec import KINDS
from oauthd.store.migrations import CURRENT_VERSION, MIGRATIONS
from tests.support.persist import as_contents, contents, open_store, snapshot_doc

FIXTURES = Path(__file__).parent / "fixtures" / "snapshots"
NOW = 1_800_000_000.0
DAY = 86_400.0


def _digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


# -- the chain --------------------------------------------------------------------------------


def _chain(calls: list[int]) -> dict[int, Any]:
    """A fake 1 -> 2 -> 3 -> 4 chain: each step renames a field and logs its version."""

    def step(version: int, old: str, new: str) -> Any:
        def run(doc: dict[str, Any]) -> dict[str, Any]:
            assert doc["version"] == version
            calls.append(version)
            doc[new] = doc.pop(old)
            return doc

        return run

    return {1: step(1, "a", "b"), 2: step(2, "b", "c"), 3: step(3, "c", "d")}


def test_chain_runs_every_step_in_order() -> None:
    calls: list[int] = []
    doc = migrate({"version": 1, "seq": 7, "a": [1]}, 4, _chain(calls))
    assert calls == [1, 2, 3]
    assert doc == {"version": 4, "seq": 7, "d": [1]}


def test_chain_starts_at_the_documents_version() -> None:
    calls: list[int] = []
    doc = migrate({"version": 3, "c": []}, 4, _chain(calls))
    assert calls == [3] and doc == {"version": 4, "d": []}


def test_current_version_is_left_alone() -> None:
    calls: list[int] = []
    doc = {"version": 4, "d": [1]}
    assert migrate(doc, 4, _chain(calls)) == {"version": 4, "d": [1]}
    assert calls == []


def test_newer_version_is_refused() -> None:
    calls: list[int] = []
    with pytest.raises(TooNewError, match="format version 5 is newer"):
        migrate({"version": 5, "e": []}, 4, _chain(calls))
    assert calls == []


def test_missing_step_is_an_error() -> None:
    calls: list[int] = []
    steps = _chain(calls)
    del steps[2]
    with pytest.raises(RecoveryError, match="no migration from snapshot format version 2"):
        migrate({"version": 1, "a": []}, 4, steps)
    assert calls == [1]


def test_the_real_chain_is_complete() -> None:
    """Every version below the current one has its step."""
    assert set(MIGRATIONS) == set(range(1, CURRENT_VERSION))


# -- stored snapshots of every version ----------------------------------------------------------

FIXTURE_RECORDS: list[Record] = [
    Client(
        client_id="https://app.example/oauth/client-metadata.json",
        client_name="Éxample MCP client ✓",
        redirect_uris=("http://127.0.0.1:33418/callback",),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        token_endpoint_auth_method="none",
        application_type="native",
        scope="mcp:read",
        secret_hash=None,
        source="cimd",
        created_at=NOW - 3600,
        expires_at=NOW + DAY,
    ),
    Client(
        client_id="dcr-7Jx2",
        client_name="Registered client",
        redirect_uris=("https://registered.example/cb", "https://registered.example/cb2"),
        grant_types=("authorization_code",),
        response_types=("code",),
        token_endpoint_auth_method="client_secret_basic",
        application_type="web",
        scope="mcp:read mcp:write",
        secret_hash=_digest("client secret"),
        source="dcr",
        created_at=NOW - 30 * DAY,
        expires_at=None,
    ),
    Consent(
        user="alice",
        client_id="dcr-7Jx2",
        scopes=("mcp:read", "mcp:write"),
        created_at=NOW - DAY,
        expires_at=NOW + 89 * DAY,
    ),
    PendingAuthorization(
        id="pend-1",
        client_id="dcr-7Jx2",
        redirect_uri="https://registered.example/cb",
        scopes=("mcp:read",),
        resource="https://mcp.example/",
        state=None,
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        user=None,
        browser_hash=_digest("browser 1"),
        device_key=None,
        upstream=None,
        created_at=NOW - 30,
        expires_at=NOW + 570,
    ),
    PendingAuthorization(
        id="pend-2",
        client_id="https://app.example/oauth/client-metadata.json",
        redirect_uri="http://127.0.0.1:33418/callback",
        scopes=(),
        resource="https://mcp.example/",
        state="BCDF-GHJK",
        code_challenge="",
        user="alice",
        browser_hash=_digest("browser 2"),
        device_key="dev-2",
        upstream=b"\x00\x01\x02nonce+verifier\xff",
        created_at=NOW - 60,
        expires_at=NOW + 540,
    ),
    AuthCode(
        code_key="code-1",
        secret_hash=_digest("code secret"),
        client_id="dcr-7Jx2",
        redirect_uri="https://registered.example/cb",
        user="alice",
        scopes=("mcp:read", "mcp:write"),
        resource="https://mcp.example/",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        grant_id=None,
        upstream_tokens=b"\x01sealed upstream tokens\x00",
        created_at=NOW - 10,
        expires_at=NOW + 50,
    ),
    Grant(
        id="grant-1",
        user="alice",
        client_id="dcr-7Jx2",
        scopes=("mcp:read", "mcp:write"),
        resource="https://mcp.example/",
        access_hash=_digest("access 1"),
        access_expires_at=NOW + 3000,
        refresh_hash=_digest("refresh 1"),
        previous_refresh_hash=None,
        rotated_at=None,
        successor_used=False,
        upstream_tokens=None,
        mcp_sessions=(),
        created_at=NOW - 600,
        last_used_at=NOW - 600,
        expires_at=NOW + 30 * DAY,
    ),
    Grant(
        id="grant-2",
        user="bob",
        client_id="https://app.example/oauth/client-metadata.json",
        scopes=("mcp:read",),
        resource="https://mcp.example/",
        access_hash=_digest("access 2"),
        access_expires_at=NOW + 1200,
        refresh_hash=_digest("refresh 2"),
        previous_refresh_hash=_digest("refresh 2 before"),
        rotated_at=NOW - 5.25,
        successor_used=True,
        upstream_tokens=b"\xaa" * 12 + b"ciphertext" + b"\x00" * 16,
        mcp_sessions=("0f1e2d3c4b5a69788796a5b4c3d2e1f0",),
        created_at=NOW - 10 * DAY,
        last_used_at=NOW - 5.25,
        expires_at=NOW + 20 * DAY,
    ),
    DeviceFlow(
        device_key="dev-1",
        secret_hash=_digest("device secret 1"),
        client_id="dcr-7Jx2",
        scopes=("mcp:read",),
        resource="https://mcp.example/",
        status="pending",
        user=None,
        grant_id=None,
        interval=5.0,
        last_poll_at=None,
        deadline=NOW + 580,
        created_at=NOW - 20,
        expires_at=NOW + 580,
    ),
    DeviceFlow(
        device_key="dev-2",
        secret_hash=_digest("device secret 2"),
        client_id="dcr-7Jx2",
        scopes=("mcp:read", "mcp:write"),
        resource="https://mcp.example/",
        status="approved",
        user="alice",
        grant_id="grant-1",
        interval=10.0,
        last_poll_at=NOW - 3,
        deadline=NOW + 400,
        created_at=NOW - 200,
        expires_at=NOW + 400,
    ),
    McpSession(
        session_key="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        grant_id="grant-1",
        user="alice",
        client_id="dcr-7Jx2",
        sealed_id=b"\x02sealed session id\x00",
        created_at=NOW - 100,
        expires_at=None,
        resource="https://mcp.example/",  # its grant's, filled in by the step to version 4
    ),
]


# Records of the kinds and fields added by format version 3 (in v3.json and later).
ADDED_IN_V3: list[Record] = [
    Client(
        client_id="dcr-used",
        client_name="Claude",
        redirect_uris=("https://claude.ai/api/mcp/auth_callback",),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        token_endpoint_auth_method="none",
        application_type="web",
        scope="mcp:read",
        secret_hash=None,
        source="dcr",
        created_at=NOW - 2 * DAY,
        expires_at=None,
        last_used_at=NOW - 3600,
    ),
    RegistrationGroup(
        group_key="5f0c6d4e9b1a2c3d",
        client_ids=("dcr-7Jx2", "dcr-unused-2"),
        created_at=NOW - 120,
        expires_at=NOW + DAY - 120,
    ),
    AccountSession(
        session_key="acct-1",
        secret_hash=_digest("account session secret"),
        user="alice",
        created_at=NOW - 60,
        expires_at=NOW + 1740,
    ),
]
# Records of the fields added by format version 4 (in v4.json and later): the resource of a
# consent (a path) and of an MCP session (its grant's identifier), a grant's groups.
ADDED_IN_V4: list[Record] = [
    Consent(
        user="alice",
        client_id="dcr-7Jx2",
        scopes=("files:read",),
        created_at=NOW - 3600,
        expires_at=NOW + 89 * DAY,
        resource="/files/mcp",
    ),
    Grant(
        id="grant-4",
        user="carol",
        client_id="dcr-used",
        scopes=("files:read", "files:write"),
        resource="https://mcp.example/files/mcp",
        access_hash=_digest("access 4"),
        access_expires_at=NOW + 3000,
        refresh_hash=_digest("refresh 4"),
        previous_refresh_hash=None,
        rotated_at=None,
        successor_used=False,
        upstream_tokens=None,
        mcp_sessions=("1f2e3d4c5b6a79889786b5a4c3d2e1f0",),
        created_at=NOW - 600,
        last_used_at=NOW - 60,
        expires_at=NOW + 30 * DAY,
        groups=("ops", "staff"),
    ),
    McpSession(
        session_key="1f2e3d4c5b6a79889786b5a4c3d2e1f0",
        grant_id="grant-4",
        user="carol",
        client_id="dcr-used",
        sealed_id=b"\x02another sealed session id\x00",
        created_at=NOW - 60,
        expires_at=NOW + DAY,
        resource="https://mcp.example/files/mcp",
    ),
]
# Records of format version 5 (in v5.json and later): a service principal's grant, a
# private_key_jwt client with its keys and resource, and the three kinds it adds.
ADDED_IN_V5: list[Record] = [
    Client(
        client_id="svc-ci",
        client_name="CI job",
        redirect_uris=(),
        grant_types=("client_credentials",),
        response_types=(),
        token_endpoint_auth_method="private_key_jwt",
        application_type="web",
        scope="files:read",
        secret_hash=None,
        source="admin",
        created_at=NOW - DAY,
        expires_at=None,
        jwks='{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"ci-1"}]}',
        resource="https://mcp.example/files/mcp",
    ),
    Grant(
        id="grant-5",
        user="ci-job",
        client_id="svc-ci",
        scopes=("files:read",),
        resource="https://mcp.example/files/mcp",
        access_hash=_digest("access 5"),
        access_expires_at=NOW + 3000,
        refresh_hash=_digest("void refresh 5"),
        previous_refresh_hash=None,
        rotated_at=None,
        successor_used=False,
        upstream_tokens=None,
        mcp_sessions=(),
        created_at=NOW - 600,
        last_used_at=NOW - 600,
        expires_at=NOW + 3000,
        principal="service",
    ),
    SigningKey(
        kid="k-2026-12-07",
        alg="ES256",
        state="active",
        public_jwk='{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k-2026-12-07","alg":"ES256","use":"sig"}',
        sealed_private=b"\x03sealed private key bytes\x00",
        created_at=NOW - DAY,
        activate_after=NOW - DAY,
        activated_at=NOW - DAY,
        retired_at=None,
        expires_at=None,
    ),
    UsedAssertion(
        assertion_key="9a8b7c6d5e4f3a2b1c0d",
        issuer="https://idp.example",
        created_at=NOW - 30,
        expires_at=NOW + 270,
    ),
    AccountLink(
        issuer="https://idp.example",
        subject="00u1abcd",
        user="alice",
        via="email",
        created_at=NOW - 3600,
        expires_at=None,
    ),
]
RECORDS_OF = {
    1: FIXTURE_RECORDS,
    2: FIXTURE_RECORDS,
    3: FIXTURE_RECORDS + ADDED_IN_V3,
    4: FIXTURE_RECORDS + ADDED_IN_V3 + ADDED_IN_V4,
    5: FIXTURE_RECORDS + ADDED_IN_V3 + ADDED_IN_V4 + ADDED_IN_V5,
}
KINDS_OF = {1: KINDS[:7], 2: KINDS[:7], 3: KINDS[:9], 4: KINDS[:9], 5: KINDS}


def fixture_versions() -> list[int]:
    return sorted(int(p.stem[1:]) for p in FIXTURES.glob("v*.json"))


async def load_fixture(tmp_path: Path, version: int, now: float = NOW) -> dict[str, Any]:
    """Start a store on the stored snapshot of `version`; return what it holds."""
    state = tmp_path / f"state-v{version}"
    state.mkdir(mode=0o700)
    shutil.copyfile(FIXTURES / f"v{version}.json", state / SNAPSHOT)
    store = await open_store(state, FakeClock(now))
    try:
        return await contents(store)
    finally:
        await store.close()


def test_every_version_has_a_stored_snapshot() -> None:
    """Bumping CURRENT_VERSION needs a stored snapshot of the new version too, so that the
    next bump has one to test its step with."""
    assert fixture_versions() == list(range(1, CURRENT_VERSION + 1))


def test_v1_fixture_is_a_realistic_v1_snapshot() -> None:
    doc = orjson.loads((FIXTURES / "v1.json").read_bytes())
    assert doc["format"] == "oauthd-state" and doc["version"] == 1
    assert doc["seq"] == len(FIXTURE_RECORDS)
    assert all(doc[kind] for kind in KINDS_OF[1]), "a kind has no record in the fixture"


async def test_v1_fixture_loads_with_the_current_code(tmp_path: Path) -> None:
    assert await load_fixture(tmp_path, 1) == as_contents(FIXTURE_RECORDS)


async def test_v1_fixture_expiry_is_applied_on_load(tmp_path: Path) -> None:
    later = NOW + 3600  # pending flows, the code and the device flows are over by then
    live = [r for r in FIXTURE_RECORDS if r.expires_at is None or r.expires_at > later]
    assert {r.KIND for r in FIXTURE_RECORDS} - {r.KIND for r in live} == {
        "pending",
        "codes",
        "devices",
    }
    assert await load_fixture(tmp_path, 1, later) == as_contents(live)


async def test_every_older_version_loads_and_is_migrated(tmp_path: Path) -> None:
    """Empty while CURRENT_VERSION is 1; from version 2 on, each stored older snapshot must
    load through the chain, keep its records, and be rewritten at the current version."""
    for version in range(1, CURRENT_VERSION):
        loaded = await load_fixture(tmp_path, version)
        state = tmp_path / f"state-v{version}"
        assert loaded == as_contents(RECORDS_OF[version]), f"v{version}: records changed"
        assert all(loaded[kind] for kind in KINDS_OF[version]), f"v{version}: a kind lost some"
        assert snapshot_doc(state)["version"] == CURRENT_VERSION
        original = (FIXTURES / f"v{version}.json").read_bytes()
        assert (state / f"snapshot.v{version}.bak").read_bytes() == original


async def _write_current_fixture() -> Path:
    """Write `v<CURRENT_VERSION>.json` the way a daemon would (see the module docstring)."""
    import tempfile

    target = FIXTURES / f"v{CURRENT_VERSION}.json"
    if target.exists():
        raise SystemExit(f"{target} exists; a released version's snapshot is never rewritten")
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(Path(tmp), FakeClock(NOW), journaled=False)
        for record in RECORDS_OF[CURRENT_VERSION]:
            await store.by_kind[record.KIND].put(record)
        assert await store.engine.save()
        FIXTURES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / SNAPSHOT, target)
        await store.close()
    return target


def test_v3_to_v4_names_the_resource_of_consents_and_sessions() -> None:
    """The first round protected only `/mcp`: its consents are `/mcp`'s (a path, keyed as
    before); a session is its grant's resource, or "" without its grant."""
    doc: dict[str, Any] = {
        "version": 3,
        "consents": [{"user": "a", "client_id": "c"}],
        "grants": [{"id": "g1", "resource": "https://as.example/mcp"}],
        "mcp_sessions": [{"grant_id": "g1"}, {"grant_id": "gone"}],
    }
    out = MIGRATIONS[3](doc)
    assert out["consents"][0]["resource"] == "/mcp"
    assert [s["resource"] for s in out["mcp_sessions"]] == ["https://as.example/mcp", ""]
    assert out["grants"][0]["groups"] == []
    consent = Consent("a", "c", (), NOW, None)
    assert consent.key == "a\x1fc"  # the key a format-3 consent was stored under
    assert Consent("a", "c", (), NOW, None, resource="/files/mcp").key == "a\x1fc\x1f/files/mcp"


def test_v4_to_v5_makes_every_earlier_grant_a_persons() -> None:
    doc: dict[str, Any] = {"version": 4, "grants": [{"id": "g1"}], "clients": [{"client_id": "c"}]}
    out = MIGRATIONS[4](doc)
    assert out["grants"][0]["principal"] == "user"
    assert out["clients"][0] == {"client_id": "c", "jwks": None, "jwks_uri": None, "resource": None}
    assert out["signing_keys"] == out["used_assertions"] == out["account_links"] == []


async def test_the_current_fixture_loads_every_kind(tmp_path: Path) -> None:
    loaded = await load_fixture(tmp_path, CURRENT_VERSION)
    assert loaded == as_contents(RECORDS_OF[CURRENT_VERSION])
    assert all(loaded[kind] for kind in KINDS)


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(_write_current_fixture()))
