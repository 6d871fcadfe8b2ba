"""aiohttp only: routes, the one error renderer, pages. The protocol lives in `oauthd.oauth`."""

from oauthd.http.app import create_app

__all__ = ["create_app"]
