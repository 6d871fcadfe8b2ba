"""The `/mcp` reverse proxy: bearer check, MCP session binding, streaming relay."""

from oauthd.proxy.relay import McpProxy

__all__ = ["McpProxy"]
