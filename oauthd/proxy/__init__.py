"""The `/mcp` reverse proxy: the gate (origin, CORS, bearer), MCP session binding, the
caller's identity for the upstream, and the streaming relay."""

from oauthd.proxy.proxy import McpProxy
from oauthd.proxy.request_keys import (
    ACCESS_CLIENT,
    ACCESS_REQUEST_ID,
    ACCESS_RESOURCE,
    ACCESS_USER,
)

__all__ = ["ACCESS_CLIENT", "ACCESS_REQUEST_ID", "ACCESS_RESOURCE", "ACCESS_USER", "McpProxy"]
