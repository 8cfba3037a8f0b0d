"""The circuit breaker per endpoint (actors/breaker.py), on a fake clock."""

from __future__ import annotations

import math

import pytest

from hookcast.actors.breaker import BreakerSettings, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def breaker(clock: FakeClock, **settings: float) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**settings), clock=clock)


def answers(b: CircuitBreaker, ok: int = 0, failed: int = 0) -> None:
    for _ in range(ok):
        b.record(True)
    for _ in range(failed):
        b.record(False)


def trip(b: CircuitBreaker) -> None:
    answers(b, failed=b.settings.min_requests)
    assert b.state is BreakerState.OPEN


def probe(b: CircuitBreaker, clock: FakeClock, ok: bool) -> None:
    """Wait out the pause, send the probe, record its answer."""
    clock.now += b.wait_s()
    assert b.allow()
    b.record(ok)


# -- tripping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answered", "opens"),
    [
        ("T" * 3 + "F" * 7, True),  # 7 of 10: exactly 0.7
        ("T" * 4 + "F" * 6, False),  # 0.6
        ("TFF" * 7, False),  # 14 of 21 = 0.667, never 0.7 on the way
        ("TTTFFFFFFF" * 2, True),  # 14 of 20: exactly 0.7 again
        ("T" * 20 + "TFF" * 30, False),  # the last 50 stay at 2 of 3 failed
        ("T" * 20 + "FFFFFFFFFT" * 5, True),  # 9 of 10: older successes no longer dilute
        ("F" * 9, False),  # all failed, but fewer than min_requests
    ],
)
def test_trips_at_the_ratio_with_min_requests(clock: FakeClock, answered: str, opens: bool) -> None:
    b = breaker(clock)
    for answer in answered:
        b.record(answer == "T")
    assert (b.state is BreakerState.OPEN) is opens
    assert b.allow() is not opens


def test_a_run_of_min_requests_failures_trips_it_whatever_came_before(clock: FakeClock) -> None:
    b = breaker(clock)
    answers(b, ok=40, failed=9)
    assert b.state is BreakerState.CLOSED  # 9 of 49: the ratio alone would wait for 35
    b.record(False)
    assert b.state is BreakerState.OPEN


def test_not_below_min_requests_then_at_it(clock: FakeClock) -> None:
    b = breaker(clock)
    answers(b, failed=9)
    assert b.state is BreakerState.CLOSED
    b.record(False)
    assert b.state is BreakerState.OPEN
    assert b.snapshot()["opened"] == 1


def test_old_failures_slide_out_of_the_window(clock: FakeClock) -> None:
    b = breaker(clock)
    answers(b, failed=9)
    clock.now += 30.0  # answered exactly window_s ago: out
    b.record(True)
    assert b.snapshot()["requests_in_window"] == 1
    answers(b, failed=8)  # 8 of 9 failed, under min_requests; counting the old 9: 17 of 18
    assert b.state is BreakerState.CLOSED
    assert b.snapshot()["failure_ratio"] == pytest.approx(8 / 9)


def test_a_quiet_spell_empties_the_window(clock: FakeClock) -> None:
    """No timer trims it: whatever looks next (allow, record, snapshot) drops the old."""
    b = breaker(clock)
    answers(b, failed=9)
    clock.now += 31.0
    assert b.allow()
    assert b.snapshot()["requests_in_window"] == 0
    answers(b, failed=9)
    assert b.state is BreakerState.CLOSED  # without trimming: 18 failures, open


# -- open, half-open ---------------------------------------------------------------------------


def test_open_blocks_until_the_pause_is_over(clock: FakeClock) -> None:
    b = breaker(clock)
    trip(b)
    assert not b.allow()
    assert b.wait_s() == pytest.approx(30.0)
    clock.now += 29.9
    assert not b.allow()
    assert b.state is BreakerState.OPEN
    assert b.wait_s() == pytest.approx(0.1)


def test_half_open_allows_exactly_one_probe(clock: FakeClock) -> None:
    b = breaker(clock)
    trip(b)
    clock.now += 30.0
    assert b.state is BreakerState.HALF_OPEN  # reads half-open before anyone asks
    assert b.wait_s() == 0.0
    assert b.allow()  # the probe
    assert not b.allow()
    assert not b.allow()
    assert b.state is BreakerState.HALF_OPEN
    assert b.wait_s() == math.inf  # only the probe's answer can change that
    clock.now += 1_000.0
    assert not b.allow()  # the probe is still out: no second one


def test_a_probe_that_succeeds_closes_and_resets(clock: FakeClock) -> None:
    b = breaker(clock)
    trip(b)
    probe(b, clock, ok=False)  # pause now 60
    assert b.snapshot()["pause_s"] == 60.0
    probe(b, clock, ok=True)
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    snap = b.snapshot()
    assert snap["requests_in_window"] == 0 and snap["pause_s"] == 30.0
    answers(b, failed=9)  # the window starts empty: min_requests again
    assert b.state is BreakerState.CLOSED
    b.record(False)
    assert b.state is BreakerState.OPEN
    assert b.wait_s() == pytest.approx(30.0)  # the first pause again, not 120
    assert b.snapshot()["opened"] == 3  # trip, re-open, trip


