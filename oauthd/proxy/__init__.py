"""The reverse proxy in front of each resource's MCP server (`/mcp`, ...): the gate
(origin, CORS, bearer), per-tool policy, MCP session binding, the caller's identity for
the upstream, and the streaming relay (listings filtered by policy)."""

from oauthd.proxy.proxy import McpProxy

__all__ = ["McpProxy"]
