"""`[[resource]]`: the MCP servers oauthd fronts, each at a path of its own, with its own
upstream (every key `[upstream]` has), the scopes it offers, the scopes every call needs
and its ordered policy rules (`[[resource.rule]]`).

`[upstream]` alone (the first round's form) is one resource at `/mcp`, named
`oauth.resource_name`, offering `oauth.scopes`, with no rules; the two forms do not mix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from oauthd.config import convert as to
from oauthd.config.schema import At, ConfigError, build, key, show
from oauthd.config.secret_refs import secret_ref
from oauthd.model import PRINCIPAL_SERVICE, PRINCIPAL_USER

PRINCIPAL_KINDS = (PRINCIPAL_USER, PRINCIPAL_SERVICE)

SHORTHAND_PATH = "/mcp"
# Paths oauthd serves itself: a resource there would hide a route (or be hidden by one).
RESERVED_PATHS = (
    "/authorize",
    "/token",
    "/register",
    "/revoke",
    "/introspect",
    "/device",
    "/login",
    "/consent",
    "/account",
    "/upgrade",
    "/forward-auth",
    "/metrics",
    "/healthz",
    "/readyz",
    "/static",
    "/.well-known",
    "/oauth",
)
_PATH = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+")


def _path(value: object, at: At) -> str:
    text = to.string(value, at)
    if not _PATH.fullmatch(text):
        raise at.error(
            f'expected a path like "/files/mcp" (no query, no trailing "/"), got {show(text)}'
        )
    for reserved in RESERVED_PATHS:
        if text == reserved or text.startswith(reserved + "/"):
            raise at.error(f"{show(text)} is under {reserved}, which oauthd serves itself")
    return text


def _names(value: object, at: At) -> tuple[str, ...]:
    """A glob or an array of globs."""
    return to.words([value] if isinstance(value, str) else value, at)


def _optional_words(value: object, at: At) -> tuple[str, ...] | None:
    return None if value is None else to.words(value, at)


def _principals(value: object, at: At) -> tuple[str, ...] | None:
    kinds = _optional_words(value, at)
    for kind in kinds or ():
        if kind not in PRINCIPAL_KINDS:
            raise at.error(f"{show(kind)} is not a principal kind (one of: user, service)")
    return kinds


def _non_empty(value: object, at: At) -> str:
    text = to.string(value, at)
    if not text.strip():
        raise at.error("must not be empty")
    return text


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str = field(metadata=key(to.http_url, "http://127.0.0.1:9000/mcp"))
    connect_timeout: float = field(metadata=key(to.duration, "5s"))
    read_timeout: float = field(metadata=key(to.duration, "300s"))
    max_connections: int = field(metadata=key(to.positive_int, 100))
    max_request_bytes: int = field(metadata=key(to.positive_int, 4 * 1024 * 1024))
    required_scopes: tuple[str, ...] = field(metadata=key(to.words, ["mcp"]))
    allowed_origins: tuple[str, ...] = field(metadata=key(to.origins, []))
    user_header: str = field(metadata=key(to.header_name, "X-Forwarded-User"))
    client_header: str = field(metadata=key(to.header_name, "X-Forwarded-Client-Id"))
    scopes_header: str = field(metadata=key(to.header_name, "X-Forwarded-Scopes"))
    forward_idp_token: bool = field(metadata=key(to.boolean, False))
    idp_token_header: str = field(metadata=key(to.header_name, "X-Forwarded-Access-Token"))
    authorization: str = field(metadata=key(secret_ref, ""))
    # "user" or "service": who the caller is (oauthd.model.PRINCIPAL_*)
    principal_header: str = field(metadata=key(to.header_name, "X-Forwarded-Principal"))
    # a JWT signed by oauthd's active key (docs/signed-identity.md) on every request
    signed_identity: bool = field(metadata=key(to.boolean, False))
    signed_identity_header: str = field(metadata=key(to.header_name, "X-Oauthd-Identity"))
    # "jwt": access tokens for this resource are RFC 9068 JWTs signed by oauthd's keys
    access_token_format: str = field(metadata=key(to.choice(("opaque", "jwt")), "opaque"))


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One `[[resource.rule]]`; oauthd.policy.Rule is built from it."""

    id: str = field(metadata=key(_non_empty))
    method: str = field(metadata=key(_non_empty, "*"))
    name: tuple[str, ...] = field(metadata=key(_names, []))  # empty: any name
    require_scopes: tuple[str, ...] = field(metadata=key(to.words, []))
    # None: no condition; else the caller must be one of these
    users: tuple[str, ...] | None = field(metadata=key(_optional_words, None))
    groups: tuple[str, ...] | None = field(metadata=key(_optional_words, None))
    clients: tuple[str, ...] | None = field(metadata=key(_optional_words, None))
    effect: str = field(metadata=key(to.choice(("allow", "deny")), "allow"))
    message: str = field(metadata=key(to.string, ""))
    # "user": a person (also an enterprise user through an ID-JAG); "service": a client or
    # workload acting for itself (client credentials, workload identity)
    principals: tuple[str, ...] | None = field(default=None, metadata=key(_principals, None))


