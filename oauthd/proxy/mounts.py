"""The resources the proxy serves (`config.resources`), each mounted at its path with its
own gate (bearer for that resource only, its challenges, its origins), identity headers
(its header names, its static `authorization`), relay (its upstream's pool, timeouts,
body limit and `max_connections`) and, when it has rules, its policy step.

What the mounts share lives in `McpProxy`: the MCP session bindings and the open streams,
both by grant, whatever the resource. A grant names its resource by identifier (issuer +
path), which finds the mount whose upstream its MCP sessions live at (`of_grant`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from oauthd.config import Config, ResourceConfig
from oauthd.metrics import Metrics
from oauthd.model import Grant
from oauthd.proxy.authority import Authority
from oauthd.proxy.gate import Gate
from oauthd.proxy.identity import Identity
from oauthd.proxy.policing import Policing, policy_of
from oauthd.proxy.relay import Observe, Relay
from oauthd.proxy.streams import OpenStreams
from oauthd.scopes import ScopeHierarchy
from oauthd.tracing import Tracing


@dataclass(frozen=True, slots=True)
class Mount:
    resource: ResourceConfig
    uri: str  # the RFC 8707 identifier: issuer + path
    gate: Gate
    identity: Identity
    relay: Relay
    policing: Policing | None  # None: no rules, nothing to decide beyond the gate
    max_request_bytes: int


class Mounts:
    def __init__(
        self,
        config: Config,
        auth: Authority,
        metrics: Metrics,
        streams: OpenStreams,
        observe: Observe,
        authorization: Mapping[str, str | None],
        tracing: Tracing | None = None,
    ) -> None:
        """`authorization`: each resource's static upstream `Authorization` value by path
        (`Keyring.upstream_authorization`); `tracing`: the hops' spans, if on."""
        hierarchy = ScopeHierarchy(dict(config.oauth.scope_implies))
        self._by_path: dict[str, Mount] = {}
        for resource in config.resources:
            gate = Gate(config, resource, auth.verify_bearer, auth.bearer_refusal)
            policy = policy_of(resource, hierarchy)
            self._by_path[resource.path] = Mount(
                resource,
                resource.uri(config.server.issuer),
                gate,
                Identity(
                    config,
                    auth.upstream_access_token,
                    authorization.get(resource.path),
                    resource.upstream,
                    auth.identity_assertion,
                ),
                Relay(resource.upstream, metrics, gate.add_cors, observe, streams, tracing),
                None
                if policy is None
                else Policing(config, resource, policy, auth.groups_of, metrics),
                resource.upstream.max_request_bytes,
            )
        self._by_uri = {mount.uri: mount for mount in self._by_path.values()}
        self.default = self._by_path[config.default_resource.path]

    def __iter__(self) -> Iterator[Mount]:
        return iter(self._by_path.values())

    def __len__(self) -> int:
        return len(self._by_path)

    def at(self, path: str) -> Mount | None:
        """The mount at exactly `path`."""
        return self._by_path.get(path)

    def under(self, path: str) -> Mount | None:
        """The mount at `path` or the deepest one above it (`/files/mcp/x` -> `/files/mcp`)."""
        while path:
            mount = self._by_path.get(path)
            if mount is not None:
                return mount
            path = path.rpartition("/")[0]
        return None

    def of_grant(self, grant: Grant) -> Mount | None:
        """The mount of the resource a grant was issued for; None if no resource has that
        identifier now (the configuration changed since)."""
        return self._by_uri.get(grant.resource)
