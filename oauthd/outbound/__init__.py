"""Outbound HTTP clients: the Client ID Metadata Document fetcher and the upstream identity
providers. Each implements a Protocol that `oauthd.oauth` defines and returns its types."""
