"""When a job fires: the trigger compiled into a ``Schedule``, and its fire times. Plain Python.

Nothing here reads a clock: every function that depends on the time takes it as an argument
(``now``, ``after``), so tests move time instead of sleeping.

Triggers
    immediate   the default; the scheduler never fires it (``hookcast run`` sends it now).
    once        fires at ``at``: an ISO datetime with an offset, or a local time in ``timezone``.
    recurring   a 5-field ``cron`` or a friendly ``every`` (below), in ``timezone`` (IANA,
                default UTC), optionally bounded by ``start`` / ``end`` (both inclusive).

A cron is standard 5-field syntax (numbers, jan-dec and sun-sat names, ``*``, ranges, steps,
lists; day-of-month and day-of-week OR-ed when both are restricted), plus ``L`` (last day of
the month) and ``@daily``-style nicknames. ``#``, ``W``, seconds and years are rejected.

Friendly forms (``every``), case-insensitive, compiled to cron by ``friendly_to_cron``::

    hour at :15                   15 * * * *
    day at 09:00                  0 9 * * *
    weekday at 09:00              0 9 * * 1-5
    week on mon,thu at 20:30      30 20 * * 1,4      (names: mon or monday; "mon and thu")
    month on 1,15 at 10:00        0 10 1,15 * *      (1st, 15th; "last" is the last day)

A time is ``HH:MM`` (24-hour) or ``9am`` / ``8:30pm``. A leading ``every`` is allowed, so
``every: "every day at 09:00"`` reads as ``every: "day at 09:00"``. ``month on 31`` fires only
in months that have a 31st, as cron does; use ``last`` for the last day of every month.

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

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from hookcast.actors.errors import TriggerError

__all__ = [
    "Schedule",
    "TriggerError",
    "compile_trigger",
    "due_fires",
    "fire_id",
    "friendly_to_cron",
    "next_fires",
    "validate_cron",
]

Kind = Literal["immediate", "once", "recurring"]

# A cron that finds no fire within this many years is rejected as one that never fires.
NEVER_FIRES_YEARS = 5

_CRON_LAYOUT = "minute hour day-of-month month day-of-week"
_CRON_EXAMPLE = '"0 9 * * 1"'
_FRIENDLY_FORMS = (
    '"hour at :15", "day at 09:00", "weekday at 09:00", "week on mon,thu at 20:30", '
    '"month on 1,15 at 10:00" or "month on last at 10:00"'
)
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
# The most days each month can have (February in a leap year).
_MONTH_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i

    @property
    def span(self) -> str:
        return f"{self.low}-{self.high}"


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, tuple(d[:3] for d in _DAYS)),  # 0 and 7 are Sunday
)


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
    """Validate a job's trigger and compile it into a ``Schedule``.

    The keyword names match ``TriggerSpec``'s fields, so ``compile_trigger(**spec.model_dump(),
    now=now)`` works. Naive datetimes are local times in ``timezone``. With ``now`` the
    trigger must still fire: ``at`` in the future, a recurring ``end`` in the future with a
    fire before it. ``now=None`` skips those checks, for a stored job read back later.
    Raises ``TriggerError`` whose message names the key.
    """
    if now is not None:
        _require_aware(now, "now")
    zone = _zone(timezone)
    if type not in ("immediate", "once", "recurring"):
        raise TriggerError(
            f'trigger.type "{type}" is not allowed: give immediate, once or recurring.'
        )
    given = {"at": at, "cron": cron, "every": every, "start": start, "end": end}
    allowed = {"immediate": (), "once": ("at",), "recurring": ("cron", "every", "start", "end")}
    for key, value in given.items():
        if value is not None and key not in allowed[type]:
            owner = "once" if key == "at" else "recurring"
            default = " (the default)" if type == "immediate" else ""
            raise TriggerError(
                f"trigger.{key} applies to type {owner}, but trigger.type is {type}{default}: "
                f"set type: {owner}, or remove trigger.{key}."
            )

    if type == "immediate":
        return Schedule("immediate", None, None, timezone, None, None)

    if type == "once":
        if at is None:
            raise TriggerError(
                "trigger.type once needs trigger.at: give the datetime to fire at, like "
                'at: "2026-12-01T09:00:00+08:00" (or a local time plus trigger.timezone).'
            )
        when = _parse_datetime("trigger.at", at, zone)
        if now is not None and _utc(when) <= _utc(now):
            raise TriggerError(
                f"trigger.at {when.isoformat()} is in the past (now is "
                f"{now.astimezone(zone).isoformat()}): give a later time, or use type "
                "immediate to send now."
            )
        return Schedule("once", when, None, timezone, None, None)

    if cron is None and every is None:
        raise TriggerError(
            "trigger.type recurring needs trigger.cron or trigger.every: give a schedule, "
            f'like cron: {_CRON_EXAMPLE} or every: "day at 09:00".'
        )
    if cron is not None and every is not None:
        raise TriggerError(
            f'trigger.cron "{cron}" and trigger.every "{every}" are both given: keep one.'
        )
    key = "trigger.cron" if cron is not None else "trigger.every"
    expr = validate_cron(cron) if cron is not None else friendly_to_cron(every or "")
    start_at = None if start is None else _parse_datetime("trigger.start", start, zone)
    end_at = None if end is None else _parse_datetime("trigger.end", end, zone)
    if start_at is not None and end_at is not None and _utc(end_at) <= _utc(start_at):
        raise TriggerError(
            f"trigger.end {end_at.isoformat()} is not after trigger.start "
            f"{start_at.isoformat()}: the end of the window must come after its start."
        )
    schedule = Schedule("recurring", None, expr, timezone, start_at, end_at, every)
    shown = f'{key} "{cron if cron is not None else every}"'
    never = _never_fires(expr)
    origin = now if now is not None else start_at
    if never is None and origin is not None:
        unbounded = Schedule("recurring", None, expr, timezone, None, None)
        if not next_fires(unbounded, origin, 1):
            never = f"within the next {NEVER_FIRES_YEARS} years"
    if never is not None:
        raise TriggerError(
            f"{shown} never fires {never}: name days that the months named have, "
            "or L for the last day of the month."
        )
    if now is not None and end_at is not None:
        if _utc(end_at) <= _utc(now):
            raise TriggerError(
                f"trigger.end {end_at.isoformat()} is in the past (now is "
                f"{now.astimezone(zone).isoformat()}): nothing would fire; move it later or "
                "remove it."
            )
        if not next_fires(schedule, now, 1):
            if start_at is not None and _utc(start_at) > _utc(now):
                since = f"trigger.start {start_at.isoformat()}"
            else:
                since = f"now ({now.astimezone(zone).isoformat()})"
            raise TriggerError(
                f"{shown} never fires between {since} and trigger.end {end_at.isoformat()}: "
                "widen the window or change the schedule."
            )
    return schedule


def validate_cron(expr: str) -> str:
    """A 5-field cron, checked field by field and normalised to single spaces.

    ``@daily``-style nicknames are accepted and expanded. Raises ``TriggerError`` naming
    ``trigger.cron``, the field and its allowed values.
    """
    text = " ".join(expr.split())
    if not text:
        raise TriggerError(
            f'trigger.cron "{expr}" is empty: give a 5-field cron ({_CRON_LAYOUT}) like '
            f"{_CRON_EXAMPLE}, or use trigger.every."
        )
    text = _NICKNAMES.get(text.lower(), text)
    parts = text.split(" ")
    if len(parts) != 5:
        extra = "; seconds and years are not supported" if len(parts) > 5 else ""
        raise TriggerError(
            f'trigger.cron "{expr}" has {len(parts)} field{"s" if len(parts) != 1 else ""}: '
            f"give exactly 5 ({_CRON_LAYOUT}), like {_CRON_EXAMPLE}{extra}."
        )
    for field, part in zip(_FIELDS, parts, strict=True):
        problem = _field_problem(field, part)
        if problem:
            raise TriggerError(f'trigger.cron "{expr}" is not a valid 5-field cron: {problem}.')
    try:
        croniter(text)
    except (CroniterError, ValueError, TypeError) as exc:
        raise TriggerError(f'trigger.cron "{expr}" is not a valid 5-field cron: {exc}.') from exc
    return text


def friendly_to_cron(text: str) -> str:
    """Compile a friendly ``every`` (see the module docstring) into a 5-field cron.

    Raises ``TriggerError`` naming ``trigger.every`` and showing the accepted forms.
    """
    words = " ".join(text.lower().replace(",", " , ").split()).replace(" , ", ",").strip(" ,")
    words = re.sub(r"^every\s+", "", words)

    def fail(problem: str) -> TriggerError:
        return TriggerError(
            f'trigger.every "{text}" {problem}. The forms are {_FRIENDLY_FORMS}; '
            "for anything else give trigger.cron."
        )

    if match := re.fullmatch(r"hours?(?: at :(\d{1,2}))?", words):
        minute = int(match.group(1) or 0)
        if minute > 59:
            raise fail(f"names minute :{match.group(1)}, out of range (:00 to :59)")
        return f"{minute} * * * *"
    if match := re.fullmatch(r"(day|weekday)s? at (.+)", words):
        hour, minute = _time_of_day(match.group(2), fail)
        days = "1-5" if match.group(1) == "weekday" else "*"
        return f"{minute} {hour} * * {days}"
    if match := re.fullmatch(r"weeks? on (.+) at (.+)", words):
        hour, minute = _time_of_day(match.group(2), fail)
        weekdays = sorted({_weekday(token, fail) for token in _tokens(match.group(1))})
        return f"{minute} {hour} * * {','.join(map(str, weekdays))}"
    if match := re.fullmatch(r"months? on (.+) at (.+)", words):
        hour, minute = _time_of_day(match.group(2), fail)
        days = sorted({_month_day(token, fail) for token in _tokens(match.group(1))})
        # croniter wants "L" after the numbered days.
        ordered = [str(d) for d in days if d != 32] + (["L"] if 32 in days else [])
        return f"{minute} {hour} {','.join(ordered)} * *"
    if not words:
        raise fail("is empty")
    raise fail("is not a schedule hookcast understands")


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

    croniter walks naive wall-clock times; ``_localize`` places each on the timeline, which
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
        fire = _localize(wall, zone)
        if previous is not None and _utc(fire) <= previous:
            continue
        previous = _utc(fire)
        yield fire


def _localize(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall time in ``zone`` as an aware instant: a repeated time at its first
    occurrence, a skipped time at the first valid minute after the gap."""
    aware = wall.replace(tzinfo=zone, fold=0)
    if _exists(aware):
        return aware
    minute = aware.replace(second=0, microsecond=0)
    while not _exists(minute):
        minute = (minute.replace(tzinfo=None) + timedelta(minutes=1)).replace(tzinfo=zone)
    return minute


