"""Ray started beside a run (``cluster/background_ray.py``): when a run is worth it, on a thread
of its own that also shuts it down, and the metrics kept until it is up
(``cluster/metrics.MetricsOnceConnected``). Fake connect, disconnect and metrics: no Ray."""

from __future__ import annotations

import threading
from typing import ClassVar

import pytest

from hookcast.actors.delivery import AttemptResult, Outcome
from hookcast.cluster import metrics
from hookcast.cluster.background_ray import (
    LEFT_AT_LEAST_S,
    SENDING_BEFORE_S,
    BackgroundRay,
    worth_starting,
)
from hookcast.cluster.metrics import MetricsOnceConnected

# -- worth_starting ---------------------------------------------------------------------------


def test_not_before_the_run_has_sent_for_a_while() -> None:
    assert not worth_starting(SENDING_BEFORE_S / 2, 1, 10_000_000)


def test_a_run_with_long_to_go_at_its_pace_is_worth_it() -> None:
    # 250k contacts in 1 s of 10M: 39 s to go
    assert worth_starting(1.0, 250_000, 10_000_000)


def test_a_run_about_to_end_is_not() -> None:
    # 250k contacts in 1 s of 1M: 3 s to go
    assert not worth_starting(1.0, 250_000, 1_000_000)


def test_the_threshold_is_the_time_left() -> None:
    left = LEFT_AT_LEAST_S
    assert worth_starting(1.0, 1000, 1000 + int(1000 * left))
    assert not worth_starting(1.0, 1000, 1000 + int(1000 * left) - 1)


def test_nothing_delivered_after_the_first_second_is_a_slow_run() -> None:
    assert worth_starting(SENDING_BEFORE_S, 0, 5000)


def test_a_finished_run_is_not() -> None:
    assert not worth_starting(30.0, 5000, 5000)


# -- BackgroundRay ----------------------------------------------------------------------------


def test_connect_and_disconnect_run_on_one_thread_that_is_not_this_one() -> None:
    threads: list[tuple[str, threading.Thread]] = []
    aside = BackgroundRay(
        lambda: threads.append(("connect", threading.current_thread())),
        lambda: threads.append(("disconnect", threading.current_thread())),
    )
    aside.start()
    aside.start()  # once
    assert aside.wait(timeout_s=10)

    assert aside.stop() is None
    assert [name for name, _ in threads] == ["connect", "disconnect"]
    assert threads[0][1] is threads[1][1] is not threading.current_thread()


def test_never_started_it_stops_at_once_and_then_starts_no_more() -> None:
    calls: list[str] = []
    aside = BackgroundRay(lambda: calls.append("connect"), lambda: calls.append("disconnect"))

    assert aside.stop() is None
    aside.start()
    assert not aside.wait(timeout_s=0.1)
    assert calls == []


def test_a_failed_start_is_reported_by_stop_and_not_disconnected() -> None:
    calls: list[str] = []

    def refuse() -> None:
        raise OSError("no space left on device")

    aside = BackgroundRay(refuse, lambda: calls.append("disconnect"))
    aside.start()
    error = aside.stop()

    assert isinstance(error, OSError) and "no space" in str(error)
    assert calls == []


# -- MetricsOnceConnected -----------------------------------------------------------------------


class _Recorded:
    """Stands for RunMetrics: what reached Ray's metrics."""

    made: ClassVar[list[_Recorded]] = []

    def __init__(self, job: str, endpoint: str) -> None:
        self.calls: list[tuple] = []
        _Recorded.made.append(self)

    def attempt(self, result: AttemptResult, *, retry: bool) -> None:
        self.calls.append(("attempt", result.contacts, retry))

    def set_queued(self, batches: int) -> None:
        self.calls.append(("set_queued", batches))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[_Recorded]:
    _Recorded.made = []
    monkeypatch.setattr(metrics, "RunMetrics", _Recorded)
    return _Recorded.made


def _delivered(contacts: int) -> AttemptResult:
    return AttemptResult(0, 1, Outcome.DELIVERED, 200, 0.01, contacts, 1000)


def test_calls_before_ray_is_up_are_replayed_in_order_once_it_is(recorded) -> None:
    up = False
    kept = MetricsOnceConnected("job", "http://x/", connected=lambda: up)
    kept.attempt(_delivered(500), retry=False)
    kept.set_queued(3)
    assert recorded == []

    up = True
    kept.attempt(_delivered(200), retry=True)

    (live,) = recorded
    assert live.calls == [("attempt", 500, False), ("set_queued", 3), ("attempt", 200, True)]


def _starting(contacts: int, now: list[float], started: list[float]) -> MetricsOnceConnected:
    """Metrics of a run of ``contacts`` on the clock ``now[0]`` whose Ray, never up, is
    started at the times ``started`` records."""
    return MetricsOnceConnected(
        "job",
        "http://x/",
        connected=lambda: False,
        start_ray=lambda: started.append(now[0]),
        contacts=contacts,
        clock=lambda: now[0],
    )


def test_ray_is_started_once_the_run_is_worth_it(recorded) -> None:
    now = [100.0]
    started: list[float] = []
    kept = _starting(10_000_000, now, started)
    kept.attempt(_delivered(500), retry=False)  # the first answer: the clock starts
    now[0] += SENDING_BEFORE_S
    kept.attempt(_delivered(500), retry=False)  # 1,000 in 1 s: hours to go
    kept.attempt(_delivered(500), retry=False)

    assert started == [101.0]


def test_a_run_that_ends_soon_starts_no_ray(recorded) -> None:
    now = [0.0]
    started: list[float] = []
    kept = _starting(5000, now, started)
    for _ in range(10):
        kept.attempt(_delivered(500), retry=False)
        now[0] += 0.2

    assert started == [] and recorded == []
