"""A run's numbers as Ray metrics, for the dashboard and any Prometheus that scrapes Ray.

The coordinator sees every attempt's result, so it records them all, in one process; the
series are tagged by job and endpoint. Ray exports them on each node's metrics port with a
``ray_`` prefix (counters also get ``_total``), about ten seconds after they change.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

from hookcast.actors.delivery import SENT, AttemptResult

_TAGS = ("job", "endpoint")
_BREAKER_VALUE = {"closed": 0.0, "half-open": 0.5, "open": 1.0}
_LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class RunMetrics:
    """Counters, gauges and histograms of one run."""

    def __init__(self, job: str, endpoint: str) -> None:
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
        if result.outcome not in SENT:  # handed back unsent (late, no token, too large)
            return
        self.requests.inc(1, {"outcome": str(result.outcome)})
        if retry:
            self.retries.inc(1)
        if result.status is not None:
            self.latency.observe(result.latency_s)
        if result.outcome == "delivered":
            self.contacts.inc(result.contacts)

    def dead_letter(self) -> None:
        self.dead_letters.inc(1)

    def waited(self, seconds: float) -> None:
        if seconds > 0:
            self.rate_wait.inc(seconds)

    def set_queued(self, batches: int) -> None:
        self.queued.set(batches)

    def set_guards(self, in_flight_limit: int, breaker: str) -> None:
        self.in_flight_limit.set(in_flight_limit)
        self.breaker_open.set(_BREAKER_VALUE.get(breaker, 0.0))
