import asyncio
import time

from oauthd.loop_lag import LagProbe, watching
from oauthd.metrics import Metrics


async def windows(every: float, window: float, count: int, block: float = 0.0) -> list[float]:
    """The first `count` reports of a probe; `block`: a callback holds the loop that long."""
    reports: list[float] = []
    enough = asyncio.Event()

    def report(worst: float) -> None:
        reports.append(worst)
        if len(reports) >= count:
            enough.set()

    task = asyncio.create_task(LagProbe(report, every=every, window=window).run())
    if block:
        asyncio.get_running_loop().call_later(0.05, time.sleep, block)
    await asyncio.wait_for(enough.wait(), 5)
    task.cancel()
    return reports


async def test_a_blocked_loop_is_reported_as_the_windows_worst_lateness() -> None:
    (worst,) = await windows(every=0.01, window=0.2, count=1, block=0.12)
    assert 0.1 <= worst < 1.0


async def test_a_free_loop_reports_every_window_with_small_lateness() -> None:
    reports = await windows(every=0.01, window=0.05, count=3)
    assert min(reports) < 0.05


async def test_the_metrics_serve_the_last_window_and_watching_stops_its_probe() -> None:
    metrics = Metrics()
    async with watching(metrics.loop_lag):
        assert "loop-lag" in {t.get_name() for t in asyncio.all_tasks()}
    assert "loop-lag" not in {t.get_name() for t in asyncio.all_tasks()}
    metrics.loop_lag(0.25)
    assert b"oauthd_event_loop_lag_seconds 0.25" in await metrics.render()
