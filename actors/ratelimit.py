"""The per-endpoint request rate, as a token bucket on an injected clock. Plain Python."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """At most ``rate`` requests a second, in bursts of at most ``burst``.

    With ``burst=1`` no sliding one-second window holds more than ``rate + 1`` requests.
    ``pause_until`` holds every request back until a time (a 429's Retry-After), so one
    sender's 429 slows the whole pool. ``rate=None`` only honours pauses.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()
        self._paused_until = 0.0

    def _refill(self, now: float) -> None:
        if self.rate is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def wait_s(self) -> float:
        """Seconds until a request may go (0.0: now)."""
        now = self._clock()
        self._refill(now)
        wait = max(0.0, self._paused_until - now)
        if self.rate is not None and self._tokens < 1.0:
            wait = max(wait, (1.0 - self._tokens) / self.rate)
        return wait

    def take(self) -> None:
        """Spend one request's permit; call when ``wait_s()`` is 0."""
        self._refill(self._clock())
        if self.rate is not None:
            self._tokens -= 1.0

    def pause_until(self, when: float) -> None:
        self._paused_until = max(self._paused_until, when)
