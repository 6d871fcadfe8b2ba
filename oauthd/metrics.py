"""Prometheus metrics: one `Metrics` per app, with a registry of its own (never the global
one, so that a test can build many apps).

Code reports events through the methods (`login("success")`, `token_refreshed()`, ...) and
never touches a prometheus object. Values that exist only when asked (records per kind,
snapshot age) are read by `render()`, the text `/metrics` serves (`oauthd.http.metrics`).
The persistence engine reports fsyncs and snapshot writes through `journal_fsynced` and
`snapshot_written` (its `EngineObserver`), so `oauthd.persist` knows nothing of this.

No aiohttp here, and no import of a room: oauth/, proxy/, store/ and http/ may import this.
"""

from __future__ import annotations

import platform
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    GaugeMetricFamily,
    Metric,
)

from oauthd import __version__
from oauthd.metrics_census import Census, RecordSource
from oauthd.metrics_loop import LoopCounter, LoopHistogram
from oauthd.metrics_requests import (
    DEVICE_GRANT,
    CacheCounts,
    CacheRequests,
    RequestCounts,
    loop_lag_gauge,
    status_class,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what `generate_latest` writes

LOGIN_RESULTS = ("success", "failure", "rate_limited")
CLIENT_REMOVAL_REASONS = ("unused_per_app", "idle")
ISSUING_GRANTS = ("authorization_code", DEVICE_GRANT, "client_credentials")
REVOCABLE = ("access_token", "refresh_token", "grant")
REUSABLE = ("refresh_token", "authorization_code")
UPSTREAM_ERRORS = ("connect", "timeout", "reset", "tls", "protocol", "stream_cut", "other")
PROXY_METHODS = frozenset({"GET", "POST", "DELETE", "OPTIONS"})

PROXY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SNAPSHOT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall = wall_clock
        self._census: Census | None = None
        self._record_counts: dict[str, int] = {}
        self._last_snapshot_at: float | None = None
        self.registry = r = CollectorRegistry()
        Gauge("oauthd_up", "1 while oauthd answers scrapes.", registry=r).set(1)
        Info("oauthd_build", "The running oauthd and Python versions.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        # The families in the order `render()` lists them.
        self._register_protocol(r)
        self._register_assertions(r)
        self._register_persistence(r)
        self._register_proxy(r)
        self._register_requests(r)
        self._register_refusals(r)
        r.register(_ScrapeTimeCollector(self))

    def _register_protocol(self, r: CollectorRegistry) -> None:
        self._logins = Counter(
            "oauthd_logins",
            "Sign-ins on the login page or at the identity provider, by result "
            "(success, failure: wrong password or refused by the provider, rate_limited).",
            ["result"],
            registry=r,
        )
        self._issued = Counter(
            "oauthd_tokens_issued",
            "New grants, by grant type, resource (its path) and principal (user, service).",
            ["grant_type", "resource", "principal"],
            registry=r,
        )
        self._refreshed = Counter(
            "oauthd_tokens_refreshed",
            "Refresh token rotations that issued a new token pair, by resource (its path).",
            ["resource"],
            registry=r,
        )
        self._refreshed_children: dict[str, Counter] = {}
        self._revoked = Counter(
            "oauthd_tokens_revoked",
            "Revocations that took effect, by what was revoked: access_token or refresh_token "
            "at /revoke (RFC 7009), grant: a whole grant ended by its user or an admin; and "
            "by resource (its path).",
            ["token_type", "resource"],
            registry=r,
        )
        self._reuse = Counter(
            "oauthd_reuse_detected",
            "Replays of a used refresh token or authorization code; each one revoked the "
            "grant it belonged to.",
            ["token_type"],
            registry=r,
        )
        self._registrations = Counter(
            "oauthd_client_registrations",
            "Clients registered through dynamic client registration (RFC 7591).",
            registry=r,
        )
        self._clients_removed = Counter(
            "oauthd_clients_removed",
            "Registrations removed by the registry's hygiene rules, by reason "
            "(unused_per_app: pushed off the app's never-used ones; idle: no use, no grant).",
            ["reason"],
            registry=r,
        )
        for reason in CLIENT_REMOVAL_REASONS:
            self._clients_removed.labels(reason)
        for result in LOGIN_RESULTS:
            self._logins.labels(result)
        for token_type in REUSABLE:
            self._reuse.labels(token_type)

    def _register_assertions(self, r: CollectorRegistry) -> None:
        self._assertions_refused = Counter(
            "oauthd_assertions_refused",
            "Client assertions (private_key_jwt), workload tokens and ID-JAGs refused, by "
            "kind and reason (bad_signature, expired, replayed_jti, ...: Refusal).",
            ["kind", "reason"],
            registry=r,
        )

    def _register_persistence(self, r: CollectorRegistry) -> None:
        self._snapshot_seconds = Histogram(
            "oauthd_snapshot_duration_seconds",
            "Time to write one state snapshot, from the scan to the rename.",
            buckets=SNAPSHOT_BUCKETS,
            registry=r,
        )
        self._fsync_seconds = Histogram(
            "oauthd_journal_fsync_seconds",
            "Time of one journal write and fdatasync (one group commit of one or more changes).",
            buckets=FSYNC_BUCKETS,
            registry=r,
        )
        self._journaled = Counter(
            "oauthd_journal_records",
            "Changes made durable in the journal.",
            registry=r,
        )
        self._snapshot_failures = Counter(
            "oauthd_snapshot_failures",
            "Snapshot writes that failed (with the journal working: degraded, still ready).",
            registry=r,
        )
        self._snapshot_failing = Gauge(
            "oauthd_snapshot_failing",
            "1 while the last snapshot write failed, 0 once one succeeds.",
            registry=r,
        )

    def _register_proxy(self, r: CollectorRegistry) -> None:
        self._proxy_seconds = LoopHistogram(
            "oauthd_proxy_request_duration_seconds",
            "Time from a /mcp request's arrival until oauthd sends the response headers "
            "(for a stream: not its whole life), by method and status class.",
            ("method", "status_class"),
            PROXY_BUCKETS,
        )
        r.register(self._proxy_seconds)
        self._proxy_series: dict[tuple[str, int], list[float]] = {}
        self._upstream_errors = Counter(
            "oauthd_upstream_errors",
            "Proxied requests that failed at the upstream MCP server, by kind (connect, "
            "timeout, reset, tls, protocol, stream_cut: the answer broke off, other).",
            ["kind"],
            registry=r,
        )
        for kind in UPSTREAM_ERRORS:
            self._upstream_errors.labels(kind)
        self._slot_waits = Histogram(
            "oauthd_proxy_slot_wait_seconds",
            "Time a /mcp call waited for a free local upstream slot (upstream.max_connections;"
            " only calls that had to wait), by outcome (acquired, refused: answered 503).",
            ["outcome"],
            buckets=PROXY_BUCKETS,
            registry=r,
        )
        for outcome in ("acquired", "refused"):
            self._slot_waits.labels(outcome)
        self._policy_decisions = LoopCounter(
            "oauthd_policy_decisions",
            "Calls decided by a resource's policy rules (resources without rules decide "
            "nothing), by resource path and outcome (allow, deny, step_up).",
            ("resource", "outcome"),
        )
        r.register(self._policy_decisions)

    def _register_requests(self, r: CollectorRegistry) -> None:
        """Requests by route and by grant type, the read cache, the process (and no
        `*_created` series: their values are the process's start, which this says)."""
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide
        self._requests = RequestCounts(r)
        self._cache = CacheRequests(r)
        self.loop_lag = loop_lag_gauge(r).set  # oauthd.loop_lag reports each window
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def _register_refusals(self, r: CollectorRegistry) -> None:
        self._refusals = Counter(
            "oauthd_refusals",
            "Refusals (every invalid_grant, 401 and 403, and the other OAuth errors), by "
            "endpoint (token, mcp, ...: bounded), error and reason code (docs/audit.md).",
            ["endpoint", "error", "reason"],
            registry=r,
        )

    def refusal(self, endpoint: str, error: str, reason: str) -> None:
        """`endpoint`: a route's name or a resource's path (bounded); `reason`: a code of
        `oauthd.audit.reasons` (a policy rule's id is configuration: bounded)."""
        self._refusals.labels(endpoint, error, reason).inc()

    # -- events: the protocol --------------------------------------------------------------

    def login(self, result: str) -> None:
        self._logins.labels(result).inc()

    def know_resources(self, paths: Iterable[str]) -> None:
        """Show the token counters of these resources (their paths: the `resource` label's
        only values, so that it stays bounded) at 0 before their first event."""
        for path in paths:
            for grant_type in ISSUING_GRANTS:
                principal = "service" if grant_type == "client_credentials" else "user"
                self._issued.labels(grant_type, path, principal)
            self._refreshed.labels(path)
            for token_type in REVOCABLE:
                self._revoked.labels(token_type, path)

    def token_issued(self, grant_type: str, resource: str, principal: str = "user") -> None:
        """`principal`: "user" | "service" (`Grant.principal`)."""
        self._issued.labels(grant_type, resource, principal).inc()

    def token_refreshed(self, resource: str) -> None:
        # the child looked up once per resource (a configured path: bounded), not per refresh
        child = self._refreshed_children.get(resource)
        if child is None:
            child = self._refreshed_children[resource] = self._refreshed.labels(resource)
        child.inc()

    def token_revoked(self, token_type: str, resource: str) -> None:
        self._revoked.labels(token_type, resource).inc()

    def reuse_detected(self, token_type: str) -> None:
        self._reuse.labels(token_type).inc()

    def assertion_refused(self, kind: str, reason: str) -> None:
        """`kind`: "client_assertion" | "workload" | "id_jag"; `reason`: a `Refusal`."""
        self._assertions_refused.labels(kind, reason).inc()

    def client_registered(self) -> None:
        self._registrations.inc()

    def clients_removed(self, reason: str, count: int = 1) -> None:
        self._clients_removed.labels(reason).inc(count)

    # -- events: the proxy -------------------------------------------------------------------

    def proxy_request(self, method: str, status: int, seconds: float) -> None:
        key = (method, status)
        series = self._proxy_series.get(key)
        if series is None:
            label = method if method in PROXY_METHODS else "other"
            series = self._proxy_seconds.series((label, status_class(status)))
            if method in PROXY_METHODS:  # a bounded cache: not one entry per odd method
                self._proxy_series[key] = series
        series[bisect_left(PROXY_BUCKETS, seconds)] += 1
        series[-1] += seconds

    def slot_wait(self, seconds: float, *, refused: bool) -> None:
        self._slot_waits.labels("refused" if refused else "acquired").observe(seconds)

    def policy_decisions(self, resource: str) -> dict[str, list[int]]:
        """outcome (allow, deny, step_up) -> the counter of `resource`'s decisions (a
        configured path: bounded) to increment, `[0] += 1`: looked up once, since the
        proxy counts every call of a resource with rules."""
        return {
            outcome: self._policy_decisions.series((resource, outcome))
            for outcome in ("allow", "deny", "step_up")
        }

    def upstream_error(self, kind: str) -> None:
        self._upstream_errors.labels(kind if kind in UPSTREAM_ERRORS else "other").inc()

    # -- events: HTTP requests ---------------------------------------------------------------

    def http_request(self, route: str, status: int) -> None:
        """A request to `route` (as registered) answered with `status`."""
        self._requests.route(route, status)

    def token_request(self, grant_type: str | None, status: int) -> None:
        self._requests.token(grant_type, status)

    def watch_cache(self, cache: CacheCounts | None) -> None:
        """Expose `cache`'s hits and misses at each scrape (None: no cache)."""
        self._cache.source = cache

    # -- events: persistence (the engine's `EngineObserver`) ----------------------------------

    def journal_fsynced(self, seconds: float, records: int) -> None:
        self._fsync_seconds.observe(seconds)
        self._journaled.inc(records)

    def snapshot_written(self, saved_at: float, seconds: float, size: int) -> None:
        self._snapshot_seconds.observe(seconds)
        self._last_snapshot_at = saved_at
        self._snapshot_failing.set(0)

    def snapshot_failed(self) -> None:
        self._snapshot_failures.inc()
        self._snapshot_failing.set(1)

    # -- scraping ------------------------------------------------------------------------------

    async def watch_records(self, source: RecordSource | None) -> None:
        """Count `source`'s records per kind for `render()` (`Census`; None: stop)."""
        if self._census is not None:
            await self._census.close()
        self._census = Census(source) if source is not None else None
        self._record_counts = {}

    async def record_counts(self) -> dict[str, int]:
        """Records per kind, as fresh as the census allows (empty before the first)."""
        if self._census is not None:
            self._record_counts = await self._census.read()
        return self._record_counts

    @property
    def record_counts_failing(self) -> bool:
        """The last census failed (the backend is down): the counts are older."""
        return self._census is not None and self._census.failing

    async def render(self) -> bytes:
        """The Prometheus text exposition, with the scrape-time values read now."""
        await self.record_counts()
        return generate_latest(self.registry)

    def _scrape_time_families(self) -> Iterator[Metric]:
        records = GaugeMetricFamily(
            "oauthd_records",
            "Records in the store, by kind (expired ones not yet purged included).",
            labels=["kind"],
        )
        for kind, count in self._record_counts.items():
            records.add_metric([kind], count)
        yield records
        age = GaugeMetricFamily(
            "oauthd_snapshot_age_seconds",
            "Seconds since this process last wrote a snapshot (absent before its first).",
        )
        if self._last_snapshot_at is not None:
            age.add_metric([], max(0.0, self._wall() - self._last_snapshot_at))
        yield age


class _ScrapeTimeCollector:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._scrape_time_families()

    def describe(self) -> Iterator[Metric]:
        return self._metrics._scrape_time_families()
