"""When a job fires: the trigger compiled into a ``Schedule``, and its fire times. Plain Python.

Nothing here reads a clock: every function that depends on the time takes it as an argument
(``now``, ``after``), so tests move time instead of sleeping. How a trigger is written (cron,
friendly ``every`` forms, datetimes) is read and checked by ``trigger_syntax``.

Triggers
    immediate   the default; the scheduler never fires it (``hookcast run`` sends it now).
    once        fires at ``at``: an ISO datetime with an offset, or a local time in ``timezone``.
    recurring   a 5-field ``cron`` or a friendly ``every``, in ``timezone`` (IANA, default
                UTC), optionally bounded by ``start`` / ``end`` (both inclusive).

Daylight saving
    Cron fields are wall-clock times in the job's timezone. A wall time that a spring-forward
    skips fires once, at the first valid minute after the gap: a daily 02:30 job in
    America/New_York fires at 03:00 EDT on 8 March 2026, and an hourly job's 02:00 fire
    becomes the 03:00 fire (one fire, not two). A wall time that occurs twice in autumn fires
    once, at its first occurrence: a daily 01:30 job fires at 01:30 EDT on 1 November 2026,
    not again at 01:30 EST, and an hourly job fires at 01:00 EDT and next at 02:00 EST. A
    naive ``at``, ``start`` or ``end`` is read by the same rule. croniter walks the wall clock
    here (naive datetimes) and this module places each wall time on the timeline itself,
    because croniter's own timezone handling fires a repeated autumn time twice.

Aware datetimes that share a tzinfo compare by wall time, ignoring ``fold`` (so 01:30 EDT
equals 01:30 EST in Python): compare fire times through ``.astimezone(timezone.utc)``, as
this module does, or by ``fire_id``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from hookcast.actors.errors import TriggerError
from hookcast.actors.trigger_syntax import (
    Kind,
    check_kind,
    friendly_to_cron,
    localize,
    never_fires,
    parse_datetime,
    time_zone,
    validate_cron,
)

__all__ = [
    "Kind",
    "Schedule",
    "TriggerError",
    "compile_trigger",
    "due_fires",
    "fire_id",
    "friendly_to_cron",
    "next_fires",
    "require_fires",
    "schedule_from",
    "validate_cron",
]

# A cron that finds no fire within this many years is rejected as one that never fires.
NEVER_FIRES_YEARS = 5
_CRON_EXAMPLE = '"0 9 * * 1"'


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated trigger. Datetimes are aware, in ``timezone``; ``cron`` is 5 fields, also
    for a friendly ``every`` (kept as written, for display)."""

    kind: Kind
    at: datetime | None
    cron: str | None
    timezone: str
    start: datetime | None
    end: datetime | None
    every: str | None = None


def schedule_from(
    type: str,
    at: str | datetime | None,
    cron: str | None,
    every: str | None,
    timezone: str,
    start: str | datetime | None,
    end: str | datetime | None,
) -> Schedule:
    """A trigger's fields, checked and compiled into a ``Schedule``, without a clock.

    The keyword names match ``TriggerSpec``'s fields. Naive datetimes are local times in
    ``timezone``. Raises ``TriggerError`` whose message names the key; whether the trigger
    will still fire from some moment on is ``require_fires``'s question.
    """
    zone = time_zone(timezone)
    kind = check_kind(type)
    given = {"at": at, "cron": cron, "every": every, "start": start, "end": end}
    allowed = {"immediate": (), "once": ("at",), "recurring": ("cron", "every", "start", "end")}
    for key, value in given.items():
        if value is not None and key not in allowed[kind]:
            owner = "once" if key == "at" else "recurring"
            default = " (the default)" if kind == "immediate" else ""
            raise TriggerError(
                f"trigger.{key} applies to type {owner}, but trigger.type is {kind}{default}: "
                f"set type: {owner}, or remove trigger.{key}."
            )
    if kind == "immediate":
        return Schedule("immediate", None, None, timezone, None, None)
    if kind == "once":
        if at is None:
            raise TriggerError(
                "trigger.type once needs trigger.at: give the datetime to fire at, like "
                'at: "2026-12-01T09:00:00+08:00" (or a local time plus trigger.timezone).'
            )
        return Schedule("once", parse_datetime("trigger.at", at, zone), None, timezone, None, None)
    if cron is None and every is None:
        raise TriggerError(
            "trigger.type recurring needs trigger.cron or trigger.every: give a schedule, "
            f'like cron: {_CRON_EXAMPLE} or every: "day at 09:00".'
        )
    if cron is not None and every is not None:
        raise TriggerError(
            f'trigger.cron "{cron}" and trigger.every "{every}" are both given: keep one.'
        )
    expr = validate_cron(cron) if cron is not None else friendly_to_cron(every or "")
    start_at = None if start is None else parse_datetime("trigger.start", start, zone)
    end_at = None if end is None else parse_datetime("trigger.end", end, zone)
    if start_at is not None and end_at is not None and _utc(end_at) <= _utc(start_at):
        raise TriggerError(
            f"trigger.end {end_at.isoformat()} is not after trigger.start "
            f"{start_at.isoformat()}: the end of the window must come after its start."
        )
    schedule = Schedule("recurring", None, expr, timezone, start_at, end_at, every)
    _require_cron_fires(schedule, start_at)
    return schedule


