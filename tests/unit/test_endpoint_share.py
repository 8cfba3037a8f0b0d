"""Runs that target one endpoint at once share its limits through the ledger: each holds
1/n of the rates and of max_in_flight, a run joining others waits until they have seen it,
and one run's open breaker holds them all. On a fake clock, with a real ledger."""

from __future__ import annotations

from hookcast.cluster.coordinator import SHARE_EVERY_S
from hookcast.cluster.ledger import LIVE_FOR_S, Ledger, LiveRun, RunStatus

from .fakes import EPOCH_OFFSET, FakePool
from .test_coordinator import busiest, coordinator

ENDPOINT = "https://hooks.example.com/in"
FOREVER = 1e12  # a peer that never goes stale


def peer(ledger: Ledger, **live) -> None:
    ledger.heartbeat(LiveRun("other-run", ENDPOINT, seen_at=FOREVER, **live))


def test_live_runs_see_each_other_per_endpoint_and_stale_ones_drop_out(ledger: Ledger) -> None:
    ledger.heartbeat(LiveRun("a", ENDPOINT, seen_at=100.0))
    ledger.heartbeat(LiveRun("elsewhere", "https://other.example.com/", seen_at=100.0))
    seen = ledger.heartbeat(LiveRun("b", ENDPOINT, seen_at=101.0, in_flight_limit=3))
    assert sorted(r.run_id for r in seen) == ["a", "b"]

    later = ledger.heartbeat(LiveRun("b", ENDPOINT, seen_at=101.0 + LIVE_FOR_S + 1))
    assert [r.run_id for r in later] == ["b"]  # a stopped saying so: its process died
    ledger.leave("b")
    assert [r.run_id for r in ledger.live_runs(now=101.0 + LIVE_FOR_S)] == []


def test_two_runs_hold_half_the_rate_and_half_of_max_in_flight_each(ledger, clock) -> None:
    peer(ledger)
    pool = FakePool(clock, size=2, latency_s=0.2)
    run = coordinator(
        ledger,
        clock,
        pool,
        batches=200,
        requests_per_second=40.0,
        max_in_flight=6,
        endpoint=ENDPOINT,
    )
    started = clock.t

    assert run.run() is RunStatus.SUCCEEDED
    times = pool.released_at()
    assert busiest(times, 1.0) <= 20 + 1 and busiest(times, 5.0) <= 100 + 1
    assert pool.most_in_flight <= 3
    # Joining a live run, the first request waits until the other has seen this one.
    assert times[0] - started >= 1.5 * SHARE_EVERY_S - 0.1 - 1e-6
    assert [r.run_id for r in ledger.live_runs(now=clock.wall())] == ["other-run"]  # it left


def test_alone_a_run_holds_the_whole_limit_and_starts_at_once(ledger, clock) -> None:
    pool = FakePool(clock, size=2, latency_s=0.2)
    run = coordinator(ledger, clock, pool, batches=200, requests_per_second=40.0, endpoint=ENDPOINT)
    started = clock.t

    assert run.run() is RunStatus.SUCCEEDED
    times = pool.released_at()
    assert times[0] - started < 0.1
    assert busiest(times, 5.0) >= 0.9 * 40 * 5


def test_another_runs_open_breaker_holds_this_run_too(ledger, clock) -> None:
    open_until = clock.wall() + 30.0
    ledger.heartbeat(
        LiveRun(
            "other-run", ENDPOINT, seen_at=FOREVER, breaker="open", breaker_open_until=open_until
        )
    )
    pool = FakePool(clock, size=1)
    run = coordinator(ledger, clock, pool, batches=5, endpoint=ENDPOINT)

    assert run.run() is RunStatus.SUCCEEDED
    assert min(pool.released_at()) >= open_until - EPOCH_OFFSET - 1e-6
