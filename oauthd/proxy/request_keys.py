"""What the routes and the proxy learnt about a request, kept on it for its access-log line
(oauthd/http/access_log.py): its request id, user, client and resource. Here rather than
in `http/` because the proxy sets them too, and it does not import `http/`."""

from __future__ import annotations

from aiohttp import web

ACCESS_REQUEST_ID = web.RequestKey("request_id", str)
ACCESS_USER = web.RequestKey("user", str)
ACCESS_CLIENT = web.RequestKey("client_id", str)
ACCESS_RESOURCE = web.RequestKey("resource", str)
