"""The daily quota of contacts per endpoint (``rate_limit.daily_contacts``): the day it is
counted over, what is left of it, and the note a run stopped by it ends with.

The quota is the endpoint's, not one run's: what every run of every job delivered to that
endpoint since the local day began counts (the ledger keeps when each batch was delivered,
so the count survives restarts and is shared by the scheduler's runs). A day is a calendar
day in the quota's time zone, so it is 23 or 25 hours long across a DST change. Plain
Python, no clock of its own: every function is given the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class DailyQuota:
    """``contacts`` per endpoint per day, the day starting at midnight in ``timezone``."""

    contacts: int
    timezone: str


def day_window(now_epoch: float, tz: str) -> tuple[float, float]:
    """The local day ``now_epoch`` falls in, in zone ``tz``: (the epoch its first instant,
    the epoch the next day's first instant). DST-correct: the day of a spring-forward
    change is 23 hours, of a fall-back one 25; a day whose midnight a change skips starts
    at the change."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now_epoch, zone).date()
    # fold=0: an ambiguous midnight is its first occurrence; a skipped one maps to the
    # instant of the change (the wall time before the gap, with the offset before it).
    start = datetime.combine(today, time(0), zone).timestamp()
    end = datetime.combine(today + timedelta(days=1), time(0), zone).timestamp()
    return min(start, now_epoch), end


def contacts_left(quota: int, delivered_today: int) -> int:
    """What may still be sent today (never below 0: other runs may have overshot it)."""
    return max(0, quota - delivered_today)


def local_time_text(epoch: float, tz: str) -> str:
    """``2026-12-04 00:00 Asia/Shanghai``: a time as the quota's day counts it."""
    return f"{datetime.fromtimestamp(epoch, ZoneInfo(tz)):%Y-%m-%d %H:%M} {tz}"


def quota_note(
    *,
    quota: DailyQuota,
    endpoint: str,
    delivered_today: int,
    resets_at: float,
    run_id: str,
    now: float,
) -> str:
    """The note of a run the quota stopped: the quota, the endpoint, what was delivered to
    it today, when the quota resets, and how to send the rest."""
    head = (
        f"the daily quota of {quota.contacts:,} contacts for {endpoint} was reached "
        f"({delivered_today:,} delivered today)"
    )
    reset = local_time_text(resets_at, quota.timezone)
    if now >= resets_at:  # the run went on past midnight: a new day's quota is there now
        return f"{head}; it reset at {reset}: `hookcast resume {run_id}` sends the rest now"
    return f"{head}; it resets at {reset}: `hookcast resume {run_id}` then sends the rest"
