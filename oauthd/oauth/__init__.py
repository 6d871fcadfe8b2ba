"""The OAuth protocol: typed requests in, typed results or OAuthError out; no aiohttp."""

from oauthd.oauth.errors import OAuthError
from oauthd.oauth.server import AuthServer
from oauthd.oauth.tokens import GrantEndedListener

__all__ = ["AuthServer", "GrantEndedListener", "OAuthError"]
