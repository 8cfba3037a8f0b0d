"""A run's numbers as Ray metrics, for the dashboard and any Prometheus that scrapes Ray.

The coordinator sees every attempt's result, so it records them all, in one process; the
series are tagged by job and endpoint. Ray exports them on each node's metrics port with a
``ray_`` prefix (counters also get ``_total``), about ten seconds after they change.

``RunMetrics`` records in this process's Ray; ``MetricDeltas`` adds a run's numbers up
between two hand-overs to a Ray elsewhere (``cluster/metrics_relay.py``, for a run that
sends from a process without Ray).
"""

from __future__ import annotations

import sys
from collections import Counter as Tally
from dataclasses import asdict, dataclass, field

from hookcast.actors.delivery import SENT, AttemptResult

_TAGS = ("job", "endpoint")
_BREAKER_VALUE = {"closed": 0.0, "half-open": 0.5, "open": 1.0}
_LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class RunMetrics:
    """Counters, gauges and histograms of one run."""

    def __init__(self, job: str, endpoint: str) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = {"job": job, "endpoint": endpoint}
        self.requests = Counter(
            "hookcast_requests",
            description="Requests sent, by outcome (delivered, retry, dead, gone, empty).",
            tag_keys=(*_TAGS, "outcome"),
        )
        self.contacts = Counter(
            "hookcast_contacts_delivered",
            description="Contacts in batches the endpoint acknowledged.",
            tag_keys=_TAGS,
        )
        self.retries = Counter(
            "hookcast_retries", description="Requests that were retries.", tag_keys=_TAGS
        )
        self.dead_letters = Counter(
            "hookcast_dead_letters", description="Batches dead-lettered.", tag_keys=_TAGS
        )
        self.latency = Histogram(
            "hookcast_request_latency_s",
            description="Seconds from sending a request to its answer.",
            boundaries=_LATENCY_BOUNDARIES_S,
            tag_keys=_TAGS,
        )
        self.rate_wait = Counter(
            "hookcast_rate_limit_wait_s",
            description="Seconds the run held requests back for the endpoint's rate limit.",
            tag_keys=_TAGS,
        )
        self.queued = Gauge(
            "hookcast_batches_queued",
            description="Batches read from the audience and waiting for a sender.",
            tag_keys=_TAGS,
        )
        self.in_flight_limit = Gauge(
            "hookcast_in_flight_limit",
            description="Requests allowed in flight now (adaptive concurrency).",
            tag_keys=_TAGS,
        )
        self.breaker_open = Gauge(
            "hookcast_breaker_open",
            description="The circuit breaker: 0 closed, 0.5 half-open (probing), 1 open.",
            tag_keys=_TAGS,
        )
        for metric in (
            self.in_flight_limit,
            self.breaker_open,
            self.requests,
            self.contacts,
            self.retries,
            self.dead_letters,
            self.latency,
            self.rate_wait,
            self.queued,
        ):
            metric.set_default_tags(tags)

    def attempt(self, result: AttemptResult, *, retry: bool) -> None:
        self._one(MetricDeltas.attempt, result, retry=retry)

    def dead_letter(self) -> None:
        self._one(MetricDeltas.dead_letter)

    def waited(self, seconds: float) -> None:
        self._one(MetricDeltas.waited, seconds)

    def close(self) -> None:
        """Nothing to hand over: every event was recorded as it came."""

    def _one(self, count, *args: object, **kwargs: object) -> None:
        """Record one event now, counted by ``MetricDeltas``'s rule for it."""
        deltas = MetricDeltas()
        count(deltas, *args, **kwargs)
        self.record(deltas)

    def set_queued(self, batches: int) -> None:
        self.queued.set(batches)

    def set_guards(self, in_flight_limit: int, breaker: str) -> None:
        self.in_flight_limit.set(in_flight_limit)
        self.breaker_open.set(_BREAKER_VALUE.get(breaker, 0.0))

    def record(self, deltas: MetricDeltas) -> None:
        """Add what ``deltas`` counted since the last hand-over; set the gauges it saw."""
        for outcome, n in deltas.requests.items():
            self.requests.inc(n, {"outcome": outcome})
        if deltas.retries:
            self.retries.inc(deltas.retries)
        for latency_s in deltas.latencies_s:
            self.latency.observe(latency_s)
        if deltas.contacts:
            self.contacts.inc(deltas.contacts)
        if deltas.dead_letters:
            self.dead_letters.inc(deltas.dead_letters)
        if deltas.rate_wait_s > 0:
            self.rate_wait.inc(deltas.rate_wait_s)
        if deltas.queued is not None:
            self.set_queued(deltas.queued)
        if deltas.in_flight_limit is not None and deltas.breaker is not None:
            self.set_guards(deltas.in_flight_limit, deltas.breaker)


@dataclass(slots=True)
class MetricDeltas:
    """A run's numbers since the last ``take``, kept as ``RunMetrics`` would record them:
    counts to add, the latencies seen and the gauges' last values. Plain data (JSON)."""

    requests: dict[str, int] = field(default_factory=Tally)
    contacts: int = 0
    retries: int = 0
    dead_letters: int = 0
    rate_wait_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    queued: int | None = None
    in_flight_limit: int | None = None
    breaker: str | None = None

    def attempt(self, result: AttemptResult, *, retry: bool) -> None:
        if result.outcome not in SENT:  # handed back unsent (late, no token, too large)
            return
        self.requests[str(result.outcome)] += 1
        self.retries += retry
        if result.status is not None:
            self.latencies_s.append(result.latency_s)
        if result.outcome == "delivered":
            self.contacts += result.contacts

    def dead_letter(self) -> None:
        self.dead_letters += 1

    def waited(self, seconds: float) -> None:
        self.rate_wait_s += max(0.0, seconds)

    def set_queued(self, batches: int) -> None:
        self.queued = batches

    def set_guards(self, in_flight_limit: int, breaker: str) -> None:
        self.in_flight_limit, self.breaker = in_flight_limit, breaker

    def take(self) -> dict:
        """What was counted, as plain data; counting starts again from zero (the gauges
        keep their values)."""
        taken = asdict(self)
        taken["requests"] = dict(self.requests)
        self.requests, self.latencies_s = Tally(), []
        self.contacts = self.retries = self.dead_letters = 0
        self.rate_wait_s = 0.0
        return taken


def ray_connected() -> bool:
    """Whether this process has a connected Ray (without importing Ray to find out)."""
    ray = sys.modules.get("ray")
    return ray is not None and getattr(ray, "is_initialized", bool)()
