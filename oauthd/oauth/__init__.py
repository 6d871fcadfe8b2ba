"""The OAuth protocol: typed requests in, typed results or OAuthError out; no aiohttp.

The door: `AuthServer` and the names below are all that the rooms outside the protocol
(`http/`, `proxy/`, `admin/`, `outbound/`) may import from it; never a submodule
(`tests/test_layers.py`)."""

from oauthd.oauth.account import SESSION_TTL as ACCOUNT_SESSION_TTL
from oauthd.oauth.account import ConnectedApp
from oauthd.oauth.assertions import KeySetSource, KeysUnavailable, has_kid, import_key_set
from oauthd.oauth.authorize import Flow, add_query
from oauthd.oauth.client_auth import ClientCredentials, ClientKeySource, credentials_from
from oauthd.oauth.client_events import deleted as client_deleted_event
from oauthd.oauth.clients import (
    ClientDocumentError,
    DocumentFetcher,
    FetchedDocument,
    Registration,
    registration_response,
)
from oauthd.oauth.consent import ConsentRequest, ScopeWords
from oauthd.oauth.errors import Delivery, OAuthError, invalid_request, page_error
from oauthd.oauth.metadata import JWKS_PATH
from oauthd.oauth.operator_clients import ClientRefused, NewClient
from oauthd.oauth.page_signin import is_return_path
from oauthd.oauth.redirects import is_loopback_redirect, redirect_host
from oauthd.oauth.server import AuthServer
from oauthd.oauth.signing import KeyRing, KeyRingError, key_ring
from oauthd.oauth.tokens import BearerCheck, GrantEndedListener
from oauthd.oauth.upgrade import UPGRADE_PATH, UpgradeOffer, upgrade_url
from oauthd.oauth.upstream import IdentityProvider, UpstreamError, UpstreamIdentity

__all__ = [
    "ACCOUNT_SESSION_TTL",
    "JWKS_PATH",
    "UPGRADE_PATH",
    "AuthServer",
    "BearerCheck",
    "ClientCredentials",
    "ClientDocumentError",
    "ClientKeySource",
    "ClientRefused",
    "ConnectedApp",
    "ConsentRequest",
    "Delivery",
    "DocumentFetcher",
    "FetchedDocument",
    "Flow",
    "GrantEndedListener",
    "IdentityProvider",
    "KeyRing",
    "KeyRingError",
    "KeySetSource",
    "KeysUnavailable",
    "NewClient",
    "OAuthError",
    "Registration",
    "ScopeWords",
    "UpgradeOffer",
    "UpstreamError",
    "UpstreamIdentity",
    "add_query",
    "client_deleted_event",
    "credentials_from",
    "has_kid",
    "import_key_set",
    "invalid_request",
    "is_loopback_redirect",
    "is_return_path",
    "key_ring",
    "page_error",
    "redirect_host",
    "registration_response",
    "upgrade_url",
]