def require_fires(schedule: Schedule, now: datetime) -> None:
    """Raise ``TriggerError`` unless ``schedule`` still fires after ``now``: ``at`` in the
    future, a recurring ``end`` in the future with a fire before it."""
    _require_aware(now, "now")
    zone = ZoneInfo(schedule.timezone)
    shown_now = now.astimezone(zone).isoformat()
    if schedule.kind == "once" and schedule.at is not None and _utc(schedule.at) <= _utc(now):
        raise TriggerError(
            f"trigger.at {schedule.at.isoformat()} is in the past (now is {shown_now}): give "
            "a later time, or use type immediate to send now."
        )
    if schedule.kind != "recurring":
        return
    _require_cron_fires(schedule, now)
    end_at, start_at = schedule.end, schedule.start
    if end_at is None:
        return
    if _utc(end_at) <= _utc(now):
        raise TriggerError(
            f"trigger.end {end_at.isoformat()} is in the past (now is {shown_now}): nothing "
            "would fire; move it later or remove it."
        )
    if not next_fires(schedule, now, 1):
        if start_at is not None and _utc(start_at) > _utc(now):
            since = f"trigger.start {start_at.isoformat()}"
        else:
            since = f"now ({shown_now})"
        raise TriggerError(
            f"{_shown_cron(schedule)} never fires between {since} and trigger.end "
            f"{end_at.isoformat()}: widen the window or change the schedule."
        )


def compile_trigger(
    type: str,
    at: str | datetime | None,
    cron: str | None,
    every: str | None,
    timezone: str,
    start: str | datetime | None,
    end: str | datetime | None,
    *,
    now: datetime | None,
) -> Schedule:
    """``schedule_from`` then, with ``now``, ``require_fires``; ``now=None`` skips the clock
    checks, for a stored job read back later. Raises ``TriggerError`` naming the key."""
    if now is not None:
        _require_aware(now, "now")
    schedule = schedule_from(type, at, cron, every, timezone, start, end)
    if now is not None:
        require_fires(schedule, now)
    return schedule


def _require_cron_fires(schedule: Schedule, origin: datetime | None) -> None:
    """A recurring cron must name days that exist, and (from ``origin``) fire within
    ``NEVER_FIRES_YEARS``."""
    expr = schedule.cron or ""
    never = never_fires(expr)
    if never is None and origin is not None:
        unbounded = Schedule("recurring", None, expr, schedule.timezone, None, None)
        if not next_fires(unbounded, origin, 1):
            never = f"within the next {NEVER_FIRES_YEARS} years"
    if never is not None:
        raise TriggerError(
            f"{_shown_cron(schedule)} never fires {never}: name days that the months named "
            "have, or L for the last day of the month."
        )


def _shown_cron(schedule: Schedule) -> str:
    if schedule.every is not None:
        return f'trigger.every "{schedule.every}"'
    return f'trigger.cron "{schedule.cron}"'


