"""The sections of the config file, each a frozen dataclass whose fields declare their
converter and default (`oauthd.config.schema`), and the rules over several keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from oauthd.config import convert as to
from oauthd.config.issuers import TrustedIssuerConfig, check_issuers, trusted_issuer_tables
from oauthd.config.logo import Logo, logo
from oauthd.config.resources import (
    SHORTHAND_PATH,
    ResourceConfig,
    UpstreamConfig,
    check_resources,
    resource_tables,
)
from oauthd.config.schema import At, build, key, section, show
from oauthd.config.secret_refs import secret_ref


def _listen(value: object, at: At) -> Listen:
    text = to.string(value, at)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\[\]:]+):(\d{1,5})", text)
    if match is None:
        raise at.error(f'expected "host:port" or "[ipv6]:port", got {show(text)}')
    host, port = match[1] or match[3], int(match[2] or match[4])
    if port > 65535:
        raise at.error(f"port must be 0-65535, got {port}")
    return Listen(host, port)


def _optional_listen(value: object, at: At) -> Listen | None:
    return _listen(value, at) if to.string(value, at) else None


@dataclass(frozen=True, slots=True)
class Listen:
    host: str  # IPv6 without brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: Listen = field(metadata=key(_listen, "127.0.0.1:8080"))
    issuer: str = field(metadata=key(to.issuer, "http://127.0.0.1:8080"))
    shutdown_timeout: float = field(metadata=key(to.duration, "10s"))
    header_timeout: float = field(metadata=key(to.duration, "10s"))
    body_timeout: float = field(metadata=key(to.duration, "60s"))
    idle_timeout: float = field(metadata=key(to.duration, "75s"))
    max_connections_per_address: int = field(metadata=key(to.count, 256))
    # peers whose X-Forwarded-For / Forwarded name the client (oauthd.peers); [] = none
    trusted_proxies: tuple[str, ...] = field(metadata=key(to.networks, []))


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = field(metadata=key(to.choice(("memory", "file", "redis", "postgres")), "file"))
    path: Path = field(metadata=key(to.path, "var/oauthd"))
    durability: str = field(metadata=key(to.choice(("journal", "snapshot")), "journal"))
    save_interval: float = field(metadata=key(to.duration, "30s"))
    save_debounce: float = field(metadata=key(to.duration, "1s"))
    save_max_wait: float = field(metadata=key(to.duration, "5s"))
    redis_url: str = field(metadata=key(to.redis_url, "redis://127.0.0.1:6379/0"))
    redis_prefix: str = field(metadata=key(to.string, "oauthd:"))
    redis_pool_size: int = field(metadata=key(to.positive_int, 20))
    timeout: float = field(metadata=key(to.duration, "2s"))
    postgres_dsn: str = field(
        metadata=key(to.string, "postgresql://postgres@127.0.0.1:5432/oauthd")
    )
    postgres_pool_size: int = field(metadata=key(to.positive_int, 10))
    # redis/postgres: grants and MCP session bindings kept in memory per kind (0: off)
    cache_size: int = field(metadata=key(to.count, 10000))


@dataclass(frozen=True, slots=True)
class TokensConfig:
    access_ttl: float = field(metadata=key(to.duration, "1h"))
    refresh_ttl: float = field(metadata=key(to.duration, "30d"))
    code_ttl: float = field(metadata=key(to.duration, "60s"))
    device_ttl: float = field(metadata=key(to.duration, "10m"))
    pending_ttl: float = field(metadata=key(to.duration, "10m"))
    consent_ttl: float = field(metadata=key(to.duration, "90d"))
    refresh_grace: float = field(metadata=key(to.duration_or_off, "10s"))


def _seconds(value: object, at: At) -> float:
    """A whole number of seconds (at least 1), or a duration such as "5m"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise at.error(f"expected at least 1 second, got {value}")
        return float(value)
    return to.duration(value, at)


