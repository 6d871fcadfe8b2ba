"""oauthd: the OAuth 2.1 authorization server and reverse proxy for MCP servers."""

__version__ = "0.1.0"