@dataclass(frozen=True, slots=True)
class ResourceConfig:
    """One MCP server behind oauthd. Its RFC 8707 resource identifier is the issuer
    followed by `path`."""

    path: str
    name: str
    upstream: UpstreamConfig
    scopes: tuple[str, ...]  # what it offers; empty in a table: `oauth.scopes`
    rules: tuple[RuleConfig, ...] = ()

    @property
    def required_scopes(self) -> tuple[str, ...]:
        return self.upstream.required_scopes

    def uri(self, issuer: str) -> str:
        return issuer + self.path


@dataclass(frozen=True, slots=True)
class _ResourceKeys:
    """The keys of a `[[resource]]` table that `[upstream]` does not have."""

    path: str = field(metadata=key(_path))
    name: str = field(metadata=key(to.string, ""))
    scopes: tuple[str, ...] = field(metadata=key(to.words, []))
    rule: tuple[RuleConfig, ...] = field(metadata=key(lambda v, at: _rules(v, at), []))


def _rules(value: object, at: At) -> tuple[RuleConfig, ...]:
    if not isinstance(value, list):
        raise at.error(f"expected an array of tables ([[resource.rule]]), got {show(value)}")
    rules = tuple(build(RuleConfig, item, at.item(i)) for i, item in enumerate(value))
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if rule.id in seen:
            first = at.item(seen[rule.id]).key("id").path
            raise at.item(i).key("id").error(f"duplicate rule id {show(rule.id)}, already {first}")
        seen[rule.id] = i
    return rules


def resource_tables(value: object, at: At) -> tuple[ResourceConfig, ...]:
    """The `[[resource]]` array of tables."""
    if not isinstance(value, list):
        raise at.error(f"expected an array of tables ([[resource]]), got {show(value)}")
    own = {f.name for f in fields(_ResourceKeys)}
    resources: list[ResourceConfig] = []
    errors: list[str] = []
    for i, table in enumerate(value):
        where = at.item(i)
        if not isinstance(table, dict):
            errors.append(str(where.error(f"expected a table, got {show(table)}")))
            continue
        try:
            if "url" not in table:
                raise where.key("url").error("missing (this key is required)")
            upstream_keys = {k: v for k, v in table.items() if k not in own}
            upstream_keys.setdefault("required_scopes", [])
            keys = build(_ResourceKeys, {k: v for k, v in table.items() if k in own}, where)
            upstream = build(UpstreamConfig, upstream_keys, where)
            resources.append(
                ResourceConfig(keys.path, keys.name or keys.path, upstream, keys.scopes, keys.rule)
            )
        except ConfigError as exc:
            errors.extend(exc.messages)
    if errors:
        raise ConfigError(*errors)
    return tuple(resources)


def check_resources(
    resources: tuple[ResourceConfig, ...], offered: tuple[str, ...], at: At
) -> None:
    """Rules over each resource's keys: unique paths, and every scope a resource or rule
    requires is one it offers (`offered`: `oauth.scopes`, for a table without `scopes`)."""
    paths: dict[str, int] = {}
    for i, resource in enumerate(resources):
        where = at.item(i)
        if resource.path in paths:
            first = at.item(paths[resource.path]).key("path").path
            raise where.key("path").error(f"duplicate path {show(resource.path)}, already {first}")
        paths[resource.path] = i
        scopes = resource.scopes or offered
        for scope in resource.required_scopes:
            if scope not in scopes:
                raise where.key("required_scopes").error(
                    f"{show(scope)} is not in this resource's scopes, so no token for it "
                    "could ever carry it"
                )
        for j, rule in enumerate(resource.rules):
            for scope in rule.require_scopes:
                if scope not in scopes:
                    raise (
                        where.key("rule")
                        .item(j)
                        .key("require_scopes")
                        .error(
                            f"{show(scope)} is not in this resource's scopes, so rule "
                            f"{show(rule.id)} could never be met"
                        )
                    )
