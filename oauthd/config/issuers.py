"""`[[trusted_issuer]]`: the parties whose signed JWTs the JWT bearer grant (RFC 7523 s2.1)
accepts. A `kind = "workload"` issuer is a platform that vouches for a machine (a
Kubernetes cluster's service-account tokens, a SPIFFE trust domain's JWT-SVIDs, a cloud's
identity tokens): its subjects map to service principals through `[[trusted_issuer.subject]]`.
A `kind = "enterprise"` issuer is an enterprise IdP that issues Identity Assertion JWT
Authorization Grants (ID-JAG, SEP-990) for its people, who are linked to users of ours.

Keys come from exactly one place: `jwks_uri`, `jwks_file` (read and checked when the
config loads) or `discovery = true` (the issuer's OpenID configuration names the
`jwks_uri`). The rules over several keys (and over the resources and scopes the rest of
the file declares) are `check_issuers`, so `oauthd check-config` reports them with the
table's index and key.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from oauthd.config import convert as to
from oauthd.config.schema import At, ConfigError, build, key, show

WORKLOAD = "workload"
ENTERPRISE = "enterprise"
MAX_JWKS_FILE = 64 * 1024
DEFAULT_USER_TEMPLATE = "{sub}@{host}"
_TEMPLATE_FIELDS = ("{sub}", "{host}", "{email}")


@dataclass(frozen=True, slots=True)
class SubjectRule:
    """`[[trusted_issuer.subject]]`: a `sub` glob (fnmatch: `*`, `?`, `[...]`) and the
    service principal it maps to. The first matching rule wins."""

    match: str = field(metadata=key(to.string))
    principal: str = field(metadata=key(to.username))

    def matches(self, subject: str) -> bool:
        return fnmatch.fnmatchcase(subject, self.match)


@dataclass(frozen=True, slots=True)
class JwksFile:
    """A JWKS read from a file when the config loaded."""

    path: Path
    document: str = field(repr=False)  # the JSON text, checked to hold signing keys


def _jwks_file(value: object, at: At) -> JwksFile | None:
    text = to.string(value, at)
    if not text:
        return None
    path = to.path(text, at)
    try:
        data = path.read_bytes()[: MAX_JWKS_FILE + 1]
    except OSError as exc:
        raise at.error(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_JWKS_FILE:
        raise at.error(f"{path} is larger than {MAX_JWKS_FILE} bytes")
    try:
        document = orjson.loads(data)
        keys = KeySet.import_key_set(document)
    except (orjson.JSONDecodeError, JoseError, ValueError, TypeError, KeyError) as exc:
        raise at.error(f"{path} is not a JWKS document ({type(exc).__name__})") from None
    if not keys.keys:
        raise at.error(f"{path} holds no key")
    return JwksFile(path, data.decode())


def _subjects(value: object, at: At) -> tuple[SubjectRule, ...]:
    if not isinstance(value, list):
        raise at.error(
            f"expected an array of tables ([[trusted_issuer.subject]]), got {show(value)}"
        )
    return tuple(build(SubjectRule, item, at.item(i)) for i, item in enumerate(value))


def _template(value: object, at: At) -> str:
    text = to.string(value, at)
    if text and "{sub}" not in text and "{email}" not in text:
        raise at.error('must contain "{sub}" (or "{email}"), or be "" for no new users')
    rest = text
    for name in _TEMPLATE_FIELDS:
        rest = rest.replace(name, "")
    if "{" in rest or "}" in rest:
        raise at.error(f"may use only {', '.join(_TEMPLATE_FIELDS)}, got {show(text)}")
    return text


def _optional_bool(value: object, at: At) -> bool | None:
    return None if value == "" else to.boolean(value, at)


@dataclass(frozen=True, slots=True)
class TrustedIssuerConfig:
    issuer: str = field(metadata=key(to.http_url))  # compared exactly with `iss`
    kind: str = field(metadata=key(to.choice((WORKLOAD, ENTERPRISE))))
    jwks_uri: str = field(metadata=key(to.optional_url, ""))
    jwks_file: JwksFile | None = field(metadata=key(_jwks_file, ""))
    discovery: bool = field(metadata=key(to.boolean, False))
    # the `aud` expected (one of them); empty: oauthd's issuer
    audience: tuple[str, ...] = field(metadata=key(to.words, []))
    # the resources (paths or identifiers) its assertions may get tokens for; empty: all
    resources: tuple[str, ...] = field(metadata=key(to.words, []))
    # the scopes its assertions may get; empty: what the resource offers
    scopes: tuple[str, ...] = field(metadata=key(to.words, []))
    max_lifetime: float = field(metadata=key(to.duration, "1h"))
    # "" : false for workloads (platform tokens are reused for their life), true for
    # enterprise ID-JAGs (which must be single use: SEP-990)
    require_jti: bool | None = field(metadata=key(_optional_bool, ""))
    jwks_hosts: tuple[str, ...] = field(metadata=key(to.words, []))
    subject: tuple[SubjectRule, ...] = field(metadata=key(_subjects, []))  # workload
    user_template: str = field(metadata=key(_template, DEFAULT_USER_TEMPLATE))  # enterprise
    link_by_email: bool = field(metadata=key(to.boolean, False))  # enterprise

    @property
    def jti_required(self) -> bool:
        return self.kind == ENTERPRISE if self.require_jti is None else self.require_jti

    @property
    def key_hosts(self) -> tuple[str, ...]:
        """The hosts the key fetcher may use for this issuer."""
        hosts = list(self.jwks_hosts)
        if self.jwks_uri:
            hosts.append(urlsplit(self.jwks_uri).hostname or "")
        if self.discovery:
            hosts.append(urlsplit(self.issuer).hostname or "")
        return tuple(h.lower() for h in hosts if h)

    def principal_of(self, subject: str) -> str | None:
        """The service principal a workload subject maps to; None if no rule matches."""
        return next((r.principal for r in self.subject if r.matches(subject)), None)


def _fetchable(url: str) -> bool:
    parts = urlsplit(url)
    loopback = (parts.hostname or "") in ("127.0.0.1", "::1", "localhost")
    return parts.scheme == "https" or (parts.scheme == "http" and loopback)


def trusted_issuer_tables(value: object, at: At) -> tuple[TrustedIssuerConfig, ...]:
    """The `[[trusted_issuer]]` array of tables, each checked on its own keys."""
    if not isinstance(value, list):
        raise at.error(f"expected an array of tables ([[trusted_issuer]]), got {show(value)}")
    issuers: list[TrustedIssuerConfig] = []
    errors: list[str] = []
    for i, table in enumerate(value):
        try:
            issuers.append(build(TrustedIssuerConfig, table, at.item(i), _check_issuer))
        except ConfigError as exc:
            errors.extend(exc.messages)
    if errors:
        raise ConfigError(*errors)
    return tuple(issuers)


def _check_issuer(issuer: TrustedIssuerConfig, at: At) -> None:
    sources = [n for n in ("jwks_uri", "jwks_file", "discovery") if getattr(issuer, n)]
    if len(sources) != 1:
        raise at.error(
            "say where the issuer's keys are with exactly one of jwks_uri, jwks_file or "
            f"discovery = true (got {', '.join(sources) or 'none'})"
        )
    for name, url in (("jwks_uri", issuer.jwks_uri), ("issuer", issuer.issuer)):
        if (name == "jwks_uri" or issuer.discovery) and url and not _fetchable(url):
            raise at.key(name).error(
                "keys are fetched over https only (http only from a loopback host), "
                f"got {show(url)}"
            )
    if issuer.kind == WORKLOAD and not issuer.subject:
        raise at.key("subject").error(
            "a workload issuer needs at least one [[trusted_issuer.subject]] "
            '(match = "<sub glob>", principal = "<name>"): an unmapped subject is refused'
        )
    if issuer.kind == ENTERPRISE:
        if issuer.subject:
            raise at.key("subject").error(
                "only for workload issuers; enterprise users are linked by user_template"
            )
        if issuer.require_jti is False:
            raise at.key("require_jti").error(
                "an enterprise ID-JAG must be single use (SEP-990): it cannot be false"
            )
        if not issuer.user_template and not issuer.link_by_email:
            raise at.key("user_template").error(
                'is "" (no new users) and link_by_email is false: no one could be linked'
            )


def check_issuers(
    issuers: tuple[TrustedIssuerConfig, ...],
    resource_of: dict[str, tuple[str, ...]],
    at: At,
) -> None:
    """Rules over the whole file: each issuer once; `resources` name configured resources
    (`resource_of`: path or identifier -> the scopes it offers); `scopes` are offered by
    one of them."""
    seen: dict[str, int] = {}
    for i, issuer in enumerate(issuers):
        where = at.item(i)
        if issuer.issuer in seen:
            first = at.item(seen[issuer.issuer]).key("issuer").path
            raise where.key("issuer").error(
                f"duplicate issuer {show(issuer.issuer)}, already {first}"
            )
        seen[issuer.issuer] = i
        offered: set[str] = set()
        for j, name in enumerate(issuer.resources):
            if name not in resource_of:
                raise (
                    where.key("resources")
                    .item(j)
                    .error(f"{show(name)} is no configured resource's path or identifier")
                )
            offered.update(resource_of[name])
        if not issuer.resources:
            offered = {s for scopes in resource_of.values() for s in scopes}
        for scope in issuer.scopes:
            if scope not in offered:
                raise where.key("scopes").error(
                    f"{show(scope)} is offered by none of this issuer's resources"
                )
