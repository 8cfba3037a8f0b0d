"""A circuit breaker for one endpoint, on an injected clock. Plain Python.

In the spirit of Convoy's: when most of the recent requests fail, sending more only burns
the batches' attempts and turns an outage into dead letters. So the breaker *opens*: no
request is sent and no attempt is used until a pause is over; then one *probe* request goes
(*half-open*). Its success closes the breaker; its failure opens it again with the pause
doubled. An outage that lasts too long is the run's to end (as interrupted, resumable).

    CLOSED --(>= failure_ratio of the last answers in window_s failed, >= min_requests;
              or the last min_requests answers all failed)--> OPEN
    OPEN --(pause over: allow() hands out the probe)--> HALF_OPEN
    HALF_OPEN --(probe ok)--> CLOSED        (window cleared, pause back to open_s)
    HALF_OPEN --(probe failed)--> OPEN      (pause doubled, at most max_open_s)

The breaker only decides; it never sleeps and never sends. What counts as a failure is the
caller's to say (no answer, a timeout, 5xx, 408).
"""

from __future__ import annotations

import collections
import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

SAMPLE_FACTOR = 5  # the ratio is judged over at most this many times min_requests answers


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # requests go
    OPEN = "open"  # nothing goes until the pause is over
    HALF_OPEN = "half-open"  # one probe may go, or is out


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """The job's ``circuit_breaker`` keys (``max_open_s`` is not one: the cap of the pause)."""

    failure_ratio: float = 0.7
    min_requests: int = 10
    window_s: float = 30.0
    open_s: float = 30.0  # the first pause of an outage
    max_open_s: float = 300.0  # the pause doubles up to this (or open_s, if that is longer)
    max_outage_s: float = 3600.0