def _exists(aware: datetime) -> bool:
    back = aware.astimezone(timezone.utc).astimezone(aware.tzinfo)
    return back.replace(tzinfo=None) == aware.replace(tzinfo=None)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment.isoformat()}")


# --- reading the job file's values ------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        raise TriggerError(
            f'trigger.timezone "{name}" is not an IANA time zone name: use one like UTC, '
            "Europe/Berlin or Asia/Shanghai."
        ) from None


def _parse_datetime(key: str, value: str | datetime | date, zone: ZoneInfo) -> datetime:
    example = '"2026-12-01T09:00:00+08:00", or "2026-12-01T09:00" in trigger.timezone'
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        raise TriggerError(
            f"{key} {value.isoformat()} has no time of day: give a datetime like {example}."
        )
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{4}-?\d{2}-?\d{2}", text):
            raise TriggerError(
                f'{key} "{value}" has no time of day: give a datetime like {example}.'
            )
        try:
            # Python 3.10's fromisoformat does not read a trailing Z.
            moment = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text))
        except ValueError:
            raise TriggerError(
                f'{key} "{value}" is not an ISO datetime: give one like {example}.'
            ) from None
    else:
        raise TriggerError(f"{key} {value!r} is not a datetime: give one like {example}.")
    if moment.tzinfo is None or moment.utcoffset() is None:
        return _localize(moment.replace(tzinfo=None), zone)
    return moment.astimezone(zone)


