"""The protected resources as the authorization server sees them: RFC 8707 targets.

Every `[[resource]]` (or the `[upstream]` shorthand at `/mcp`) is a target; its
identifier is the issuer followed by its path. A request that names none gets
`config.default_resource` (`[oauth] default_resource`, else the first). Requested scopes are
those that resource offers (`ResourceConfig.scopes`), and of those, the ones the client
registered.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from oauthd.config import Config, ResourceConfig
from oauthd.model import Client


def canonical_resource(value: str) -> str:
    """Case-insensitive scheme and host, no trailing slash (a fragment is kept, so that a
    resource with one never matches: RFC 8707 s2 forbids it)."""
    parts = urlsplit(value)
    path = parts.path.rstrip("/")
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), path, parts.query, parts.fragment)
    )


class UnknownTarget(ValueError):
    """A `resource` parameter that names no configured resource (`invalid_target`)."""


class Targets:
    """The configured resources by their canonical identifiers."""

    def __init__(self, config: Config) -> None:
        self.issuer = config.server.issuer
        self._by_identifier = {canonical_resource(r.uri(self.issuer)): r for r in config.resources}
        self.default = config.default_resource

    def identifier(self, resource: ResourceConfig) -> str:
        """What tokens are bound to (`Grant.resource`): issuer + path, as the proxy's gate
        asks for it."""
        return resource.uri(self.issuer)

    def named(self, requested: str | None) -> ResourceConfig:
        """The resource a request's `resource` parameter names (None: the default one);
        `UnknownTarget` saying which ones exist when it names none."""
        if requested is None:
            return self.default
        found = self._by_identifier.get(canonical_resource(requested))
        if found is None:
            known = ", ".join(self.identifier(r) for r in self._by_identifier.values())
            raise UnknownTarget(f"unknown resource; this server protects {known}")
        return found

    def of(self, identifier: str) -> ResourceConfig | None:
        """The configured resource a grant (or code) is bound to; None if it is gone."""
        # A grant's identifier is stored canonical: found as it is, without parsing the URL
        # again (this runs for each refresh's record and count)
        found = self._by_identifier.get(identifier)
        return (
            found if found is not None else self._by_identifier.get(canonical_resource(identifier))
        )

    def path_of(self, identifier: str) -> str:
        """The path part of a resource identifier (what a `Consent` names), also for a
        resource no longer configured."""
        resource = self.of(identifier)
        if resource is not None:
            return resource.path
        issuer = self.issuer
        return identifier[len(issuer) :] if identifier.startswith(issuer) else identifier

    def label_of(self, identifier: str) -> str:
        """A metric label and log field for a resource: its path when it is configured,
        "other" otherwise (a grant of a resource removed since), so that labels stay
        bounded by the configuration."""
        resource = self.of(identifier)
        return resource.path if resource is not None else "other"

    def name_of(self, identifier: str) -> str:
        """What a person is shown for a resource: its `name` (its path if it is gone)."""
        resource = self.of(identifier)
        return resource.name if resource is not None else self.path_of(identifier)


def requested_scopes(
    client: Client, resource: ResourceConfig, scope: str | None
) -> tuple[str, ...]:
    """The scopes a request asks of `resource` for `client`: with no `scope`, every scope
    the client registered that the resource offers (none of them: the resource's
    `required_scopes`, else all it offers); else each one asked, which must be offered by
    the resource. `ValueError` naming the first scope that is not.

    A registered `scope` is a default, not a limit: clients register themselves (RFC
    7591) with the scopes they knew of at the time, and MCP clients step up later to
    scopes a 403 challenge names (the official SDKs keep their registration); the person
    consents to every scope either way."""
    allowed = client.scope.split()
    if scope is None or not scope.strip():
        granted = tuple(s for s in allowed if s in resource.scopes)
        # registered for another resource only: what every call here needs, else all
        needed = tuple(s for s in resource.required_scopes if s in resource.scopes)
        return granted or needed or resource.scopes
    wanted = tuple(dict.fromkeys(scope.split()))
    for name in wanted:
        if name not in resource.scopes:
            raise ValueError(f"scope {name!r} is not offered by {resource.name} ({resource.path})")
    return wanted
