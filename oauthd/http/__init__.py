"""aiohttp only: routes, the one error renderer, pages. The protocol lives in `oauthd.oauth`;
the services are built in `oauthd.assembly`."""

from oauthd.http.app import refusal_log, web_app

__all__ = ["refusal_log", "web_app"]
