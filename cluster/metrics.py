"""A run's numbers as Ray metrics, for the dashboard and any Prometheus that scrapes Ray.

The coordinator sees every attempt's result, so it records them all, in one process; the
series are tagged by job and endpoint. Ray exports them on each node's metrics port with a
``ray_`` prefix (counters also get ``_total``), about ten seconds after they change.

A run may start before its Ray has (``MetricsOnceConnected``): Ray drops what is recorded
before ``ray.init`` returns (checked), so that much is kept here and handed over then.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from hookcast.actors.delivery import SENT, AttemptResult
from hookcast.cluster.background_ray import worth_starting

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


def ray_connected() -> bool:
    """Whether this process has a connected Ray (without importing Ray to find out)."""
    ray = sys.modules.get("ray")
    return ray is not None and getattr(ray, "is_initialized", bool)()


# Calls kept while Ray starts: a few seconds of a run (~1,000 requests a second at most here).
_KEPT_CALLS = 100_000


class MetricsOnceConnected:
    """``RunMetrics`` for a run that may begin before its Ray: the calls made before Ray is
    connected are kept (up to ``_KEPT_CALLS``) and replayed into Ray's metrics once it is,
    so the counters start from the run's first request. A run that ends before its Ray is up
    records nothing (Ray would export it only ten seconds later).

    ``start_ray``: how to start an embedded run's Ray, called once the run is worth it
    (``background_ray.worth_starting``, from the contacts delivered so far of
    ``contacts``); None when Ray is started, or not wanted, elsewhere."""

    def __init__(
        self,
        job: str,
        endpoint: str,
        *,
        connected: Callable[[], bool] = ray_connected,
        start_ray: Callable[[], None] | None = None,
        contacts: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._job, self._endpoint, self._connected = job, endpoint, connected
        self._live: RunMetrics | None = None
        self._kept: list[tuple[str, tuple, dict]] = []
        self._start_ray, self._contacts, self._clock = start_ray, contacts, clock
        self._first_at: float | None = None  # the run's first answer (monotonic s)
        self._delivered = 0

    def _call(self, name: str, *args: object, **kwargs: object) -> None:
        if self._live is None and self._connected():
            self._live = RunMetrics(self._job, self._endpoint)
            for kept_name, kept_args, kept_kwargs in self._kept:
                getattr(self._live, kept_name)(*kept_args, **kept_kwargs)
            self._kept = []
        if self._live is not None:
            getattr(self._live, name)(*args, **kwargs)
        elif len(self._kept) < _KEPT_CALLS:
            self._kept.append((name, args, kwargs))

    def _maybe_start_ray(self, result: AttemptResult) -> None:
        now = self._clock()
        if self._first_at is None:
            self._first_at = now
        if result.outcome == "delivered":
            self._delivered += result.contacts
        if worth_starting(now - self._first_at, self._delivered, self._contacts):
            start, self._start_ray = self._start_ray, None
            start()

    def attempt(self, result: AttemptResult, *, retry: bool) -> None:
        if self._start_ray is not None and self._live is None:
            self._maybe_start_ray(result)
        self._call("attempt", result, retry=retry)

    def dead_letter(self) -> None:
        self._call("dead_letter")

    def waited(self, seconds: float) -> None:
        self._call("waited", seconds)

    def set_queued(self, batches: int) -> None:
        self._call("set_queued", batches)

    def set_guards(self, in_flight_limit: int, breaker: str) -> None:
        self._call("set_guards", in_flight_limit, breaker)
