"""A trigger as written in a job file: cron expressions, friendly forms, datetimes and time
zones, checked and read. Plain Python; every problem is a ``TriggerError`` naming the key.

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
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from hookcast.actors.errors import TriggerError

Kind = Literal["immediate", "once", "recurring"]
KINDS: tuple[Kind, ...] = ("immediate", "once", "recurring")

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


def check_kind(value: object) -> Kind:
    """``trigger.type`` as one of ``KINDS``; else a ``TriggerError`` naming the allowed ones."""
    if value not in KINDS:
        raise TriggerError(
            f'trigger.type "{value}" is not allowed: give immediate, once or recurring.'
        )
    return cast(Kind, value)


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


def localize(wall: datetime, zone: ZoneInfo) -> datetime:
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


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``trigger.timezone`` names; else a ``TriggerError``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        raise TriggerError(
            f'trigger.timezone "{name}" is not an IANA time zone name: use one like UTC, '
            "Europe/Berlin or Asia/Shanghai."
        ) from None


def parse_datetime(key: str, value: str | datetime | date, zone: ZoneInfo) -> datetime:
    """An ISO datetime (a trailing Z allowed) as an aware time in ``zone``; a naive one is a
    local time there (see ``localize``). Raises ``TriggerError`` naming ``key``."""
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
        return localize(moment.replace(tzinfo=None), zone)
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


def never_fires(expr: str) -> str | None:
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
