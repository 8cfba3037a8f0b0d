"""The per-endpoint request rate, on an injected clock. Plain Python.

A GCRA ("virtual scheduling") limiter: each permit is a *slot*, a time at which one
request may be sent, and slots are at least ``1 / rate`` apart. Handing out slots a little
ahead lets a request travel to its sender and wait there for its slot, so the rate holds at
the endpoint, not only where requests are dispatched.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """At most ``rate`` requests a second, in bursts of at most ``burst``.

    With ``burst=1`` no sliding one-second window holds more than ``rate + 1`` slots.
    ``pause_until`` holds every slot back until a time (a 429's Retry-After), so one
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
        self._next = clock()  # the theoretical time of the next slot
        self._paused_until = 0.0

    def _earliest(self, now: float) -> float:
        slot = max(now, self._paused_until)
        if self.rate is not None:
            slot = max(slot, self._next - (self.burst - 1) / self.rate)
        return slot

    def wait_s(self) -> float:
        """Seconds until the next slot (0.0: now)."""
        now = self._clock()
        return self._earliest(now) - now

    def take(self, weight: float = 1.0) -> float:
        """Spend the next slot; returns its time (the clock's units). ``weight`` is what the
        request counts for (its contacts, for a limit by contacts): the slot after it comes
        ``weight / rate`` later."""
        slot = self._earliest(self._clock())
        if self.rate is not None:
            self._next = max(self._next, slot) + weight / self.rate
        return slot

    def reserve(self, lead_s: float) -> float | None:
        """The next slot if it is at most ``lead_s`` away (spent), else None."""
        return self.take() if self.wait_s() <= lead_s else None

    def pause_until(self, when: float) -> None:
        self._paused_until = max(self._paused_until, when)
