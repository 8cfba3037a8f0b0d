"""A run's metrics without Ray in its process (``cluster/metrics_relay.py``): when the run is
worth starting Ray for, what it hands over (everything from its first request, added up) and
when. A fake relay and clock: no Ray, no process."""

from __future__ import annotations

import pytest

from hookcast.actors.delivery import AttemptResult, Outcome
from hookcast.cluster.metrics import MetricDeltas
from hookcast.cluster.metrics_relay import (
    HAND_OVER_EVERY_S,
    LEFT_AT_LEAST_S,
    SENDING_BEFORE_S,
    RelayedMetrics,
    worth_starting,
)

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


# -- MetricDeltas -------------------------------------------------------------------------------


def _answer(outcome: Outcome, contacts: int = 500, status: int | None = 200) -> AttemptResult:
    return AttemptResult(0, 1, outcome, status, 0.02, contacts, 1000)


def test_deltas_count_what_a_run_records_and_start_again_from_zero() -> None:
    deltas = MetricDeltas()
    deltas.attempt(_answer(Outcome.DELIVERED), retry=False)
    deltas.attempt(_answer(Outcome.RETRY, status=503), retry=True)
    deltas.attempt(_answer(Outcome.LATE, status=None), retry=False)  # not sent: not counted
    deltas.dead_letter()
    deltas.waited(0.25)
    deltas.set_queued(7)
    deltas.set_guards(4, "open")

    taken = deltas.take()

    assert taken["requests"] == {"delivered": 1, "retry": 1}
    assert (taken["contacts"], taken["retries"], taken["dead_letters"]) == (500, 1, 1)
    assert taken["latencies_s"] == [0.02, 0.02] and taken["rate_wait_s"] == 0.25
    assert (taken["queued"], taken["in_flight_limit"], taken["breaker"]) == (7, 4, "open")
    again = deltas.take()
    assert again["requests"] == {} and again["contacts"] == 0 and again["latencies_s"] == []
    assert again["queued"] == 7  # a gauge keeps its value
    assert MetricDeltas(**taken).take() == taken  # what the relay rebuilds from JSON


# -- RelayedMetrics -----------------------------------------------------------------------------


class FakeRelay:
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.closed = False

    def send(self, deltas: dict) -> None:
        self.sent.append(deltas)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def relays() -> list[FakeRelay]:
    return []


def _metrics(contacts: int, now: list[float], relays: list[FakeRelay]) -> RelayedMetrics:
    def start(job: str, endpoint: str) -> FakeRelay:
        assert (job, endpoint) == ("job", "http://x/")
        relays.append(FakeRelay())
        return relays[-1]

    return RelayedMetrics("job", "http://x/", contacts, start_relay=start, clock=lambda: now[0])


def test_a_long_run_starts_its_relay_and_hands_over_everything_from_its_first_request(
    relays,
) -> None:
    now = [100.0]
    metrics = _metrics(10_000_000, now, relays)
    metrics.attempt(_answer(Outcome.DELIVERED), retry=False)
    metrics.dead_letter()
    assert relays == []

    now[0] += SENDING_BEFORE_S  # 1,000 delivered in 1 s of 10M: hours to go
    metrics.attempt(_answer(Outcome.DELIVERED), retry=False)

    (relay,) = relays
    assert relay.sent[0]["contacts"] == 1000 and relay.sent[0]["dead_letters"] == 1
    metrics.attempt(_answer(Outcome.DELIVERED), retry=False)
    assert len(relay.sent) == 1  # handed over every HAND_OVER_EVERY_S, not every answer
    now[0] += HAND_OVER_EVERY_S
    metrics.attempt(_answer(Outcome.DELIVERED), retry=False)
    assert [d["contacts"] for d in relay.sent] == [1000, 1000]

    metrics.close()
    assert relay.closed and sum(d["contacts"] for d in relay.sent) == 2000


def test_a_short_run_starts_no_relay(relays) -> None:
    now = [0.0]
    metrics = _metrics(5000, now, relays)
    for _ in range(10):
        metrics.attempt(_answer(Outcome.DELIVERED), retry=False)
        now[0] += 0.2
    metrics.close()

    assert relays == [] and not metrics.started
