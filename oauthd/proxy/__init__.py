"""The `/mcp` reverse proxy: the gate (origin, CORS, bearer), MCP session binding, the
caller's identity for the upstream, and the streaming relay."""

from oauthd.proxy.proxy import McpProxy

__all__ = ["McpProxy"]
