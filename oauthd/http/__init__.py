"""aiohttp only: routes, the one error renderer, pages. The protocol lives in `oauthd.oauth`;
the services are built in `oauthd.assembly`."""

from oauthd.http.access_log import access_log_arguments
from oauthd.http.app import refusal_log, web_app
from oauthd.http.metrics import metrics_app

__all__ = ["access_log_arguments", "metrics_app", "refusal_log", "web_app"]