def _field_problem(field: _Field, part: str) -> str | None:
    """Why one cron field is wrong, or None. Standard syntax, plus ``L`` in day-of-month."""
    for item in part.split(","):
        if not item:
            return f'{field.name} "{part}" has an empty item between commas'
        if field.name == "day-of-month" and item.upper() == "L":
            continue
        body, slash, step = item.partition("/")
        if slash:
            if not step.isdigit():
                return f'{field.name} step "{step}" in "{item}" is not a whole number'
            if int(step) == 0:
                return f'{field.name} step 0 in "{item}" never advances: a step is at least 1'
            if int(step) > field.high - field.low + 1:
                return (
                    f'{field.name} step {int(step)} in "{item}" is larger than the range '
                    f"{field.span}"
                )
        if body == "*":
            continue
        low_text, dash, high_text = body.partition("-")
        bounds = []
        for text in (low_text, high_text) if dash else (low_text,):
            if not text:
                return f'{field.name} "{item}" is missing a value'
            value, problem = _field_value(field, text)
            if problem:
                return problem
            bounds.append(value)
        if dash and bounds[0] > bounds[1]:
            return (
                f'{field.name} range "{body}" runs backwards: write the low value first, '
                "or a list like 5,6,0"
            )
    return None


def _field_value(field: _Field, text: str) -> tuple[int, str | None]:
    if text.isdigit():
        value = int(text)
        if not field.low <= value <= field.high:
            return value, f"{field.name} {value} is out of range {field.span}"
        return value, None
    if field.names and text.lower() in field.names:
        return field.low + field.names.index(text.lower()), None
    names = f" or a name ({field.names[0]}-{field.names[-1]})" if field.names else ""
    return 0, f'{field.name} "{text}" is not a number in {field.span}{names}'