def test_failed_probes_double_the_pause_up_to_the_cap(clock: FakeClock) -> None:
    b = breaker(clock)
    trip(b)
    pauses = []
    for _ in range(6):
        probe(b, clock, ok=False)
        assert b.state is BreakerState.OPEN
        pauses.append(b.wait_s())
    assert pauses == [60.0, 120.0, 240.0, 300.0, 300.0, 300.0]
    assert b.snapshot()["opened"] == 7


def test_a_first_pause_longer_than_the_cap_is_not_shortened(clock: FakeClock) -> None:
    b = breaker(clock, open_s=600.0)
    trip(b)
    probe(b, clock, ok=False)
    assert b.wait_s() == 600.0


def test_a_probe_answered_late_reopens_from_its_answer(clock: FakeClock) -> None:
    b = breaker(clock)
    trip(b)
    clock.now += 30.0
    assert b.allow()
    clock.now += 100.0  # later than the next pause (60) would have ended
    assert b.state is BreakerState.HALF_OPEN
    b.record(False)
    assert b.state is BreakerState.OPEN
    assert b.wait_s() == 60.0


# -- outages -----------------------------------------------------------------------------------


def test_outage_lasts_across_failed_probes(clock: FakeClock) -> None:
    b = breaker(clock, max_outage_s=200.0)
    assert b.outage_s() == 0.0
    trip(b)
    clock.now += 10.0
    assert b.outage_s() == pytest.approx(10.0)
    probe(b, clock, ok=False)  # at 30 s; pause 60
    probe(b, clock, ok=False)  # at 90 s; pause 120
    clock.now += 110.0  # 200 s after the trip, the probe not yet due
    assert b.outage_s() == pytest.approx(200.0)
    assert not b.outage_too_long()  # more than max_outage_s, not as much
    clock.now += 0.5
    assert b.outage_too_long()
    assert b.snapshot()["outage_s"] == pytest.approx(200.5)
    probe(b, clock, ok=True)
    assert b.outage_s() == 0.0 and not b.outage_too_long()


def test_outage_counts_while_the_probe_is_out(clock: FakeClock) -> None:
    b = breaker(clock, max_outage_s=100.0)
    trip(b)
    clock.now += 30.0
    assert b.allow()
    clock.now += 80.0  # the probe hangs
    assert b.outage_too_long()


# -- stale answers -----------------------------------------------------------------------------


def test_answers_while_open_change_nothing(clock: FakeClock) -> None:
    """They are the requests in flight when it opened: no re-trip, no doubling, no close."""
    b = breaker(clock)
    trip(b)
    clock.now += 5.0
    answers(b, failed=30)
    answers(b, ok=30)
    assert b.state is BreakerState.OPEN
    assert b.wait_s() == pytest.approx(25.0)
    assert b.snapshot()["opened"] == 1 and b.snapshot()["pause_s"] == 30.0
    clock.now += 25.0  # the pause is over, no probe sent yet: still not a probe's answer
    b.record(True)
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # the probe is still to go


def test_sent_at_tells_an_old_answer_from_the_probe(clock: FakeClock) -> None:
    b = breaker(clock)
    before = clock.now
    trip(b)
    clock.now += 30.0
    probe_sent = clock.now
    assert b.allow()
    b.record(False, sent_at=before)  # sent before the trip
    assert b.state is BreakerState.HALF_OPEN and not b.allow()
    b.record(True, sent_at=probe_sent)
    assert b.state is BreakerState.CLOSED
    for _ in range(20):
        b.record(False, sent_at=before)
    assert b.state is BreakerState.CLOSED  # the outage is over: old news
    assert b.snapshot()["requests_in_window"] == 0


# -- snapshot ----------------------------------------------------------------------------------


def test_snapshot(clock: FakeClock) -> None:
    b = breaker(clock)
    assert b.snapshot() == {
        "state": "closed",
        "failure_ratio": 0.0,
        "requests_in_window": 0,
        "pause_s": 30.0,
        "outage_s": 0.0,
        "opened": 0,
    }
    answers(b, ok=3, failed=7)
    clock.now += 12.0
    snap = b.snapshot()
    assert snap["state"] == "open"
    assert snap["failure_ratio"] == pytest.approx(0.7)  # the window that tripped it
    assert snap["requests_in_window"] == 10
    assert snap["outage_s"] == pytest.approx(12.0)
    assert snap["opened"] == 1
    clock.now += 18.0
    assert b.snapshot()["state"] == "half-open"
    assert [str(s) for s in BreakerState] == ["closed", "open", "half-open"]
