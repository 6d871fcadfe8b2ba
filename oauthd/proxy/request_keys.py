"""What the routes and the proxy learnt about a request, kept on it for its access-log line
(oauthd/http/access_log.py): its request id, and the caller (user, client, resource) once
a bearer check knew them. Here rather than in `http/` because the proxy sets them too,
and it does not import `http/`. One key for the caller: the access log reads it on every
request, and each lookup costs."""

from __future__ import annotations

from typing import NamedTuple

from aiohttp import web


class Caller(NamedTuple):
    user: str
    client_id: str
    resource: str


ACCESS_REQUEST_ID = web.RequestKey("request_id", str)
ACCESS_CALLER = web.RequestKey("caller", Caller)
