"""What a Client ID Metadata Document must say (`document_problem`): the protocol's rules,
apart from the transport's (tests/outbound/test_cimd.py). The same cases as the fetcher
tested before the rules moved here, and the path through `ClientRegistry.find`."""

from __future__ import annotations

import pytest

from oauthd.oauth.clients import document_problem
from tests.support.protocol import CIMD_CLIENT_ID, Env, refused

URL = "https://cimd.test/client.json"


def document(url: str = URL, **changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "client_id": url,
        "client_name": "Document Client",
        "redirect_uris": ["http://127.0.0.1/callback"],
    } | changes
    return {k: v for k, v in doc.items() if v is not None}


def test_a_complete_document_is_acceptable() -> None:
    assert document_problem(document(), URL) is None
    assert document_problem(document(token_endpoint_auth_method="none"), URL) is None


def test_private_schemes_are_accepted_only_when_allowed() -> None:
    app = document(redirect_uris=["com.example.app:/callback"])
    assert document_problem(app, URL) is not None
    assert document_problem(app, URL, frozenset({"com.example.app"})) is None


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        (document(client_id=None), "no client_id"),
        (document(URL + "/"), "client_id in the document"),
        (document(URL.replace("cimd.test", "CIMD.TEST")), "client_id in the"),
        (document(client_id=[URL]), "client_id in the"),
        (document(client_name=None), "client_name"),
        (document(client_name=42), "client_name"),
        (document(client_name=" "), "client_name"),
        (document(redirect_uris=None), "redirect_uris"),
        (document(redirect_uris=[]), "redirect_uris"),
        (document(redirect_uris="http://127.0.0.1/cb"), "redirect_uris"),
        (document(redirect_uris=["http://127.0.0.1/cb", 7]), "redirect_uris"),
        (document(redirect_uris=["http://example.com/cb"]), "unacceptable redirect URI"),
        (document(redirect_uris=["javascript:alert(1)"]), "unacceptable redirect URI"),
        (document(token_endpoint_auth_method="client_secret_basic"), "only token_endpoint"),
    ],
)
def test_unacceptable_documents_name_the_problem(meta: dict[str, object], reason: str) -> None:
    problem = document_problem(meta, URL)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"client_id": CIMD_CLIENT_ID + "/"},
            "client_id in the document is not the URL it was fetched from",
        ),
        ({"client_name": None}, "client_name must be a non-empty string"),
    ],
)
async def test_the_registry_refuses_an_unacceptable_document(
    env: Env, changes: dict[str, object], reason: str
) -> None:
    env.fetcher.documents[CIMD_CLIENT_ID] = document(CIMD_CLIENT_ID, **changes)
    error = await refused(env.server.clients.find(CIMD_CLIENT_ID))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert error.description == f"client metadata document: {reason}"
    assert await env.store.clients.get(CIMD_CLIENT_ID) is None
