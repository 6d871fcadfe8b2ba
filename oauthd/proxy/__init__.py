"""The reverse proxy in front of each resource's MCP server (`/mcp`, ...): the gate
(origin, CORS, bearer), per-tool policy, MCP session binding, the caller's identity for
the upstream, and the streaming relay (listings filtered by policy)."""

from oauthd.proxy.proxy import McpProxy
from oauthd.proxy.request_keys import (
    ACCESS_CLIENT,
    ACCESS_REQUEST_ID,
    ACCESS_RESOURCE,
    ACCESS_USER,
)

__all__ = ["ACCESS_CLIENT", "ACCESS_REQUEST_ID", "ACCESS_RESOURCE", "ACCESS_USER", "McpProxy"]
