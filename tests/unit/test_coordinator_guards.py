"""What protects an endpoint, decided by the coordinator on a fake clock: the canary, the
limit by contacts, the day's quota (and, below, the breaker and adaptive concurrency)."""

from __future__ import annotations

from collections import Counter

import pytest

from hookcast.actors.delivery import RetryPolicy
from hookcast.actors.sender import LATE_S
from hookcast.cluster.ledger import BatchStatus, RunStatus

from .fakes import CONTACTS_PER_BATCH, OK, Answer, FakeClock, FakePool, Request
from .test_coordinator import busiest, by_seq, coordinator

REFUSED = Answer(400, error="HTTP 400", excerpt='{"error": "schema"}')


# -- the canary ---------------------------------------------------------------------------


def test_an_endpoint_that_refuses_everything_sees_only_the_canary(ledger, clock) -> None:
    pool = FakePool(clock, size=2, answer=lambda r, n: REFUSED)
    run = coordinator(ledger, clock, pool, batches=40, canary_batches=3)

    assert run.run() is RunStatus.ABORTED
    assert len(pool.requests) == 3
    assert run.canary_failed is not None and '{"error": "schema"}' in run.canary_failed
    statuses = Counter(b.status for b in ledger.batches("run-1"))
    # The canary's are dead letters (replay), the rest never left (resume).
    assert statuses == {BatchStatus.DEAD_LETTERED: 3, BatchStatus.PLANNED: 37}
    assert [by_seq(ledger)[s].attempts for s in range(3)] == [1, 1, 1]
    assert run.progress.failed_batches == 3


def test_retries_used_up_count_as_a_canary_failure(ledger, clock) -> None:
    pool = FakePool(clock, answer=lambda r, n: Answer(503))
    retry = RetryPolicy(max_attempts=2, backoff_base_s=0.1, backoff_max_s=0.1)
    run = coordinator(ledger, clock, pool, batches=10, canary_batches=3, retry=retry)

    assert run.run() is RunStatus.ABORTED
    assert len(pool.requests) == 6  # 3 batches, 2 attempts each
    assert "gave up after 2 attempts" in (run.canary_failed or "")


def test_one_canary_batch_through_releases_the_rest(ledger, clock) -> None:
    pool = FakePool(clock, size=2, answer=lambda r, n: REFUSED if r.seq == 0 else OK)
    run = coordinator(ledger, clock, pool, batches=30, canary_batches=3, max_in_flight=8)

    assert run.run() is RunStatus.FAILED
    first_answer = min(r.at for r in pool.requests) + pool.latency_s
    assert {r.seq for r in pool.requests if r.at < first_answer} <= {0, 1, 2}
    batches = by_seq(ledger)
    assert batches[0].status == BatchStatus.DEAD_LETTERED
    assert '{"error": "schema"}' in (batches[0].reason or "")
    assert all(batches[s].status == BatchStatus.DELIVERED for s in range(1, 30))
    assert pool.most_in_flight == 8  # full speed once the canary passed


def test_a_413_does_not_fail_the_canary(ledger, clock) -> None:
    pool = FakePool(clock, answer=lambda r, n: Answer(413) if r.seq < 3 else OK)
    run = coordinator(ledger, clock, pool, batches=10, canary_batches=3)

    assert run.run() is RunStatus.FAILED
    assert by_seq(ledger)[9].status == BatchStatus.DELIVERED


def test_canary_zero_is_off(ledger, clock) -> None:
    pool = FakePool(clock, answer=lambda r, n: REFUSED)
    run = coordinator(ledger, clock, pool, batches=12, canary_batches=0)

    assert run.run() is RunStatus.FAILED
    assert len(pool.requests) == 12


# -- limits by contacts and by day --------------------------------------------------------


def test_contacts_per_second_holds_over_sliding_windows(ledger, clock) -> None:
    rate = 2_000.0  # contacts/s; batches of 10 -> 200 requests/s at most
    sizes = {seq: CONTACTS_PER_BATCH if seq % 7 else 3 for seq in range(3_000)}
    pool = FakePool(clock, size=2, latency_s=0.02)
    run = coordinator(ledger, clock, pool, batches=3_000, contacts_per_second=rate, sizes=sizes)
    started = clock.t

    assert run.run() is RunStatus.SUCCEEDED
    released = sorted((r.at, sizes[r.seq]) for r in pool.requests)
    times = [t for t, _ in released]
    weights = [w for _, w in released]
    for window_s in (5.0, 1.0, 0.25, 0.1):
        most = max(sum(weights[i : busiest_end(times, i, window_s)]) for i in range(len(times)))
        # One batch over, and what a request released up to LATE_S after its slot adds.
        assert most <= rate * (window_s + LATE_S) + CONTACTS_PER_BATCH, (window_s, most)
    total = sum(sizes.values())
    assert clock.t - started <= total / rate + 1.0  # the limit is used, not undershot


def busiest_end(times: list[float], i: int, window_s: float) -> int:
    import bisect

    return bisect.bisect_left(times, times[i] + window_s)


