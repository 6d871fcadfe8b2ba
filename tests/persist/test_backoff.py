"""Backoff delays and the throttled log line."""

from __future__ import annotations

from oauthd.persist.backoff import Backoff, Throttle


def test_backoff_doubles_up_to_its_maximum_and_starts_over_after_a_reset() -> None:
    backoff = Backoff(first=0.5, maximum=4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_throttle_lets_one_line_per_interval_through_and_counts_the_rest() -> None:
    now = [100.0]
    throttle = Throttle(interval=30.0, clock=lambda: now[0])
    assert throttle.due()
    for step in range(7):  # 7 failures in 3 s: one line
        now[0] += 0.4
        assert not throttle.due(), step
    now[0] += 30.0
    assert throttle.due()
    assert throttle.take_suppressed() == 7
    assert throttle.take_suppressed() == 0
    throttle.reset()
    assert throttle.due()
