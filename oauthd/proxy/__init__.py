"""The `/mcp` reverse proxy: the gate (origin, CORS, bearer), MCP session binding, the
caller's identity for the upstream, and the streaming relay."""

from oauthd.proxy.proxy import McpProxy
from oauthd.proxy.request_keys import ACCESS_CALLER, ACCESS_REQUEST_ID, Caller

__all__ = ["ACCESS_CALLER", "ACCESS_REQUEST_ID", "Caller", "McpProxy"]