def test_both_rates_hold_together(ledger, clock) -> None:
    pool = FakePool(clock, latency_s=0.01)
    run = coordinator(
        ledger, clock, pool, batches=400, requests_per_second=50, contacts_per_second=300
    )
    assert run.run() is RunStatus.SUCCEEDED
    times = pool.released_at()
    assert busiest(times, 1.0) <= 300 / CONTACTS_PER_BATCH + 1  # contacts bind: 30 req/s


def test_the_quota_sends_what_fits_and_ends_interrupted(ledger, clock) -> None:
    pool = FakePool(clock)
    run = coordinator(ledger, clock, pool, batches=20, contacts_budget=95)

    assert run.run() is RunStatus.INTERRUPTED
    assert run.quota_reached
    assert len(pool.requests) == 9  # 9 batches of 10 fit in 95
    statuses = Counter(b.status for b in ledger.batches("run-1"))
    assert statuses == {BatchStatus.DELIVERED: 9, BatchStatus.PLANNED: 11}


def test_a_quota_used_up_sends_nothing(ledger, clock) -> None:
    pool = FakePool(clock)
    run = coordinator(ledger, clock, pool, batches=5, contacts_budget=0)
    assert run.run() is RunStatus.INTERRUPTED
    assert pool.requests == []


def request_times(requests: list[Request]) -> list[float]:
    return sorted(r.at for r in requests)


# -- the circuit breaker ------------------------------------------------------------------


def down_between(start: float, end: float, clock: FakeClock) -> object:
    """An endpoint that refuses connections from ``start`` to ``end`` (fake clock time)."""

    def answer(request: Request, n: int) -> Answer:
        if start <= clock.t < end:
            return Answer(None, error="ConnectError: connection refused")
        return OK

    return answer


def test_an_outage_is_waited_out_without_dead_letters(ledger, clock) -> None:
    from hookcast.actors.breaker import BreakerSettings

    outage = (clock.t + 0.3, clock.t + 60.3)  # the endpoint goes down at 0.3 s for a minute
    pool = FakePool(clock, size=2, answer=down_between(*outage, clock), latency_s=0.05)
    retry = RetryPolicy(max_attempts=6, backoff_base_s=0.5, backoff_max_s=30)
    run = coordinator(
        ledger, clock, pool, batches=200, retry=retry, breaker=BreakerSettings(), max_in_flight=8
    )

    assert run.run() is RunStatus.SUCCEEDED
    assert Counter(b.status for b in ledger.batches("run-1")) == {BatchStatus.DELIVERED: 200}
    during = [r for r in pool.requests if outage[0] <= r.at < outage[1]]
    # 35 of the last 50 answers (after 48 successes), and what was in flight then.
    failed_before_trip = 35 + 8
    probes = 2  # at +30 s and, after the pause doubled, +90 s (the endpoint is back at +60)
    assert len(during) <= failed_before_trip + probes, len(during)
    assert run.breaker is not None and run.breaker.state == "closed"
    assert clock.t - outage[1] < 40  # back to work at the probe after the outage


def test_an_outage_longer_than_max_outage_s_stops_the_run_resumable(ledger, clock) -> None:
    from hookcast.actors.breaker import BreakerSettings
    from hookcast.actors.errors import RunAbortedError

    pool = FakePool(clock, answer=down_between(0, 1e9, clock), latency_s=0.05)
    breaker = BreakerSettings(open_s=10, max_outage_s=100)
    retry = RetryPolicy(max_attempts=6, backoff_base_s=0.5, backoff_max_s=30)
    run = coordinator(ledger, clock, pool, batches=50, retry=retry, breaker=breaker)

    with pytest.raises(RunAbortedError, match="max_outage_s"):
        run.run()
    statuses = Counter(b.status for b in ledger.batches("run-1"))
    assert BatchStatus.DEAD_LETTERED not in statuses
    assert len(pool.requests) <= 10 + 8 + 5  # the trip, then a probe at 10, 30, 70 s...


# -- adaptive concurrency -----------------------------------------------------------------


def test_concurrency_settles_under_an_endpoint_that_refuses_more_than_c(ledger, clock) -> None:
    capacity = 4
    pool = FakePool(clock, size=2, latency_s=0.05)

    def answer(request: Request, n: int) -> Answer:
        return Answer(503) if pool._in_flight > capacity else OK

    pool.answer = answer
    retry = RetryPolicy(max_attempts=30, backoff_base_s=0.01, backoff_max_s=0.05)
    run = coordinator(
        ledger, clock, pool, batches=600, retry=retry, max_in_flight=16, adaptive=True
    )

    assert run.run() is RunStatus.SUCCEEDED
    refused = sum(r.status == 503 for r in pool.requests)
    assert refused < 0.2 * len(pool.requests), (refused, len(pool.requests))
    assert 0.8 * capacity <= run.concurrency.limit <= 1.3 * capacity + 1


def test_a_clean_endpoint_gets_every_request_in_flight_that_is_allowed(ledger, clock) -> None:
    pool = FakePool(clock, size=2, latency_s=0.05)
    run = coordinator(ledger, clock, pool, batches=300, max_in_flight=8, adaptive=True)
    assert run.run() is RunStatus.SUCCEEDED
    assert run.concurrency.limit == 8
    assert pool.most_in_flight == 8
