"""oauthd/metrics_requests.py: requests by route and by grant type (bounded labels), and
the read cache's hits and misses, as a scrape shows them."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import generate_latest

from oauthd.metrics import Metrics
from oauthd.metrics_requests import grant_label

DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class FakeCache:
    hits: int = 0
    misses: int = 0
    stale_skips: int = 0


def scraped(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_routes_are_counted_by_status_class() -> None:
    metrics = Metrics()
    for status in (200, 201, 302, 400, 401, 503):
        metrics.http_request("/register", status)
    metrics.http_request("/token", 200)
    text = scraped(metrics)
    assert 'oauthd_http_requests_total{route="/register",status_class="2xx"} 2.0' in text
    assert 'oauthd_http_requests_total{route="/register",status_class="3xx"} 1.0' in text
    assert 'oauthd_http_requests_total{route="/register",status_class="4xx"} 2.0' in text
    assert 'oauthd_http_requests_total{route="/register",status_class="5xx"} 1.0' in text
    assert 'oauthd_http_requests_total{route="/token",status_class="2xx"} 1.0' in text


def test_grant_types_are_bounded() -> None:
    assert grant_label("refresh_token") == "refresh_token"
    assert grant_label(DEVICE) == DEVICE
    assert grant_label("urn:made:up") == grant_label(None) == grant_label("") == "other"
    metrics = Metrics()
    metrics.token_request("urn:made:up", 400)
    metrics.token_request("authorization_code", 200)
    text = scraped(metrics)
    assert 'oauthd_token_requests_total{grant_type="other",status_class="4xx"} 1.0' in text
    assert (
        'oauthd_token_requests_total{grant_type="authorization_code",status_class="2xx"} 1.0'
        in text
    )
    assert "urn:made:up" not in text and "_created" not in text


def test_the_read_cache_counts_are_read_when_scraped() -> None:
    metrics = Metrics()
    assert "oauthd_store_cache_requests_total{" not in scraped(metrics)  # no cache: no samples
    cache = FakeCache()
    metrics.watch_cache(cache)
    cache.hits, cache.misses, cache.stale_skips = 90, 9, 1
    text = scraped(metrics)
    assert 'oauthd_store_cache_requests_total{result="hit"} 90.0' in text
    assert 'oauthd_store_cache_requests_total{result="miss"} 9.0' in text
    assert 'oauthd_store_cache_requests_total{result="stale_skip"} 1.0' in text
    metrics.watch_cache(None)
    assert "oauthd_store_cache_requests_total{" not in scraped(metrics)


def test_process_metrics_on_the_apps_own_registry() -> None:
    text = scraped(Metrics())
    assert "\nprocess_resident_memory_bytes " in text
    assert "\nprocess_open_fds " in text
    assert "python_info{" in text
