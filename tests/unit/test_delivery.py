"""What an answer means, when to retry (actors/delivery.py) and the rate limit (ratelimit.py)."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from hookcast.actors.delivery import Outcome, RetryPolicy, classify, parse_retry_after
from hookcast.actors.ratelimit import RateLimiter

NOW = 1_700_000_000.0  # a fixed "now" for Retry-After dates


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class EdgeRng:
    """A stand-in for random.Random that records the jitter range and returns its top."""

    def __init__(self) -> None:
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return high


# -- the retry table -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status):
    assert classify(status) is Outcome.DELIVERED


@pytest.mark.parametrize("status", [300, 301, 302, 304, 307, 308, 399])
def test_redirect_is_retried_not_followed(status):
    assert classify(status) is Outcome.RETRY


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_status_is_retried(status):
    assert classify(status) is Outcome.RETRY


def test_no_answer_is_retried():
    assert classify(None) is Outcome.RETRY


def test_410_gone_stops_the_endpoint():
    assert classify(410) is Outcome.GONE


@pytest.mark.parametrize(
    "status", [100, 199, 400, 401, 403, 404, 405, 409, 413, 422, 501, 505, 511, 600, 999]
)
def test_other_status_is_dead_lettered(status):
    assert classify(status) is Outcome.DEAD


# -- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "seconds"), [("1", 1.0), ("86400", 86400.0), (" 7 ", 7.0)])
def test_retry_after_delta_seconds(header, seconds):
    assert parse_retry_after(header, NOW) == seconds


def test_retry_after_http_date_in_the_future_is_seconds_from_now():
    header = formatdate(NOW + 120, usegmt=True)  # "Tue, 14 Nov 2023 22:15:20 GMT"

    assert parse_retry_after(header, NOW) == pytest.approx(120.0)


def test_retry_after_http_date_in_the_past_means_now():
    header = formatdate(NOW - 3_600, usegmt=True)

    assert parse_retry_after(header, NOW) == 0.0


@pytest.mark.parametrize("header", ["-5", "abc", "", "   ", "1.5", "5s", "²"])
def test_retry_after_garbage_means_use_backoff(header):
    assert parse_retry_after(header, NOW) is None


def test_missing_retry_after_means_use_backoff():
    assert parse_retry_after(None, NOW) is None


# -- delays --------------------------------------------------------------------------------------


def test_retry_after_is_the_delay_when_given():
    policy = RetryPolicy(retry_after_max_s=60.0)
    rng = EdgeRng()

    assert policy.delay_s(1, 3.0, rng) == 3.0
    assert policy.delay_s(4, 0.0, rng) == 0.0
    assert rng.ranges == []  # no jitter when the server said when


def test_retry_after_is_clamped_to_its_maximum():
    policy = RetryPolicy(retry_after_max_s=60.0)

    assert policy.delay_s(1, 86_400.0, random.Random(0)) == 60.0


def test_backoff_ceiling_doubles_per_attempt_until_its_maximum():
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=30.0)
    rng = EdgeRng()

    delays = [policy.delay_s(attempt, None, rng) for attempt in range(1, 11)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert rng.ranges == [(d / 2, d) for d in delays]


def test_backoff_stays_within_half_ceiling_and_ceiling():
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=30.0)
    rng = random.Random(1234)

    for attempt in range(1, 13):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        delays = [policy.delay_s(attempt, None, rng) for _ in range(200)]
        assert min(delays) >= ceiling / 2
        assert max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not a constant


def test_backoff_grows_on_average_with_each_attempt():
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=30.0)
    rng = random.Random(7)

    means = [
        sum(policy.delay_s(attempt, None, rng) for _ in range(200)) / 200 for attempt in range(1, 7)
    ]

    assert means == sorted(means)
    assert means[-1] > 4 * means[0]


# -- the rate limiter ----------------------------------------------------------------------------


def _send_as_fast_as_allowed(limiter: RateLimiter, clock: FakeClock, until: float) -> list[float]:
    sent: list[float] = []
    while clock.now < until:
        wait = limiter.wait_s()
        if wait > 0:
            clock.now += wait
            continue
        limiter.take()
        sent.append(clock.now)
    return sent


def test_rate_limit_allows_at_most_rate_plus_one_in_any_second():
    clock = FakeClock(1_000.0)
    limiter = RateLimiter(10, burst=1, clock=clock)

    sent = _send_as_fast_as_allowed(limiter, clock, until=1_005.0)

    assert 49 <= len(sent) <= 51  # as fast as allowed: the limiter does not starve either
    for i, start in enumerate(sent):
        in_window = [t for t in sent[i:] if t < start + 1.0 + 1e-9]
        assert len(in_window) <= 11, (start, in_window)


def test_rate_limit_spaces_requests_evenly():
    clock = FakeClock(0.0)
    limiter = RateLimiter(4, burst=1, clock=clock)

    sent = _send_as_fast_as_allowed(limiter, clock, until=2.0)

    assert sent == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])


def test_rate_limit_burst_lets_idle_time_accumulate_up_to_burst():
    clock = FakeClock(0.0)
    limiter = RateLimiter(10, burst=3, clock=clock)
    clock.now = 60.0  # a minute idle

    sent = _send_as_fast_as_allowed(limiter, clock, until=60.05)

    assert sent == [60.0, 60.0, 60.0]


def test_pause_until_holds_every_request_until_then():
    clock = FakeClock(100.0)
    limiter = RateLimiter(10, burst=1, clock=clock)
    limiter.pause_until(105.0)

    assert limiter.wait_s() == pytest.approx(5.0)
    clock.now = 104.9
    assert limiter.wait_s() == pytest.approx(0.1)
    clock.now = 105.0
    assert limiter.wait_s() == 0.0


def test_pause_until_never_shortens_a_longer_pause():
    clock = FakeClock(0.0)
    limiter = RateLimiter(None, clock=clock)
    limiter.pause_until(30.0)
    limiter.pause_until(10.0)

    assert limiter.wait_s() == pytest.approx(30.0)


def test_pause_holds_requests_then_the_rate_applies_again():
    clock = FakeClock(0.0)
    limiter = RateLimiter(10, burst=1, clock=clock)
    limiter.pause_until(2.0)

    sent = _send_as_fast_as_allowed(limiter, clock, until=2.5)

    assert sent[0] == pytest.approx(2.0)
    assert sent == pytest.approx([2.0, 2.1, 2.2, 2.3, 2.4])


def test_no_rate_only_honours_pauses():
    clock = FakeClock(0.0)
    limiter = RateLimiter(None, clock=clock)

    for _ in range(1_000):
        assert limiter.wait_s() == 0.0
        limiter.take()
    limiter.pause_until(1.0)
    assert limiter.wait_s() == pytest.approx(1.0)