def _never_fires(expr: str) -> str | None:
    """``(February has no 30th)`` when the days named are in none of the months named.

    With standard 5-field syntax that is the only way a cron can never fire: a restricted
    day-of-week is OR-ed with the day-of-month, and ``L`` exists in every month.
    """
    try:
        expanded, _ = croniter.expand(expr)
    except (CroniterError, ValueError):
        return None
    days, months, weekdays = expanded[2], expanded[3], expanded[4]
    if days == ["*"] or weekdays != ["*"] or not all(isinstance(d, int) for d in days):
        return None
    named = list(range(1, 13)) if months == ["*"] else [int(m) for m in months]
    if any(d <= _MONTH_MAX_DAYS[m - 1] for m in named for d in days):
        return None
    names = [_MONTH_NAMES[m - 1] for m in named]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    has = "has" if len(names) == 1 else "have"
    ordinals = " or ".join(_ordinal(int(d)) for d in sorted(days))
    return f"({listed} {has} no {ordinals})"


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# --- friendly forms ---------------------------------------------------------------------------

_Fail = Callable[[str], TriggerError]  # makes the error for trigger.every from a problem


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[,\s]+|\band\b", text) if t and t != "and"]


def _time_of_day(text: str, fail: _Fail) -> tuple[int, int]:
    text = text.replace(" ", "")
    if match := re.fullmatch(r"(\d{1,2}):(\d{2})", text):
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour <= 23 and minute <= 59:
            return hour, minute
    elif match := re.fullmatch(r"(\d{1,2})(?::(\d{2}))?([ap])\.?m\.?", text):
        hour, minute = int(match.group(1)), int(match.group(2) or 0)
        if 1 <= hour <= 12 and minute <= 59:
            return hour % 12 + (12 if match.group(3) == "p" else 0), minute
    raise fail(f'has "{text}" where a time goes (HH:MM from 00:00 to 23:59, or 9am)')


def _weekday(token: str, fail: _Fail) -> int:
    for number, name in enumerate(_DAYS):
        if len(token) >= 3 and name.startswith(token):
            return number
    raise fail(f'has "{token}" where a day of the week goes (mon, tue, wed, thu, fri, sat, sun)')


def _month_day(token: str, fail: _Fail) -> int:
    """A day of the month, 1-31; 32 stands for the last day."""
    if token == "last":
        return 32
    match = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?", token)
    if match and 1 <= int(match.group(1)) <= 31:
        return int(match.group(1))
    raise fail(f'has "{token}" where a day of the month goes (1 to 31, 1st, 15th or last)')
