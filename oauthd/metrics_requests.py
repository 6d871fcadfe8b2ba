"""The request counts of the HTTP routes and the token endpoint, the read cache's hit
rate, and the event loop's lag (`oauthd.loop_lag`), for `oauthd.metrics.Metrics` (which
holds one of each and is all that code reports to). Labels are bounded: a route is a path
as registered (never a requested one), a grant type one of those oauthd knows or `other`,
a status its class (`2xx`, `4xx`, ...).

No aiohttp here, and no import of a room."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANT_TYPES = frozenset(
    {"authorization_code", "refresh_token", DEVICE_GRANT, "client_credentials", JWT_BEARER}
)
CACHE_RESULTS = ("hit", "miss", "stale_skip")


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def grant_label(grant_type: str | None) -> str:
    """A `grant_type` as a label value: one oauthd knows, else `other` (bounded)."""
    return grant_type if grant_type in GRANT_TYPES else "other"


class RequestCounts:
    """`oauthd_http_requests_total{route, status_class}`: every request a route of
    `http.errors.Routes` answered (the OAuth endpoints, the pages, the metadata, health);
    `oauthd_token_requests_total{grant_type, status_class}`: the token endpoint's, by grant
    type. The route counter is a plain dict of counts (only the event loop touches it),
    turned into a family when scraped, like `metrics_loop.LoopCounter`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._routes: dict[tuple[str, int], list[int]] = {}
        self._tokens = Counter(
            "oauthd_token_requests",
            "Requests the token endpoint answered, by grant type (other: one oauthd does not "
            "know) and status class.",
            ["grant_type", "status_class"],
            registry=registry,
        )
        registry.register(self)

    def route(self, route: str, status: int) -> None:
        found = self._routes.get((route, status))
        if found is None:
            found = self._routes[(route, status)] = [0]
        found[0] += 1

    def token(self, grant_type: str | None, status: int) -> None:
        self._tokens.labels(grant_label(grant_type), status_class(status)).inc()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        by_class: dict[tuple[str, str], int] = {}
        for (route, status), count in self._routes.items():
            key = (route, status_class(status))
            by_class[key] = by_class.get(key, 0) + count[0]
        for labels, total in by_class.items():
            family.add_metric(list(labels), total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "oauthd_http_requests",
            "Requests answered by oauthd's own routes (the OAuth endpoints, pages, metadata, "
            "health; not the MCP resources', see oauthd_proxy_request_duration_seconds), by "
            "route as registered and status class.",
            labels=["route", "status_class"],
        )


class CacheCounts(Protocol):
    """The read cache of a shared backend (`store.cache.ReadCache`), as the metrics see it."""

    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def stale_skips(self) -> int: ...


class CacheRequests:
    """`oauthd_store_cache_requests_total{result}`, read from the cache's own counts when
    scraped: hit (served from memory), miss (read from the backend, then kept), stale_skip
    (read from the backend: the invalidation listener was not fresh). No samples without a
    cache (the file and memory backends, `storage.cache_size = 0`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.source: CacheCounts | None = None
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        source = self.source
        if source is not None:
            for result, count in zip(
                CACHE_RESULTS, (source.hits, source.misses, source.stale_skips), strict=True
            ):
                family.add_metric([result], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "oauthd_store_cache_requests",
            "Reads of grants and MCP session bindings by the read cache of a shared backend "
            "(redis, postgres), by result: hit, miss (went to the backend), stale_skip (went "
            "to the backend: the invalidation listener was not fresh).",
            labels=["result"],
        )


def loop_lag_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "oauthd_event_loop_lag_seconds",
        "The longest the event loop was late for a 100 ms timer in the last 10 s window: "
        "how long one callback or garbage collection held every request.",
        registry=registry,
    )
