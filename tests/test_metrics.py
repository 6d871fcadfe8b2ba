"""/metrics: names and values after a scripted run (`tests/support/scripted_run.py`), the
address allow-list, and the pieces (upstream error kinds, a Metrics without a store)."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oauthd.http.metrics import allowed
from oauthd.metrics import CONTENT_TYPE, Metrics
from oauthd.proxy.relay import upstream_error_kind
from tests.support.scripted_run import DEVICE_GRANT, ScriptedApp, scripted_run, start

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

NAMES = (
    "oauthd_up",
    "oauthd_build_info",
    "oauthd_records",
    "oauthd_logins_total",
    "oauthd_tokens_issued_total",
    "oauthd_tokens_refreshed_total",
    "oauthd_tokens_revoked_total",
    "oauthd_reuse_detected_total",
    "oauthd_client_registrations_total",
    "oauthd_snapshot_duration_seconds_count",
    "oauthd_snapshot_age_seconds",
    "oauthd_journal_fsync_seconds_count",
    "oauthd_journal_records_total",
    "oauthd_proxy_request_duration_seconds_count",
    "oauthd_upstream_errors_total",
    "oauthd_http_requests_total",
    "oauthd_token_requests_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "python_info",
)
STANDARD = ("process_", "python_")  # prometheus_client's process and platform collectors


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
async def oauthd(tmp_path: Path) -> AsyncIterator[ScriptedApp]:
    running = await start(tmp_path)
    yield running
    await running.close()


async def scrape(run: ScriptedApp) -> tuple[str, Samples]:
    answer = await run.client.call("GET", "/metrics")
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Type"] == CONTENT_TYPE
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.text, parse(answer.text)


async def test_metrics_names_and_values_after_a_scripted_run(oauthd: ScriptedApp) -> None:
    _, before = await scrape(oauthd)
    snapshots_before = value(before, "oauthd_snapshot_duration_seconds_count")
    script = await scripted_run(oauthd)
    assert script.statuses == {"mcp_ok": 200, "mcp_revoked": 401, "mcp_down": 502, "revoke": 200}
    text, samples = await scrape(oauthd)

    for name in NAMES:
        assert any(key[0] == name for key in samples), name
    families = list(text_string_to_metric_families(text))
    assert all(f.name.startswith(("oauthd_", *STANDARD)) for f in families)
    assert all(len(f.documentation) > 10 for f in families if f.name.startswith("oauthd_"))
    assert "_created" not in text  # prometheus_client's creation-time series are off
    assert "\noauthd_up 1.0\n" in text
    # the resource label: the configured resources' paths only (here the one at /mcp)
    assert (
        'oauthd_tokens_issued_total{grant_type="authorization_code",principal="user",'
        'resource="/mcp"} 3.0\n' in text
    )
    assert {
        labels.get("resource")
        for (name, labels_set) in samples
        for labels in [dict(labels_set)]
        if name.startswith("oauthd_tokens_")
    } == {"/mcp"}

    assert value(samples, "oauthd_logins_total", result="success") == 4
    assert value(samples, "oauthd_logins_total", result="failure") == 1
    assert value(samples, "oauthd_logins_total", result="rate_limited") == 0
    assert value(samples, "oauthd_client_registrations_total") == 1
    mcp = "/mcp"
    issued, user = "oauthd_tokens_issued_total", "user"
    assert value(samples, issued, grant_type=DEVICE_GRANT, resource=mcp, principal=user) == 0
    assert value(samples, "oauthd_tokens_refreshed_total", resource=mcp) == 1
    revoked = "oauthd_tokens_revoked_total"
    assert value(samples, revoked, token_type="refresh_token", resource=mcp) == 1
    assert value(samples, revoked, token_type="access_token", resource=mcp) == 0
    assert value(samples, "oauthd_reuse_detected_total", token_type="refresh_token") == 1
    assert value(samples, "oauthd_reuse_detected_total", token_type="authorization_code") == 1

    # requests: the token endpoint by grant type, the routes by path as registered
    tokens = "oauthd_token_requests_total"
    assert value(samples, tokens, grant_type="authorization_code", status_class="2xx") == 3
    assert value(samples, tokens, grant_type="authorization_code", status_class="4xx") == 1
    assert value(samples, tokens, grant_type="refresh_token", status_class="2xx") == 1
    assert value(samples, tokens, grant_type="refresh_token", status_class="4xx") == 1
    routes = "oauthd_http_requests_total"
    assert value(samples, routes, route="/token", status_class="2xx") == 4
    assert value(samples, routes, route="/token", status_class="4xx") == 2
    assert value(samples, routes, route="/register", status_class="2xx") == 1
    assert value(samples, routes, route="/revoke", status_class="2xx") == 1
    assert value(samples, routes, route="/authorize", status_class="3xx") >= 1
    assert {dict(labels)["route"] for name, labels in samples if name == routes} <= {
        *(r.resource.canonical for r in oauthd.app.router.routes() if r.resource is not None)
    }

    # records per kind: what the store holds (expired ones not yet purged included)
    store = oauthd.store
    for table in store.tables():
        assert value(samples, "oauthd_records", kind=table.kind) == await table.count()
    assert value(samples, "oauthd_records", kind="clients") == 1
    assert value(samples, "oauthd_records", kind="grants") == 0  # reuse, revoke, code replay

    # the proxy: one answer per status class, and one connect error
    latency = "oauthd_proxy_request_duration_seconds_count"
    assert value(samples, latency, method="POST", status_class="2xx") == 1
    assert value(samples, latency, method="POST", status_class="4xx") == 1
    # upstream down: the call that shows it, and the exchanged code's token put to use
    assert value(samples, latency, method="POST", status_class="5xx") == 2
    assert value(samples, "oauthd_upstream_errors_total", kind="connect") == 2
    others = [
        v
        for (name, labels), v in samples.items()
        if name == "oauthd_upstream_errors_total" and ("kind", "connect") not in labels
    ]
    assert others and not any(others)

    # persistence: the engine's own numbers, and the snapshot just saved
    fsync = store.engine.fsync_stats
    assert fsync.count > 0
    assert value(samples, "oauthd_journal_fsync_seconds_count") == fsync.count
    assert value(samples, "oauthd_journal_records_total") == fsync.records == store.engine.seq
    assert value(samples, "oauthd_journal_fsync_seconds_sum") == pytest.approx(fsync.total_seconds)
    assert value(samples, "oauthd_snapshot_duration_seconds_count") == snapshots_before + 1
    health = store.engine.health()
    assert health.last_save_seconds is not None
    assert value(samples, "oauthd_snapshot_duration_seconds_sum") >= health.last_save_seconds
    assert 0 <= value(samples, "oauthd_snapshot_age_seconds") < 10


async def test_metrics_refused_to_addresses_not_allowed(tmp_path: Path) -> None:
    running = await start(tmp_path, metrics={"allow": ("10.0.0.0/8",)})
    try:
        answer = await running.client.call("GET", "/metrics")
        assert answer.status == 403
        assert answer.json()["error"] == "access_denied"
        assert "oauthd_" not in answer.text
        assert (await running.client.call("GET", "/healthz")).status == 200
    finally:
        await running.close()


@pytest.mark.parametrize(
    ("remote", "allow", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1/32", "::1/128"), True),
        ("::1", ("127.0.0.1/32", "::1/128"), True),
        ("127.0.0.2", ("127.0.0.1/32", "::1/128"), False),
        ("127.0.0.1", ("10.0.0.0/8",), False),
        ("10.20.30.40", ("10.0.0.0/8",), True),
        ("::ffff:10.1.2.3", ("10.0.0.0/8",), True),  # an IPv4 client of a dual-stack socket
        ("fe80::1%eth0", ("fe80::/10",), True),
        (None, ("0.0.0.0/0", "::/0"), False),  # a Unix socket peer
        ("not an address", ("0.0.0.0/0",), False),
    ],
)
def test_allowed(remote: str | None, allow: tuple[str, ...], expected: bool) -> None:
    assert allowed(remote, allow) is expected


def _connector_error(exc: OSError) -> aiohttp.ClientConnectorError:
    key = SimpleNamespace(host="127.0.0.1", port=1, ssl=False)  # only printed
    return aiohttp.ClientConnectorError(key, exc)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError(), "timeout"),
        (_connector_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused")), "connect"),
        (aiohttp.ServerDisconnectedError(), "reset"),
        (aiohttp.ClientOSError(errno.ECONNRESET, "reset by peer"), "reset"),
        (aiohttp.ClientPayloadError("broken"), "protocol"),
        (aiohttp.ClientError("what"), "other"),
    ],
)
def test_upstream_error_kinds(exc: BaseException, kind: str) -> None:
    assert upstream_error_kind(exc) == kind


async def test_metrics_without_a_store_render_the_rest() -> None:
    metrics = Metrics(wall_clock=lambda: 1000.0)
    text = (await metrics.render()).decode()
    assert "# HELP oauthd_records " in text and "oauthd_records{" not in text  # no samples
    assert ("oauthd_snapshot_age_seconds", frozenset()) not in parse(text)  # none written
    metrics.snapshot_written(990.0, 0.25, 1234)
    metrics.upstream_error("something new")  # an unknown kind is "other"
    metrics.proxy_request("PATCH", 599, 0.01)
    samples = parse((await metrics.render()).decode())
    assert value(samples, "oauthd_snapshot_age_seconds") == 10.0
    assert value(samples, "oauthd_upstream_errors_total", kind="other") == 1
    count = "oauthd_proxy_request_duration_seconds_count"
    assert value(samples, count, method="other", status_class="5xx") == 1
    assert Metrics().registry is not metrics.registry  # each app its own


async def test_proxy_latency_buckets_are_cumulative_with_inclusive_bounds() -> None:
    """The lock-free /mcp histogram exposes what prometheus_client's would: `le` is
    inclusive, buckets are cumulative, +Inf equals the count, and the sum adds up."""
    metrics = Metrics()
    for seconds in (0.001, 0.005, 0.007, 0.2, 75.0):
        metrics.proxy_request("POST", 200, seconds)
    metrics.proxy_request("GET", 404, 0.03)
    samples = parse((await metrics.render()).decode())
    name = "oauthd_proxy_request_duration_seconds"

    def bucket(le: str) -> float:
        return value(samples, f"{name}_bucket", method="POST", status_class="2xx", le=le)

    assert [bucket(le) for le in ("0.005", "0.01", "0.1", "0.25", "60.0", "+Inf")] == [
        2,
        3,
        3,
        4,
        4,
        5,
    ]
    assert value(samples, f"{name}_count", method="POST", status_class="2xx") == 5
    assert value(samples, f"{name}_sum", method="POST", status_class="2xx") == pytest.approx(75.213)
    assert value(samples, f"{name}_bucket", method="GET", status_class="4xx", le="0.025") == 0
    assert value(samples, f"{name}_bucket", method="GET", status_class="4xx", le="0.05") == 1


async def test_a_scrape_during_a_store_outage_keeps_the_last_counts() -> None:
    """Monitoring matters most during an outage: /metrics still answers, with the record
    counts it last read."""

    class Store:
        down = False

        async def census(self) -> dict[str, int]:
            if self.down:
                raise RuntimeError("store unavailable")
            return {"grants": 7}

    store = Store()
    metrics = Metrics()
    await metrics.watch_records(store)
    assert value(parse((await metrics.render()).decode()), "oauthd_records", kind="grants") == 7
    store.down = True
    samples = parse((await metrics.render()).decode())
    assert value(samples, "oauthd_records", kind="grants") == 7
    assert value(samples, "oauthd_up") == 1


async def test_token_counters_are_per_resource_and_start_at_zero() -> None:
    metrics = Metrics()
    metrics.know_resources(["/mcp", "/files/mcp"])
    metrics.token_issued("authorization_code", "/files/mcp")
    metrics.token_refreshed("/files/mcp")
    metrics.token_revoked("grant", "/mcp")
    samples = parse((await metrics.render()).decode())
    issued = "oauthd_tokens_issued_total"
    code, user, service = "authorization_code", "user", "service"
    assert value(samples, issued, grant_type=code, resource="/files/mcp", principal=user) == 1
    assert value(samples, issued, grant_type=code, resource="/mcp", principal=user) == 0
    assert (
        value(samples, issued, grant_type=DEVICE_GRANT, resource="/files/mcp", principal=user) == 0
    )
    cc = "client_credentials"
    assert value(samples, issued, grant_type=cc, resource="/mcp", principal=service) == 0
    metrics.token_issued(cc, "/mcp", service)
    samples = parse((await metrics.render()).decode())
    assert value(samples, issued, grant_type=cc, resource="/mcp", principal=service) == 1
    assert value(samples, "oauthd_tokens_refreshed_total", resource="/files/mcp") == 1
    assert value(samples, "oauthd_tokens_refreshed_total", resource="/mcp") == 0
    assert value(samples, "oauthd_tokens_revoked_total", token_type="grant", resource="/mcp") == 1
