"""Adaptive concurrency (actors/concurrency.py), driven by a simulated endpoint on a fake clock.

The scenarios assert ranges, as Vector's ARC scenarios do: where the limit settles, not the
exact path it takes there. Every run is deterministic (jitter comes from a seeded Random).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from hookcast.actors.concurrency import AdaptiveConcurrency

BASE_S = 0.05  # the endpoint's round trip when it is not loaded

# An endpoint model: (requests in flight at it, including this one; now) -> (latency, status)
Endpoint = Callable[[int, float], tuple[float, int]]


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    """What a simulated run saw: after each answer, its time (s from the start) and the limit."""

    points: list[tuple[float, int]] = field(default_factory=list)

    @property
    def limits(self) -> list[int]:
        return [lim for _, lim in self.points]

    def limit_at(self, t: float) -> int:
        """The limit as it stood at ``t`` s (after the last answer at or before it)."""
        return next(lim for when, lim in reversed(self.points) if when <= t)

    def limits_from(self, t: float) -> list[int]:
        return [lim for when, lim in self.points if when >= t]

    def last_half(self) -> list[int]:
        return self.limits[len(self.points) // 2 :]

    def first_reached(self, limit: int) -> float:
        return next(when for when, lim in self.points if lim >= limit)


def simulate(
    endpoint: Endpoint,
    *,
    requests: int,
    max_limit: int,
    jitter: float = 0.0,
    seed: int = 1,
    adaptive: bool = True,
) -> tuple[Run, AdaptiveConcurrency]:
    """A discrete-event run: as many requests in flight as the limit allows, each answered
    after the endpoint's latency (times 1 +- ``jitter``). 429 is told as ``throttled``,
    503 as ``backpressure``; ``sent_at`` is what ``on_send`` returned, as the coordinator does."""
    clock = FakeClock()
    start = clock.now
    rng = random.Random(seed)
    ac = AdaptiveConcurrency(max_limit, adaptive=adaptive, clock=clock)
    answers: list[tuple[float, int, float, int]] = []  # (due, order, sent_at, status) heap
    in_flight = sent = 0
    run = Run()
    while sent < requests or answers:
        while sent < requests and in_flight < ac.limit:
            in_flight += 1
            sent += 1
            stamp = ac.on_send(in_flight)
            latency, status = endpoint(in_flight, clock.now - start)
            latency *= 1 + rng.uniform(-jitter, jitter)
            heapq.heappush(answers, (clock.now + latency, sent, stamp, status))
        due, _, stamp, status = heapq.heappop(answers)
        clock.now = due
        in_flight -= 1
        ac.on_answer(
            due - stamp, backpressure=status == 503, throttled=status == 429, sent_at=stamp
        )
        run.points.append((clock.now - start, ac.limit))
    return run, ac


def constant(latency_s: float = BASE_S) -> Endpoint:
    return lambda in_flight, now: (latency_s, 200)


def queueing(c: int) -> Endpoint:
    """Works on ``c`` requests at once; past that they queue and take longer."""
    return lambda in_flight, now: (BASE_S * max(1.0, in_flight / c), 200)


def refusing_over(c: int) -> Endpoint:
    """Answers 503 at once to a request that finds ``c`` already in flight."""
    return lambda in_flight, now: (0.005, 503) if in_flight > c else (BASE_S, 200)


def throttling_from(t: float) -> Endpoint:
    """Healthy until ``t`` s, then 429 to every request."""
    return lambda in_flight, now: (BASE_S, 429 if now >= t else 200)


# -- the scenarios -----------------------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0.0, 0.1])
def test_a_constant_latency_link_settles_at_max(jitter: float) -> None:
    run, _ = simulate(constant(), requests=2000, max_limit=8, jitter=jitter)
    assert min(run.limits[-100:]) >= 7
    assert run.limits[-1] == 8


@pytest.mark.parametrize("jitter", [0.0, 0.1])
def test_b_an_endpoint_that_queues_past_c_settles_near_c(jitter: float) -> None:
    run, _ = simulate(queueing(10), requests=4000, max_limit=50, jitter=jitter)
    half = run.last_half()
    assert min(half) >= 8 and max(half) <= 13, (min(half), max(half))


def test_c_an_endpoint_that_refuses_past_c_settles_near_c() -> None:
    run, _ = simulate(refusing_over(6), requests=4000, max_limit=32)
    half = run.last_half()
    assert min(half) >= 0.8 * 6 and max(half) <= 1.3 * 6, (min(half), max(half))


def test_c_with_jitter_the_refusing_endpoint_stays_near_c() -> None:
    """Noise makes an RTT cut now and then (one dip to 4 in 10 seeds in the simulations);
    the limit still keeps to [0.8 C, 1.3 C] nearly all the time, around C."""
    run, _ = simulate(refusing_over(6), requests=4000, max_limit=32, jitter=0.1)
    half = run.last_half()
    inside = sum(0.8 * 6 <= lim <= 1.3 * 6 for lim in half) / len(half)
    assert inside >= 0.98
    assert 5.5 <= sum(half) / len(half) <= 7.0


@pytest.mark.parametrize("jitter", [0.0, 0.1])
def test_d_a_429_for_everything_halves_the_limit_within_3_round_trips(jitter: float) -> None:
    t = 5.0
    run, _ = simulate(throttling_from(t), requests=5000, max_limit=32, jitter=jitter)
    before = run.limit_at(t)
    assert before == 32  # it was at full pace when the 429s began
    assert run.limit_at(t + 3 * BASE_S) <= before // 2
    assert run.limits[-1] == 1  # and stays down while every answer is a 429


def test_e_not_adaptive_is_fixed_at_max() -> None:
    run, ac = simulate(throttling_from(1.0), requests=500, max_limit=8, adaptive=False)
    assert set(run.limits) == {8}
    assert ac.snapshot() == {"limit": 8, "max": 8, "rtt_mean_s": None, "rtt_dev_s": None}


@pytest.mark.parametrize("jitter", [0.0, 0.1])
@pytest.mark.parametrize("max_limit", [8, 64, 256, 1000])
def test_f_a_clean_run_reaches_max_within_20_round_trips(max_limit: int, jitter: float) -> None:
    run, _ = simulate(constant(), requests=2000, max_limit=max_limit, jitter=jitter)
    assert run.first_reached(max_limit) <= 20 * BASE_S
    if max_limit == 8:  # slow start: 1, 2, 4, 8, a period of one or two round trips each
        assert run.first_reached(8) <= 6 * BASE_S


def test_an_endpoint_slower_for_everyone_is_learnt_not_fought() -> None:
    """Its latency doubles at 3 s whatever the load: cutting cannot help, so after a cut or
    two the new pace is the norm and the limit comes back to max."""
    run, _ = simulate(
        lambda in_flight, now: (BASE_S * (2 if now >= 3.0 else 1), 200),
        requests=6000,
        max_limit=16,
        jitter=0.1,
    )
    after = run.limits_from(3.0)
    # A few cuts (each after two slow periods in a row), then the new pace is the norm.
    assert min(after) >= 8
    assert run.limits[-1] == 16


# -- the rules, one at a time ------------------------------------------------------------------


def test_starts_at_1_or_initial_within_bounds() -> None:
    assert AdaptiveConcurrency(8, clock=FakeClock()).limit == 1
    assert AdaptiveConcurrency(8, clock=FakeClock(), initial=4).limit == 4
    assert AdaptiveConcurrency(8, clock=FakeClock(), initial=50).limit == 8
    assert AdaptiveConcurrency(8, clock=FakeClock(), initial=0).limit == 1
    with pytest.raises(ValueError):
        AdaptiveConcurrency(0)


def test_back_pressure_cuts_once_per_round_trip() -> None:
    """A burst of 503s to requests sent under one limit is one cut, not one per answer."""
    clock = FakeClock()
    ac = AdaptiveConcurrency(20, clock=clock, initial=20)
    stamps = [ac.on_send(i + 1) for i in range(20)]
    clock.now += 0.01
    for stamp in stamps[:10]:
        ac.on_answer(0.01, backpressure=True, sent_at=stamp)
    assert ac.limit == 18  # floor(20 * 0.9), once
    later = ac.on_send(11)  # sent after the cut: its 503 is news
    clock.now += 0.01
    ac.on_answer(0.01, backpressure=True, sent_at=later)
    assert ac.limit == 16  # floor(18 * 0.9)


def test_a_429_halves() -> None:
    clock = FakeClock()
    ac = AdaptiveConcurrency(20, clock=clock, initial=20)
    stamp = ac.on_send(1)
    clock.now += 0.01
    ac.on_answer(0.01, backpressure=False, throttled=True, sent_at=stamp)
    assert ac.limit == 10


def test_no_increase_while_the_limit_is_not_reached() -> None:
    """Only one request at a time although 8 are allowed: nothing says 9 would be fine."""
    clock = FakeClock()
    ac = AdaptiveConcurrency(16, clock=clock, initial=8)
    for _ in range(200):
        stamp = ac.on_send(1)
        clock.now += BASE_S
        ac.on_answer(BASE_S, backpressure=False, sent_at=stamp)
    assert ac.limit == 8


def test_snapshot_reports_the_limit_and_the_rtts() -> None:
    run_, ac = simulate(constant(), requests=200, max_limit=8, jitter=0.1)
    snap = ac.snapshot()
    assert set(snap) == {"limit", "max", "rtt_mean_s", "rtt_dev_s"}
    assert snap["limit"] == run_.limits[-1] and snap["max"] == 8
    assert snap["rtt_mean_s"] == pytest.approx(BASE_S, rel=0.05)
    # a uniform +-10 % jitter has a deviation of 0.1 / sqrt(3) of the mean
    assert snap["rtt_dev_s"] == pytest.approx(BASE_S * 0.1 / 3**0.5, rel=0.5)
