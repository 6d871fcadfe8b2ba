"""The config file: TOML (stdlib `tomllib`) in, frozen dataclasses out.

The sections' dataclasses are the schema (`sections`): each key's field carries the
converter (`convert`) that checks and converts the TOML value and its default as it would
be written in the file; one generic builder walks them (`schema`). Unknown keys and
sections are errors, and every error names the file and the key path:
`config.toml: storage.save_debounce: ...`. Secrets are referenced, never written
(`secret_refs`).
"""

from oauthd.config.convert import parse_duration
from oauthd.config.issuers import SubjectRule, TrustedIssuerConfig
from oauthd.config.loader import admin_socket_path, default_config, load_config
from oauthd.config.resources import ResourceConfig, RuleConfig, UpstreamConfig
from oauthd.config.schema import ConfigError
from oauthd.config.secret_refs import read_secret
from oauthd.config.sections import (
    AdminConfig,
    AuditConfig,
    Config,
    ForwardAuthConfig,
    GithubConfig,
    IntrospectionConfig,
    KeysConfig,
    Listen,
    LocalUser,
    LogConfig,
    LoginConfig,
    MetricsConfig,
    OAuthConfig,
    OidcConfig,
    PagesConfig,
    ServerConfig,
    StorageConfig,
    TokensConfig,
    TracingConfig,
)

__all__ = [
    "AdminConfig",
    "AuditConfig",
    "Config",
    "ConfigError",
    "ForwardAuthConfig",
    "GithubConfig",
    "IntrospectionConfig",
    "KeysConfig",
    "Listen",
    "LocalUser",
    "LogConfig",
    "LoginConfig",
    "MetricsConfig",
    "OAuthConfig",
    "OidcConfig",
    "PagesConfig",
    "ResourceConfig",
    "RuleConfig",
    "ServerConfig",
    "StorageConfig",
    "SubjectRule",
    "TokensConfig",
    "TracingConfig",
    "TrustedIssuerConfig",
    "UpstreamConfig",
    "admin_socket_path",
    "default_config",
    "load_config",
    "parse_duration",
    "read_secret",
]