class CircuitBreaker:
    """Whether requests to one endpoint may go now, from the answers of the last ones.

    Decisions on edge cases:

    * The window holds the requests *answered* in the last ``window_s`` (by the time they
      were recorded, not sent), at most the last ``SAMPLE_FACTOR`` x ``min_requests`` of
      them (50 by default). Over all of a 30 s window, an endpoint that goes down after a
      busy spell trips it only once failures outnumber every success of the last 30 s
      (~110 failing requests at 8 in flight, measured), by when batches have used up their
      attempts; over the last 10 only, a 30 % flaky endpoint trips it now and then (7 of
      10 failing: 1 % of windows). Over the last 50: a 30 % flaky endpoint practically
      never (35 of 50: ~1e-7). And ``min_requests`` failures *in a row* trip it whatever
      came before, so an outage after a busy spell trips it within 10 failures, not 35
      (a 30 % flaky endpoint: 0.3^10 = 6e-6 a position). It is trimmed lazily, on
      ``record``, ``allow`` and ``snapshot``: nothing runs in the background.
    * While OPEN, and after the pause until the probe is handed out, answers are those of
      requests that were in flight when it opened: they are ignored (they neither re-trip
      it, nor close it, nor double the pause). So are answers, while the probe is out or
      after the breaker closed, of requests sent before that, when the caller passes
      ``sent_at``; without it, any answer while the probe is out is taken as the probe's.
    * The probe that never comes back would hold the breaker HALF_OPEN for ever: there is
      no timer here. The caller must always record the probe's fate — the coordinator
      records an answer, a timeout or a lost sender, the last two as failures.
    * A probe answered after its clock passed what another pause would have been is simply
      recorded: a failure re-opens from the time of the answer, with the pause doubled.
    * ``opened`` counts every opening: the trip and each re-opening after a failed probe.
    """

    def __init__(
        self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._state = BreakerState.CLOSED  # HALF_OPEN here means: the probe is out
        self._window: collections.deque[tuple[float, bool]] = collections.deque()
        self._failures = 0  # failures in the window
        self._streak = 0  # failures in a row, up to the last answer
        self._pause_s = settings.open_s
        self._open_until = 0.0  # while OPEN: when the pause ends
        self._outage_since: float | None = None  # the first trip of the current outage
        self._probe_sent_at = 0.0
        self._closed_at = -math.inf  # answers of requests sent before this are stale
        self._opened = 0

    # -- what the caller asks ------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state as of now: an OPEN breaker whose pause is over reads HALF_OPEN."""
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """May a request be sent now? Once the pause is over this is True exactly once: the
        probe, which the caller must send and later ``record``."""
        now = self._clock()
        if self._state is BreakerState.CLOSED:
            self._trim(now)
            return True
        if self._state is BreakerState.OPEN and now >= self._open_until:
            self._state = BreakerState.HALF_OPEN
            self._probe_sent_at = now
            return True
        return False  # paused, or the probe is out

    def wait_s(self) -> float:
        """Seconds until a request may be sent: 0.0 when ``allow()`` would say True, and
        ``math.inf`` while the probe is out (only its answer can change that)."""
        if self._state is BreakerState.CLOSED:
            return 0.0
        if self._state is BreakerState.HALF_OPEN:
            return math.inf
        return max(0.0, self._open_until - self._clock())

    def outage_s(self) -> float:
        """Seconds since the first trip of the current outage (0.0 when CLOSED). An outage
        lasts from that trip until a probe succeeds, failed probes included."""
        if self._outage_since is None:
            return 0.0
        return self._clock() - self._outage_since

    def outage_too_long(self) -> bool:
        """The outage has lasted more than ``max_outage_s``: time to end the run."""
        return self.outage_s() > self.settings.max_outage_s

    # -- what the caller tells -----------------------------------------------------------------

    def record(self, ok: bool, sent_at: float | None = None) -> None:
        """One answered request (``ok=False``: it failed). ``sent_at``, on this breaker's
        clock, tells the answers of requests sent before the breaker's last change apart."""
        now = self._clock()
        if self._state is BreakerState.CLOSED:
            if sent_at is not None and sent_at < self._closed_at:
                return  # sent before the outage ended: the probe already spoke for it
            self._trim(now)
            self._window.append((now, ok))
            self._failures += not ok
            self._streak = 0 if ok else self._streak + 1
            if len(self._window) > SAMPLE_FACTOR * self.settings.min_requests:
                _, oldest_ok = self._window.popleft()
                self._failures -= not oldest_ok
            total = len(self._window)
            # A run of failures trips it at once, however many successes came before: an
            # endpoint that goes down after a busy spell (a 30 % flaky one: 0.3^10 = 6e-6).
            if self._streak >= self.settings.min_requests or (
                total >= self.settings.min_requests
                and self._failures / total >= self.settings.failure_ratio
            ):
                self._outage_since = now
                self._open(now, self.settings.open_s)
        elif self._state is BreakerState.HALF_OPEN:
            if sent_at is not None and sent_at < self._probe_sent_at:
                return  # an answer from before the breaker opened, not the probe's
            if ok:
                self._state = BreakerState.CLOSED
                self._window.clear()
                self._failures = 0
                self._streak = 0
                self._pause_s = self.settings.open_s
                self._outage_since = None
                self._closed_at = now
            else:
                cap = max(self.settings.max_open_s, self.settings.open_s)
                self._open(now, min(self._pause_s * 2, cap))
        # OPEN: the answer of a request in flight when it opened; it changes nothing.

    def snapshot(self) -> dict:
        """The breaker for ``hookcast status``, the progress bar and the metrics. While it
        is not CLOSED the window stands still: it shows the answers that tripped it."""
        now = self._clock()
        if self._state is BreakerState.CLOSED:
            self._trim(now)
        total = len(self._window)
        return {
            "state": str(self.state),
            "failure_ratio": self._failures / total if total else 0.0,
            "requests_in_window": total,
            "pause_s": self._pause_s,
            "outage_s": self.outage_s(),
            "opened": self._opened,
        }

    # -- inside --------------------------------------------------------------------------------

    def _open(self, now: float, pause_s: float) -> None:
        self._state = BreakerState.OPEN
        self._pause_s = pause_s
        self._open_until = now + pause_s
        self._opened += 1

    def _trim(self, now: float) -> None:
        horizon = now - self.settings.window_s
        while self._window and self._window[0][0] <= horizon:
            _, ok = self._window.popleft()
            self._failures -= not ok
        self._streak = min(self._streak, len(self._window))  # only answers in the window