def next_fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``, aware in the job's timezone.

    None before ``start`` or after ``end``; wall times follow the daylight-saving policy of
    the module docstring. ``once``: ``[at]`` if it is after ``after``; ``immediate``: ``[]``.
    """
    _require_aware(after, "after")
    fires: list[datetime] = []
    for fire in _fires_after(schedule, after):
        if len(fires) >= count:
            break
        fires.append(fire)
    return fires


def due_fires(
    schedule: Schedule, last_fired: datetime | None, now: datetime, grace_s: float
) -> tuple[list[datetime], list[datetime]]:
    """``(due, missed)``: what to fire now, and what to record as missed, at ``now``.

    The fires considered are those after ``last_fired`` up to and including ``now``. At most
    one is due: the latest, if it is at most ``grace_s`` old; every other one is missed, so
    after a long outage one broadcast goes out, not a burst. For a job that never fired pass
    the time it was added as ``last_fired``; with ``None`` fires count from ``start`` (or
    ``at`` for ``once``), and without a start only the latest, within grace, is due and
    nothing is reported missed. The work is linear in the number of fires considered.
    """
    _require_aware(now, "now")
    if last_fired is not None:
        _require_aware(last_fired, "last_fired")
    if grace_s < 0:
        raise ValueError(f"grace_s must be at least 0, got {grace_s}")
    grace = timedelta(seconds=grace_s)
    if schedule.kind == "immediate":
        return [], []
    # Whether fires before the grace window belong to this job (and so count as missed).
    counted = last_fired is not None or schedule.kind == "once" or schedule.start is not None
    if last_fired is not None:
        after = last_fired
    elif schedule.kind == "once" and schedule.at is not None:
        after = _utc(schedule.at) - timedelta(microseconds=1)
    elif schedule.start is not None:
        after = _utc(schedule.start) - timedelta(microseconds=1)
    else:
        after = _utc(now) - grace - timedelta(microseconds=1)

    past: list[datetime] = []
    for fire in _fires_after(schedule, after):
        if _utc(fire) > _utc(now):
            break
        past.append(fire)
    if not past:
        return [], []
    if _utc(now) - _utc(past[-1]) <= grace:
        return [past[-1]], past[:-1] if counted else []
    return [], past if counted else []


def fire_id(job_name: str, due: datetime) -> str:
    """The run id of one scheduled fire: ``<job>-<UTC yyyymmddTHHMMSSZ>``.

    The same for the same job and due instant, whatever timezone ``due`` is given in, so a
    second attempt at the same fire is recognised as a double fire.
    """
    _require_aware(due, "due")
    return f"{job_name}-{_utc(due):%Y%m%dT%H%M%SZ}"


# --- the timeline -----------------------------------------------------------------------------


def _fires_after(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Fires strictly after ``after`` (and at or after ``start``), in order, until ``end``."""
    zone = ZoneInfo(schedule.timezone)
    if schedule.kind == "once":
        if schedule.at is not None and _utc(schedule.at) > _utc(after):
            yield schedule.at
        return
    if schedule.kind != "recurring" or schedule.cron is None:
        return
    lower, inclusive = _utc(after), False
    if schedule.start is not None and _utc(schedule.start) > lower:
        lower, inclusive = _utc(schedule.start), True
    end = None if schedule.end is None else _utc(schedule.end)
    for fire in _cron_instants(schedule.cron, zone, lower):
        at = _utc(fire)
        if at < lower or (at == lower and not inclusive):
            continue
        if end is not None and at > end:
            return
        yield fire


def _cron_instants(expr: str, zone: ZoneInfo, since: datetime) -> Iterator[datetime]:
    """Every instant the cron names from about ``since`` on, each once, in order.

    croniter walks naive wall-clock times; ``localize`` places each on the timeline, which
    keeps the sequence non-decreasing, so a repeat (a skipped time moved onto the next valid
    minute that is itself a fire) is dropped by comparing with the previous instant.
    """
    # One second back: a skipped wall time placed exactly on ``since`` is still found.
    cursor = (since - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None, fold=0)
    walls = croniter(expr, cursor, max_years_between_matches=NEVER_FIRES_YEARS)
    previous: datetime | None = None
    while True:
        try:
            wall = walls.get_next(datetime)
        except CroniterBadDateError:
            return
        fire = localize(wall, zone)
        if previous is not None and _utc(fire) <= previous:
            continue
        previous = _utc(fire)
        yield fire


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment.isoformat()}")