def _seconds_or_off(value: object, at: At) -> float:
    """`_seconds`, or 0 (or "0s") for never."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return to.duration_or_off(value, at) if isinstance(value, str) else _seconds(value, at)


@dataclass(frozen=True, slots=True)
class KeysConfig:
    """oauthd's signing key ring (oauthd.oauth.signing): signed identity to the upstreams
    and JWT access tokens, verified by them through `/.well-known/jwks.json`."""

    algorithm: str = field(metadata=key(to.choice(("ES256", "RS256")), "ES256"))
    # the JWKS document's Cache-Control max-age; a next key is published this long before
    # it signs, a retired one this long after what it signed expired
    jwks_max_age: float = field(metadata=key(_seconds, 300))
    rotate_every: float = field(metadata=key(_seconds_or_off, 0))  # 0: `oauthd keys rotate` only


def _check_keys(keys: KeysConfig, at: At) -> None:
    if keys.rotate_every and keys.rotate_every <= 2 * keys.jwks_max_age:
        raise at.key("rotate_every").error(
            f"must be more than twice jwks_max_age ({keys.jwks_max_age:g}s), or 0 for manual "
            f"rotation only: a rotation waits jwks_max_age before the next key signs; "
            f"got {keys.rotate_every:g}s"
        )


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    scopes: tuple[str, ...] = field(metadata=key(to.words, ["mcp"]))
    resource_name: str = field(metadata=key(to.string, "MCP server"))
    registration: bool = field(metadata=key(to.boolean, True))
    # whether dynamic registration hands out grant type client_credentials (with a secret
    # or an inline jwks); off: only an operator creates such clients (`oauthd clients add`)
    registration_client_credentials: bool = field(metadata=key(to.boolean, False))
    client_id_metadata_documents: bool = field(metadata=key(to.boolean, True))
    allowed_redirect_schemes: tuple[str, ...] = field(metadata=key(to.words, []))
    registrations_per_minute: int = field(metadata=key(to.positive_int, 20))  # per address
    # registry hygiene (oauth/hygiene.py): a registration never used is removed after
    # this ("0s": never); one idle this long, holding no live grant, too ("0s": never)
    unused_client_lifetime: float = field(metadata=key(to.duration_or_off, "24h"))
    idle_client_lifetime: float = field(metadata=key(to.duration_or_off, "90d"))
    # never-used registrations kept per app (same name and redirect URIs), oldest go first
    unused_registrations_per_app: int = field(metadata=key(to.positive_int, 20))
    device_guesses_per_minute: int = field(metadata=key(to.positive_int, 10))  # per address
    device_guesses_per_minute_total: int = field(metadata=key(to.positive_int, 100))
    # failed client authentications per address (/token, /revoke, /introspect, ...)
    client_auth_failures_per_minute: int = field(metadata=key(to.positive_int, 20))
    # scope -> what it implies (transitively): honoured wherever scopes are compared
    scope_implies: tuple[tuple[str, tuple[str, ...]], ...] = field(
        metadata=key(to.scope_implications, {})
    )
    # scope -> the words the consent page shows for it (none: the scope's own name)
    scope_descriptions: tuple[tuple[str, str], ...] = field(metadata=key(to.scope_descriptions, {}))
    # the resource (its path, or issuer + path) of a request that names none; "" = the first
    default_resource: str = field(metadata=key(to.string, ""))


@dataclass(frozen=True, slots=True)
class IntrospectionConfig:
    client_id: str = field(metadata=key(to.string, ""))
    client_secret: str = field(metadata=key(secret_ref, ""))


@dataclass(frozen=True, slots=True)
class LocalUser:
    username: str = field(metadata=key(to.username))
    password_hash: str = field(metadata=key(to.password_hash))
    groups: tuple[str, ...] = field(default=(), metadata=key(to.words, []))  # policy rules


def _users(value: object, at: At) -> tuple[LocalUser, ...]:
    if not isinstance(value, list):
        raise at.error(f"expected an array of tables ([[login.users]]), got {show(value)}")
    users = tuple(build(LocalUser, item, at.item(i)) for i, item in enumerate(value))
    first_index: dict[str, int] = {}
    for i, user in enumerate(users):
        if user.username in first_index:
            other = at.item(first_index[user.username]).key("username").path
            raise at.item(i).key("username").error(f"duplicate username, already in {other}")
        first_index[user.username] = i
    return users


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str = field(metadata=key(to.optional_url, ""))
    client_id: str = field(metadata=key(to.string, ""))
    client_secret: str = field(metadata=key(secret_ref, ""))
    scopes: tuple[str, ...] = field(metadata=key(to.words, ["openid", "email", "profile"]))
    subject_claim: str = field(metadata=key(to.string, "email"))
    groups_claim: str = field(metadata=key(to.string, ""))  # "" = OIDC users have no groups


@dataclass(frozen=True, slots=True)
class GithubConfig:
    client_id: str = field(metadata=key(to.string, ""))
    client_secret: str = field(metadata=key(secret_ref, ""))
    scopes: tuple[str, ...] = field(metadata=key(to.words, ["read:user"]))
    authorize_url: str = field(
        metadata=key(to.http_url, "https://github.com/login/oauth/authorize")
    )
    token_url: str = field(metadata=key(to.http_url, "https://github.com/login/oauth/access_token"))
    user_url: str = field(metadata=key(to.http_url, "https://api.github.com/user"))
    username_field: str = field(metadata=key(to.string, "login"))


@dataclass(frozen=True, slots=True)
class LoginConfig:
    provider: str = field(metadata=key(to.choice(("local", "oidc", "github")), "local"))
    users: tuple[LocalUser, ...] = field(metadata=key(_users, []))
    # failed sign-ins per failure_window: per user from unknown browsers, per client
    # address from unknown browsers, per known browser (oauthd.oauth.signin)
    max_failures: int = field(metadata=key(to.positive_int, 5))
    max_failures_per_address: int = field(metadata=key(to.positive_int, 20))
    max_failures_per_known_browser: int = field(metadata=key(to.positive_int, 5))
    failure_window: float = field(metadata=key(to.duration, "15m"))
    known_browser_ttl: float = field(metadata=key(to.duration, "180d"))
    encryption_key: str = field(metadata=key(secret_ref, ""))
    oidc: OidcConfig = field(metadata=key(section(OidcConfig), {}))
    github: GithubConfig = field(metadata=key(section(GithubConfig), {}))


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    allow: tuple[str, ...] = field(metadata=key(to.networks, ["127.0.0.1/32", "::1/128"]))
    # "host:port": /metrics only there, on a listener of its own; "" = on server.listen
    listen: Listen | None = field(metadata=key(_optional_listen, ""))


@dataclass(frozen=True, slots=True)
class ForwardAuthConfig:
    # Peers (the front proxies themselves) that may ask /forward-auth; [] turns it off.
    allow: tuple[str, ...] = field(metadata=key(to.networks, ["127.0.0.1/32", "::1/128"]))


@dataclass(frozen=True, slots=True)
class AdminConfig:
    socket: str = field(metadata=key(to.string, ""))  # "" = admin.sock in the state dir


@dataclass(frozen=True, slots=True)
class PagesConfig:
    service_name: str = field(metadata=key(to.string, ""))  # "" = the pages say only "oauthd"
    # a PNG, JPEG, WebP or SVG file (read at start), shown on every page; "" = none
    logo: Logo | None = field(metadata=key(logo, ""))


@dataclass(frozen=True, slots=True)
class AuditConfig:
    enabled: bool = field(metadata=key(to.boolean, True))  # durable audit records at all
    # a record per tools/call, resources/read and prompts/get, durable before it is forwarded
    calls: bool = field(metadata=key(to.boolean, False))
    retention: float = field(metadata=key(_seconds_or_off, "90d"))  # 0 = keep forever
    chain: str = field(metadata=key(to.string, ""))  # this instance's chain; "" = host name


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = field(metadata=key(to.choice(("debug", "info", "warning", "error")), "info"))
    access: bool = field(metadata=key(to.boolean, True))  # one line per request answered
    access_mcp: bool = field(metadata=key(to.boolean, True))  # ... the resources' ones too


def _ratio(value: object, at: At) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise at.error(f"expected a number from 0 to 1, got {show(value)}")
    return float(value)


@dataclass(frozen=True, slots=True)
class TracingConfig:
    enabled: bool = field(metadata=key(to.boolean, False))  # needs the otel extra
    exporter: str = field(metadata=key(to.choice(("otlp", "console")), "otlp"))
    # OTLP/HTTP traces URL; "" = the exporter's default (OTEL_EXPORTER_OTLP_* or localhost:4318)
    endpoint: str = field(metadata=key(to.optional_url, ""))
    service_name: str = field(metadata=key(to.string, "oauthd"))
    # of the traces oauthd starts; a sampled or unsampled caller's traceparent decides its own
    sample_ratio: float = field(metadata=key(_ratio, 1.0))


def _check_storage(storage: StorageConfig, at: At) -> None:
    if storage.save_max_wait < storage.save_debounce:
        raise at.key("save_max_wait").error(
            f"must be at least save_debounce ({storage.save_debounce:g}s), "
            f"got {storage.save_max_wait:g}s"
        )


def check_config(config: Config, at: At) -> None:
    if config.resource:
        check_resources(config.resource, config.oauth.scopes, at.key("resource"))
    else:
        unknown = [s for s in config.upstream.required_scopes if s not in config.oauth.scopes]
        if unknown:
            raise (
                at.key("upstream")
                .key("required_scopes")
                .error(
                    f"{show(unknown[0])} is not in oauth.scopes, so no token could ever carry it"
                )
            )
    _check_scope_tables(config, at.key("oauth"))
    if config.trusted_issuer:
        issuer = config.server.issuer
        offered = {r.path: r.scopes for r in config.resources}
        offered.update({r.uri(issuer): r.scopes for r in config.resources})
        check_issuers(config.trusted_issuer, offered, at.key("trusted_issuer"))
    _check_shared_key(config, at)
    listen = config.metrics.listen
    if listen is not None and listen.port != 0 and listen == config.server.listen:
        raise (
            at.key("metrics")
            .key("listen")
            .error(f'is server.listen ({listen}); use another port, or "" to serve /metrics there')
        )


def _check_scope_tables(config: Config, at: At) -> None:
    offered = config.scopes_supported
    implies = at.key("scope_implies")
    for scope, implied in config.oauth.scope_implies:
        for named, where in ((scope, implies), *((s, implies.key(scope)) for s in implied)):
            if named not in offered:
                raise where.error(
                    f"{show(named)} is not in oauth.scopes; a hierarchy names offered scopes"
                )
    for scope, _ in config.oauth.scope_descriptions:
        if scope not in offered:
            raise at.key("scope_descriptions").error(f"{show(scope)} is not in oauth.scopes")
    wanted = config.oauth.default_resource
    if wanted and config.resource_named(wanted) is None:
        paths = ", ".join(show(r.path) for r in config.resources)
        raise at.key("default_resource").error(
            f"{show(wanted)} is no resource's path or identifier; the resources are {paths}"
        )


def _check_shared_key(config: Config, at: At) -> None:
    # Instances on one shared backend seal MCP session ids for each other: a revocation on
    # any of them must open the ids another one stored to close the sessions upstream.
    backend = config.storage.backend
    if backend in ("redis", "postgres") and not config.login.encryption_key:
        raise (
            at.key("login")
            .key("encryption_key")
            .error(
                f'required when storage.backend = "{backend}": every instance on the shared '
                "backend must seal MCP session ids with the same key, so that a revocation "
                "on any instance can close the sessions another one opened; "
                '"file:PATH", "env:NAME" or "credential:NAME" holding 32 bytes'
            )
        )


def _check_login(login: LoginConfig, at: At) -> None:
    if login.provider == "local":
        return
    provider = login.oidc if login.provider == "oidc" else login.github
    required = ("issuer", "client_id") if login.provider == "oidc" else ("client_id",)
    for name in required:
        if not getattr(provider, name):
            raise (
                at.key(login.provider)
                .key(name)
                .error(f'required when login.provider = "{login.provider}"')
            )
    if not login.encryption_key:
        raise at.key("encryption_key").error(
            f'required when login.provider = "{login.provider}" (upstream tokens are kept '
            'encrypted): "file:PATH", "env:NAME" or "credential:NAME" holding 32 bytes'
        )


@dataclass(frozen=True, slots=True)
class Config:
    source: Path  # the config file, absolute
    server: ServerConfig = field(metadata=key(section(ServerConfig), {}))
    upstream: UpstreamConfig = field(metadata=key(section(UpstreamConfig), {}))
    storage: StorageConfig = field(metadata=key(section(StorageConfig, _check_storage), {}))
    tokens: TokensConfig = field(metadata=key(section(TokensConfig), {}))
    oauth: OAuthConfig = field(metadata=key(section(OAuthConfig), {}))
    introspection: IntrospectionConfig = field(metadata=key(section(IntrospectionConfig), {}))
    login: LoginConfig = field(metadata=key(section(LoginConfig, _check_login), {}))
    metrics: MetricsConfig = field(metadata=key(section(MetricsConfig), {}))
    forward_auth: ForwardAuthConfig = field(metadata=key(section(ForwardAuthConfig), {}))
    admin: AdminConfig = field(metadata=key(section(AdminConfig), {}))
    log: LogConfig = field(metadata=key(section(LogConfig), {}))
    audit: AuditConfig = field(metadata=key(section(AuditConfig), {}))
    tracing: TracingConfig = field(metadata=key(section(TracingConfig), {}))
    pages: PagesConfig = field(metadata=key(section(PagesConfig), {}))
    keys: KeysConfig = field(metadata=key(section(KeysConfig, _check_keys), {}))
    # `[[resource]]` as written; empty when the file uses the `[upstream]` shorthand
    resource: tuple[ResourceConfig, ...] = field(metadata=key(resource_tables, []))
    # `[[trusted_issuer]]`: whose JWTs the JWT bearer grant accepts (config/issuers.py)
    trusted_issuer: tuple[TrustedIssuerConfig, ...] = field(metadata=key(trusted_issuer_tables, []))
    # Derived (not keys): every resource, the shorthand's included, `oauth.scopes` filled
    # in where a table has no `scopes`; and every scope some resource offers.
    resources: tuple[ResourceConfig, ...] = field(init=False, repr=False, compare=False)
    scopes_supported: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        oauth = self.oauth
        if self.resource:
            resources = tuple(
                r if r.scopes else replace(r, scopes=oauth.scopes) for r in self.resource
            )
        else:
            shorthand = ResourceConfig(
                SHORTHAND_PATH, oauth.resource_name, self.upstream, oauth.scopes
            )
            resources = (shorthand,)
        offered: dict[str, None] = {}
        for resource in resources:
            offered.update(dict.fromkeys(resource.scopes))
        object.__setattr__(self, "resources", resources)
        object.__setattr__(self, "scopes_supported", tuple(offered))

    @property
    def default_resource(self) -> ResourceConfig:
        """The resource of a request that names none (`oauth.default_resource`)."""
        wanted = self.oauth.default_resource
        return (self.resource_named(wanted) if wanted else None) or self.resources[0]

    def resource_named(self, path_or_uri: str) -> ResourceConfig | None:
        """The resource at `path_or_uri`: its path, or the issuer followed by it."""
        issuer = self.server.issuer
        path = path_or_uri[len(issuer) :] if path_or_uri.startswith(issuer) else path_or_uri
        return next((r for r in self.resources if r.path == path), None)
