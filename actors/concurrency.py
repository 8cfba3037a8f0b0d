"""How many requests may be in flight to the endpoint, adapted to its answers. Plain Python.

AIMD in the spirit of Vector's adaptive request concurrency (ARC). The round-trip time
(RTT) says whether the endpoint keeps up: while more requests in flight do not make it
slower, the limit grows; once they do, or the endpoint pushes back (429, 503, a timeout),
it shrinks. The limit holds across all senders: the coordinator owns one.

The limit is judged once per *period*. A period is the requests sent during one moving-mean
RTT; it is judged once they are all answered (or, for stragglers, 3 mean RTTs later), and
the next period starts then. With the period's mean RTT:

* over the moving mean by more than 2.5 deviations (and at least 1 %): "too slow",
  limit x 0.9, rounded down;
* else, if in-flight reached the limit and the RTT stayed at or under the moving mean:
  limit + 1 (doubled, in slow start);

and a period that was not too slow joins the moving mean (EWMA, alpha 0.4, Vector's).
Back-pressure is answered at once, not at the end of a period: see ``AdaptiveConcurrency``.

Where this departs from ARC, and why. Simulated with the endpoints of
tests/unit/test_concurrency.py (10 seeds, a 10 % jitter), ARC's rules alone let the one
that queues past 10 in flight settle between 17 and 29 (these rules: 9 to 11), and the one
that answers 503 past 6 between 3 and 7 (these: 4 to 7, on average 6.0):

* A period is the requests *sent* in it, not the answers that came in it. Answers lag a
  round trip, so ARC judges a limit by requests sent under the one before; and a window of
  answers opened just after a change over-counts the quick ones.
* The deviation is that of a period's mean RTT, from the spread of the RTTs *within*
  periods (so the limit's own moves do not widen it, as they widen a deviation of period
  means), divided by the root of the period's answers.
* A too-slow period does not join the moving mean: it is the queue we made, and a mean
  that learnt it would settle wherever the queue got to. It is adopted as the new pace
  when cutting does not help: at limit 1, or after two cuts that made it no faster (the
  endpoint got slower for everyone).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

EWMA_ALPHA = 0.4  # Vector's weight of the newest period in the moving means
RTT_DEVIATIONS = 2.5  # a period this many deviations over the moving mean is too slow
# The moving mean is itself an EWMA of noisy periods: the difference of the two spreads
# by this factor more than a period's mean does.
_EWMA_SPREAD = math.sqrt(1 + EWMA_ALPHA / (2 - EWMA_ALPHA))
# A link whose RTT barely varies has a deviation near 0; rounding and wiggles under this
# share of the mean are not congestion.
RTT_TOLERANCE = 0.01
# In slow start the first periods hold one or two answers and the deviation is unknown;
# doubling past what the endpoint takes shows as a jump much larger than this.
SLOW_START_TOLERANCE = 0.25
DECREASE = 0.9  # Vector's multiplicative decrease: a slow period, a 503, a timeout
# A 429 says "too many" outright: halve. Three round trips of 429s take the limit to an
# eighth; ARC's x 0.9 once per period would take 7 periods to halve it.
THROTTLED_DECREASE = 0.5
# A round trip over the mean cuts only when two periods in a row say so: on 2 cores shared
# with the receiver, one slow period was as often the machine (a clean link's limit wandered
# 5..8 of 8, -12 % end to end, measured) as a queue.
SLOW_PERIODS_TO_CUT = 2
STRAGGLER_MEANS = 3.0  # a period is judged at the latest this many mean RTTs after it


class AdaptiveConcurrency:
    """The number of requests allowed in flight, between 1 and ``max_limit``.

    Start: slow start from ``initial`` (1 unless given). Until the first decrease the limit
    *doubles* each period that reached it without getting too slow, as TCP's does: a clean
    link gets to ``max_limit`` in about log2(max_limit) periods of 1 to 2 RTTs (simulated:
    3 RTTs for 8, 10 for 1000; 4 and 19 with a 10 % jitter), where ARC's +1 from 1 would
    take max_limit periods. An endpoint that cannot take a doubling shows it in the next
    period (RTT, back-pressure) and is cut back from there.

    Back-pressure cuts at once, by 0.9 (503, timeout: ``backpressure``) or by half (429:
    ``throttled``), and at most once per round trip: the answers to requests sent before a
    cut were sent under the old limit, and the cut was the answer to them (TCP's rule).
    So a burst of 503s past the endpoint's capacity costs 10 %, not 10 % per answer, and an
    endpoint that answers 429 to everything is halved every round trip.

    Feed it every request: ``on_send`` when it leaves (it returns the time it stamped),
    ``on_answer`` with that time as ``sent_at`` when it is answered. An answer never told
    (a lost sender) only delays its period's judgement.

    ``adaptive=False``: the limit is ``max_limit`` and every method is a no-op.
    """

    def __init__(
        self,
        max_limit: int,
        *,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        initial: int | None = None,
    ) -> None:
        if max_limit < 1:
            raise ValueError(f"max_limit must be at least 1, not {max_limit}")
        self.max_limit = max_limit
        self.adaptive = adaptive
        self._clock = clock
        start = 1 if initial is None else initial
        self._limit = min(max_limit, max(1, start)) if adaptive else max_limit
        self._slow_start = True
        self._mean: float | None = None  # the moving mean RTT of periods, None before one
        self._noise_var: float | None = None  # the moving variance of RTTs within periods
        self._cut_at = -math.inf  # the last decrease
        self._cut_rtt: float | None = None  # the last period's RTT, if it was cut for it
        self._futile_cuts = 0  # cuts in a row that made it no faster
        self._slow_periods = 0  # too-slow periods in a row, since the last cut
        self._open(clock())

    @property
    def limit(self) -> int:
        """Requests allowed in flight now (1..max_limit)."""
        return self._limit

    def on_send(self, in_flight_after: int) -> float:
        """A request left; ``in_flight_after`` counts the requests in flight with it.
        Returns the time it left, on this clock: give it back as ``on_answer``'s ``sent_at``."""
        now = self._clock()
        if self.adaptive and now < self._end:
            self._sent += 1
            self._reached = self._reached or in_flight_after >= self._limit
        return now

    def on_answer(
        self,
        rtt_s: float,
        *,
        backpressure: bool,
        throttled: bool = False,
        sent_at: float | None = None,
    ) -> None:
        """A request was answered after ``rtt_s`` (the HTTP round trip).

        ``backpressure``: a 503 or a timeout; ``throttled``: a 429 (back-pressure, halved).
        ``sent_at``: ``on_send``'s return for the request; without it, now - ``rtt_s``,
        which is later than the truth by whatever the answer took to get here, and then
        answers near a period's edges fall on the wrong side of it."""
        if not self.adaptive:
            return
        now = self._clock()
        sent = now - rtt_s if sent_at is None else sent_at
        if (backpressure or throttled) and sent >= self._cut_at:
            factor = THROTTLED_DECREASE if throttled else DECREASE
            self._cut(math.floor(self._limit * factor), now)
            self._open(now)  # the period that saw it is over; judge the new limit afresh
            return
        if self._start <= sent < self._end:
            self._answered += 1
            if backpressure or throttled:
                self._backpressure = True  # stale (sent before the last cut): no RTT rule
            else:
                # Only answers that were worked on measure the endpoint: a 429/503 comes
                # back at once, and a timeout's RTT is the timeout.
                self._n += 1
                self._sum += rtt_s
                self._sq += rtt_s * rtt_s
        if self._end == math.inf:
            self._end = now  # the first period: what was sent before the first answer
        if now >= self._end:
            late = now >= self._end + STRAGGLER_MEANS * (self._mean or 0.0)
            if late or self._answered >= self._sent:
                self._close(now)

    def snapshot(self) -> dict:
        """The limit for the metrics and ``hookcast status`` (the RTTs None before any)."""
        return {
            "limit": self._limit,
            "max": self.max_limit,
            "rtt_mean_s": self._mean,
            "rtt_dev_s": math.sqrt(self._noise_var) if self._noise_var is not None else None,
        }

    # -- inside --------------------------------------------------------------------------------

    def _open(self, now: float) -> None:
        """Start a period: the requests sent from now for one mean RTT."""
        self._start = now
        self._end = now + self._mean if self._mean is not None else math.inf
        self._sent = 0
        self._answered = 0
        self._reached = False
        self._backpressure = False
        self._n, self._sum, self._sq = 0, 0.0, 0.0

    def _close(self, now: float) -> None:
        if self._n >= 2:
            within = max(0.0, (self._sq - self._sum * self._sum / self._n) / (self._n - 1))
            if self._noise_var is None:
                self._noise_var = within
            else:
                self._noise_var += EWMA_ALPHA * (within - self._noise_var)
        if self._n and not self._backpressure:
            self._judge(self._sum / self._n, now)
        self._open(now)

    def _judge(self, rtt: float, now: float) -> None:
        """A period without back-pressure whose answers' mean RTT is ``rtt``."""
        if self._mean is None:  # the first period: nothing to compare with
            self._mean = rtt
            if self._reached:
                self._grow()
            return
        tolerance = SLOW_START_TOLERANCE if self._slow_start else RTT_TOLERANCE
        spread = RTT_DEVIATIONS * _EWMA_SPREAD * math.sqrt((self._noise_var or 0.0) / self._n)
        margin = max(spread, tolerance * self._mean)
        if rtt > self._mean + margin:
            self._slow_periods += 1
            if self._slow_periods < SLOW_PERIODS_TO_CUT and not self._slow_start:
                return  # one slow period is as often a busy machine as a queue
            self._slow_periods = 0
            no_faster = self._cut_rtt is not None and rtt >= self._cut_rtt - margin
            self._futile_cuts = self._futile_cuts + 1 if no_faster else 0
            self._cut_rtt = rtt
            if self._limit == 1 or self._futile_cuts >= 2:
                # Cutting does not help: this is the endpoint's own pace now.
                self._mean, self._cut_rtt, self._futile_cuts = rtt, None, 0
            else:
                self._cut(math.floor(self._limit * DECREASE), now)
            return
        self._cut_rtt, self._futile_cuts = None, 0
        self._slow_periods = 0
        # In slow start growth stops only at "too slow": noise around the mean must not end
        # it. After it, ARC's rule: at or under the mean (rounding aside).
        if self._reached and (self._slow_start or rtt <= self._mean * (1 + 1e-9)):
            self._grow()
        self._mean += EWMA_ALPHA * (rtt - self._mean)

    def _grow(self) -> None:
        grown = self._limit * 2 if self._slow_start else self._limit + 1
        self._limit = min(self.max_limit, grown)

    def _cut(self, limit: int, now: float) -> None:
        limit = max(1, limit)
        if limit < self._limit:
            self._limit = limit
            self._slow_start = False
            self._cut_at = now
