from __future__ import annotations

import itertools
import pickle
from dataclasses import FrozenInstanceError
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hookcast.actors.errors import JobError
from hookcast.actors.trigger import (
    Schedule,
    TriggerError,
    compile_trigger,
    due_fires,
    fire_id,
    friendly_to_cron,
    next_fires,
)

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")
# The fake clock: every test passes this (or a time derived from it) as "now".
NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def compile_(now: datetime | None = NOW, **trigger: Any) -> Schedule:
    fields: dict[str, Any] = {
        "type": "recurring",
        "at": None,
        "cron": None,
        "every": None,
        "timezone": "UTC",
        "start": None,
        "end": None,
    }
    fields.update(trigger)
    return compile_trigger(**fields, now=now)


def iso(moments: list[datetime]) -> list[str]:
    return [m.isoformat() for m in moments]


def utc_gaps_h(moments: list[datetime]) -> list[float]:
    # In UTC: Python subtracts two datetimes of one zone by wall clock, ignoring DST.
    instants = [m.astimezone(UTC) for m in moments]
    return [(b - a).total_seconds() / 3600 for a, b in itertools.pairwise(instants)]


# --- friendly forms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "cron"),
    [
        ("day at 09:00", "0 9 * * *"),
        ("day at 9:05", "5 9 * * *"),
        ("every day at 09:00", "0 9 * * *"),
        ("Day at 8:30pm", "30 20 * * *"),
        ("day at 12am", "0 0 * * *"),
        ("weekday at 09:00", "0 9 * * 1-5"),
        ("week on mon,thu at 20:30", "30 20 * * 1,4"),
        ("week on Mon, Thu at 20:30", "30 20 * * 1,4"),
        ("week on thursday and monday at 20:30", "30 20 * * 1,4"),
        ("week on sun at 07:00", "0 7 * * 0"),
        ("month on 1,15 at 10:00", "0 10 1,15 * *"),
        ("month on 1st and 15th at 10:00", "0 10 1,15 * *"),
        ("month on last at 18:00", "0 18 L * *"),
        ("month on last, 1 at 18:00", "0 18 1,L * *"),
        ("hour at :15", "15 * * * *"),
        ("hour", "0 * * * *"),
    ],
)
def test_friendly_form_compiles_to_cron(every: str, cron: str) -> None:
    assert friendly_to_cron(every) == cron
    assert compile_(every=every).cron == cron


@pytest.mark.parametrize(
    ("every", "problem"),
    [
        ("fortnight", 'trigger.every "fortnight" is not a schedule hookcast understands.'),
        ("", 'trigger.every "" is empty.'),
        ("day at 25:00", 'has "25:00" where a time goes (HH:MM from 00:00 to 23:59, or 9am).'),
        ("day at 9", 'has "9" where a time goes'),
        ("week on mon,funday at 20:30", 'has "funday" where a day of the week goes'),
        ("month on 32 at 10:00", 'has "32" where a day of the month goes (1 to 31'),
        ("hour at :75", "names minute :75, out of range (:00 to :59)."),
    ],
)
def test_bad_friendly_form_names_key_and_shows_the_forms(every: str, problem: str) -> None:
    with pytest.raises(TriggerError) as caught:
        compile_(every=every)
    message = str(caught.value)
    assert message.startswith(f'trigger.every "{every}"')
    assert problem in message
    assert '"week on mon,thu at 20:30"' in message
    assert message.endswith("for anything else give trigger.cron.")


# --- next fire times across a month -----------------------------------------------------------


def test_weekly_cron_across_a_month() -> None:
    schedule = compile_(cron="0 9 * * 1")
    fires = next_fires(schedule, datetime(2026, 3, 1, tzinfo=UTC), 5)
    assert iso(fires) == [f"2026-03-{d:02d}T09:00:00+00:00" for d in (2, 9, 16, 23, 30)]


def test_friendly_week_across_a_month() -> None:
    schedule = compile_(every="week on mon,thu at 20:30", timezone="Asia/Shanghai")
    fires = next_fires(schedule, datetime(2026, 4, 1, tzinfo=SHANGHAI), 9)
    days = [(f.day, f.strftime("%a")) for f in fires]
    assert days == [
        (2, "Thu"), (6, "Mon"), (9, "Thu"), (13, "Mon"), (16, "Thu"),
        (20, "Mon"), (23, "Thu"), (27, "Mon"), (30, "Thu"),
    ]  # fmt: skip
    assert {f.strftime("%H:%M%z") for f in fires} == {"20:30+0800"}


def test_friendly_month_across_months_and_last_day() -> None:
    twice = compile_(every="month on 1,15 at 10:00")
    assert iso(next_fires(twice, datetime(2026, 1, 20, tzinfo=UTC), 4)) == [
        "2026-02-01T10:00:00+00:00",
        "2026-02-15T10:00:00+00:00",
        "2026-03-01T10:00:00+00:00",
        "2026-03-15T10:00:00+00:00",
    ]
    last = compile_(every="month on last at 18:00")
    assert [f.date().isoformat() for f in next_fires(last, NOW, 3)] == [
        "2026-02-28",
        "2026-03-31",
        "2026-04-30",
    ]


def test_daily_fires_every_day_of_a_month() -> None:
    schedule = compile_(every="day at 09:00", timezone="Europe/Berlin")
    fires = next_fires(schedule, datetime(2026, 1, 1, tzinfo=UTC), 31)
    assert [f.day for f in fires] == list(range(1, 32))
    assert {(f.hour, f.minute) for f in fires} == {(9, 0)}


def test_hourly_friendly_form() -> None:
    schedule = compile_(every="hour at :15")
    assert iso(next_fires(schedule, datetime(2026, 3, 1, 10, 15, tzinfo=UTC), 2)) == [
        "2026-03-01T11:15:00+00:00",
        "2026-03-01T12:15:00+00:00",
    ]


def test_next_fires_is_strictly_after() -> None:
    schedule = compile_(cron="0 9 * * *")
    assert next_fires(schedule, datetime(2026, 3, 1, 9, 0, tzinfo=UTC), 1)[0].day == 2
    assert next_fires(schedule, datetime(2026, 3, 1, 8, 59, 59, tzinfo=UTC), 1)[0].day == 1


def test_fires_are_in_the_job_timezone_whatever_zone_after_is_in() -> None:
    schedule = compile_(cron="0 9 * * *", timezone="Asia/Shanghai")
    fires = next_fires(schedule, datetime(2026, 3, 1, 2, 0, tzinfo=UTC), 1)
    assert fires[0].isoformat() == "2026-03-02T09:00:00+08:00"
    assert fires[0].tzinfo == SHANGHAI


def test_cron_nickname_is_expanded() -> None:
    assert compile_(cron="@daily").cron == "0 0 * * *"


# --- daylight saving: America/New_York, 2026 ----------------------------------------------------


def test_daily_0230_on_spring_forward_fires_once_at_0300_edt() -> None:
    schedule = compile_(cron="30 2 * * *", timezone="America/New_York")
    fires = next_fires(schedule, datetime(2026, 3, 6, 12, tzinfo=NEW_YORK), 4)
    assert iso(fires) == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:30 does not exist that day
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]


def test_daily_0230_on_fall_back_fires_once() -> None:
    # 02:30 is not repeated in New York (01:00-01:59 is): one fire, 25 hours after the last.
    schedule = compile_(cron="30 2 * * *", timezone="America/New_York")
    fires = next_fires(schedule, datetime(2026, 10, 30, 12, tzinfo=NEW_YORK), 3)
    assert iso(fires) == [
        "2026-10-31T02:30:00-04:00",
        "2026-11-01T02:30:00-05:00",
        "2026-11-02T02:30:00-05:00",
    ]
    assert utc_gaps_h(fires) == [25.0, 24.0]


def test_daily_0130_on_fall_back_fires_at_first_occurrence_only() -> None:
    schedule = compile_(every="day at 01:30", timezone="America/New_York")
    fires = next_fires(schedule, datetime(2026, 10, 30, 12, tzinfo=NEW_YORK), 3)
    assert iso(fires) == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",  # EDT, the first 01:30; not again at 01:30 EST
        "2026-11-02T01:30:00-05:00",
    ]


def test_after_inside_the_repeated_hour_does_not_refire_it() -> None:
    schedule = compile_(every="day at 01:30", timezone="America/New_York")
    second_0115 = datetime(2026, 11, 1, 1, 15, fold=1, tzinfo=NEW_YORK)  # 01:15 EST
    assert iso(next_fires(schedule, second_0115, 1)) == ["2026-11-02T01:30:00-05:00"]


def test_hourly_on_spring_forward_skips_nothing_and_fires_once_at_0300() -> None:
    schedule = compile_(cron="0 * * * *", timezone="America/New_York")
    fires = next_fires(schedule, datetime(2026, 3, 8, 0, 30, tzinfo=NEW_YORK), 4)
    assert iso(fires) == [
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T03:00:00-04:00",  # the 02:00 fire and the 03:00 fire are one
        "2026-03-08T04:00:00-04:00",
        "2026-03-08T05:00:00-04:00",
    ]
    assert utc_gaps_h(fires) == [1.0, 1.0, 1.0]


def test_hourly_on_fall_back_fires_the_repeated_hour_once() -> None:
    schedule = compile_(cron="0 * * * *", timezone="America/New_York")
    fires = next_fires(schedule, datetime(2026, 11, 1, 0, 30, tzinfo=NEW_YORK), 4)
    assert iso(fires) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T02:00:00-05:00",  # no second 01:00 (EST)
        "2026-11-01T03:00:00-05:00",
        "2026-11-01T04:00:00-05:00",
    ]
    assert len({fire_id("j", f) for f in fires}) == 4


def test_hourly_at_half_past_on_spring_forward_moves_the_skipped_time() -> None:
    schedule = compile_(every="hour at :30", timezone="America/New_York")
    fires = next_fires(schedule, datetime(2026, 3, 8, 1, 0, tzinfo=NEW_YORK), 3)
    assert iso(fires) == [
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:30 is skipped: first valid minute after the gap
        "2026-03-08T03:30:00-04:00",
    ]


def test_every_20_minutes_through_fall_back_has_no_repeats() -> None:
    schedule = compile_(cron="*/20 * * * *", timezone="America/New_York")
    fires = next_fires(schedule, datetime(2026, 11, 1, 0, 50, tzinfo=NEW_YORK), 5)
    assert iso(fires) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:20:00-04:00",
        "2026-11-01T01:40:00-04:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T02:20:00-05:00",
    ]


def test_no_dst_in_shanghai_across_both_us_transitions() -> None:
    schedule = compile_(cron="30 2 * * *", timezone="Asia/Shanghai")
    for start in (datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 10, 29, tzinfo=UTC)):
        fires = next_fires(schedule, start, 6)
        assert {f.strftime("%H:%M%z") for f in fires} == {"02:30+0800"}
        assert utc_gaps_h(fires) == [24.0] * 5
    hourly = compile_(cron="0 * * * *", timezone="Asia/Shanghai")
    fires = next_fires(hourly, datetime(2026, 3, 7, 12, tzinfo=UTC), 48)
    assert utc_gaps_h(fires) == [1.0] * 47


# --- start / end window -------------------------------------------------------------------------


def test_window_bounds_fires_inclusively() -> None:
    schedule = compile_(
        cron="0 9 * * *", start="2026-03-10T09:00:00+00:00", end="2026-03-12T09:00:00+00:00"
    )
    assert iso(next_fires(schedule, NOW, 10)) == [
        "2026-03-10T09:00:00+00:00",
        "2026-03-11T09:00:00+00:00",
        "2026-03-12T09:00:00+00:00",
    ]
    assert next_fires(schedule, datetime(2026, 3, 12, 9, tzinfo=UTC), 1) == []


def test_naive_window_is_local_time_in_the_job_timezone() -> None:
    schedule = compile_(
        every="day at 09:00",
        timezone="Asia/Shanghai",
        start="2026-03-10T00:00",
        end="2026-03-11T23:59",
    )
    assert schedule.start is not None
    assert schedule.start.isoformat() == "2026-03-10T00:00:00+08:00"
    assert iso(next_fires(schedule, NOW, 10)) == [
        "2026-03-10T09:00:00+08:00",
        "2026-03-11T09:00:00+08:00",
    ]


def test_start_in_the_past_is_allowed_and_only_bounds_below() -> None:
    schedule = compile_(cron="0 9 * * *", start="2025-01-01T00:00:00Z")
    assert iso(next_fires(schedule, NOW, 1)) == ["2026-02-02T09:00:00+00:00"]


def test_naive_start_inside_the_spring_gap_moves_to_0300() -> None:
    schedule = compile_(cron="30 2 * * *", timezone="America/New_York", start="2026-03-08T02:30")
    assert schedule.start is not None
    assert schedule.start.isoformat() == "2026-03-08T03:00:00-04:00"
    assert iso(next_fires(schedule, NOW, 1)) == ["2026-03-08T03:00:00-04:00"]


# --- once and immediate -------------------------------------------------------------------------


def test_once_in_the_future_fires_once() -> None:
    schedule = compile_(type="once", at="2026-12-01T09:00:00+08:00", timezone="Asia/Shanghai")
    assert schedule.kind == "once"
    assert iso(next_fires(schedule, NOW, 5)) == ["2026-12-01T09:00:00+08:00"]
    assert next_fires(schedule, datetime(2026, 12, 1, 1, tzinfo=UTC), 5) == []


def test_once_naive_at_is_local_time() -> None:
    schedule = compile_(type="once", at="2026-12-01T09:00", timezone="America/New_York")
    assert schedule.at is not None
    assert schedule.at.isoformat() == "2026-12-01T09:00:00-05:00"


def test_once_offset_at_is_shown_in_the_job_timezone() -> None:
    schedule = compile_(type="once", at="2026-12-01T01:00:00Z", timezone="Asia/Shanghai")
    assert schedule.at is not None
    assert schedule.at.isoformat() == "2026-12-01T09:00:00+08:00"


def test_once_at_in_the_repeated_hour_is_the_first_occurrence() -> None:
    schedule = compile_(type="once", at="2026-11-01T01:30", timezone="America/New_York")
    assert schedule.at is not None
    assert schedule.at.isoformat() == "2026-11-01T01:30:00-04:00"


def test_once_at_in_the_past_is_rejected() -> None:
    with pytest.raises(TriggerError) as caught:
        compile_(type="once", at="2026-01-31T09:00:00+00:00")
    assert str(caught.value) == (
        "trigger.at 2026-01-31T09:00:00+00:00 is in the past (now is 2026-02-01T12:00:00+00:00): "
        "give a later time, or use type immediate to send now."
    )


def test_now_none_skips_the_clock_checks_for_a_stored_job() -> None:
    schedule = compile_(now=None, type="once", at="2020-01-01T09:00:00+00:00")
    assert schedule.at is not None
    assert next_fires(schedule, NOW, 1) == []


def test_immediate_never_fires_on_a_schedule() -> None:
    schedule = compile_(type="immediate")
    assert schedule == Schedule("immediate", None, None, "UTC", None, None)
    assert next_fires(schedule, NOW, 3) == []
    assert due_fires(schedule, None, NOW, 60) == ([], [])


def test_schedule_is_frozen_and_pickles() -> None:
    schedule = compile_(cron="30 2 * * *", timezone="America/New_York", start="2026-03-01T00:00")
    assert pickle.loads(pickle.dumps(schedule)) == schedule
    with pytest.raises(FrozenInstanceError):
        schedule.cron = "* * * * *"  # type: ignore[misc]


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        (
            {"cron": "0 0 9 * * 1"},
            'trigger.cron "0 0 9 * * 1" has 6 fields: give exactly 5 (minute hour day-of-month '
            'month day-of-week), like "0 9 * * 1"; seconds and years are not supported.',
        ),
        (
            {"cron": "61 * * * *"},
            'trigger.cron "61 * * * *" is not a valid 5-field cron: minute 61 is out of range '
            "0-59.",
        ),
        (
            {"cron": "*/0 * * * *"},
            'trigger.cron "*/0 * * * *" is not a valid 5-field cron: minute step 0 in "*/0" '
            "never advances: a step is at least 1.",
        ),
        (
            {"cron": ""},
            'trigger.cron "" is empty: give a 5-field cron (minute hour day-of-month month '
            'day-of-week) like "0 9 * * 1", or use trigger.every.',
        ),
        (
            {"cron": "   "},
            'trigger.cron "   " is empty',
        ),
        (
            {"cron": "0 9 * * fry"},
            'trigger.cron "0 9 * * fry" is not a valid 5-field cron: day-of-week "fry" is not '
            "a number in 0-7 or a name (sun-sat).",
        ),
        (
            {"cron": "0 24 * * *"},
            "hour 24 is out of range 0-23.",
        ),
        (
            {"cron": "0 9 0 * *"},
            "day-of-month 0 is out of range 1-31.",
        ),
        (
            {"cron": "0 9 * 13 *"},
            "month 13 is out of range 1-12.",
        ),
        (
            {"cron": "30-10 * * * *"},
            'minute range "30-10" runs backwards',
        ),
        (
            {"cron": "*/90 * * * *"},
            'minute step 90 in "*/90" is larger than the range 0-59.',
        ),
        (
            {"cron": "0 0 30 2 *"},
            'trigger.cron "0 0 30 2 *" never fires (February has no 30th): ',
        ),
        (
            {"cron": "0 0 31 4,6,9,11 *"},
            'trigger.cron "0 0 31 4,6,9,11 *" never fires (April, June, September and '
            "November have no 31st): ",
        ),
        (
            {"timezone": "Mars/Olympus", "cron": "0 9 * * *"},
            'trigger.timezone "Mars/Olympus" is not an IANA time zone name: use one like UTC, '
            "Europe/Berlin or Asia/Shanghai.",
        ),
        (
            {"type": "once"},
            "trigger.type once needs trigger.at: give the datetime to fire at, like "
            'at: "2026-12-01T09:00:00+08:00" (or a local time plus trigger.timezone).',
        ),
        (
            {"type": "once", "at": "next tuesday"},
            'trigger.at "next tuesday" is not an ISO datetime: give one like '
            '"2026-12-01T09:00:00+08:00", or "2026-12-01T09:00" in trigger.timezone.',
        ),
        (
            {"type": "once", "at": "2026-12-01"},
            'trigger.at "2026-12-01" has no time of day: give a datetime like',
        ),
        (
            {"cron": "0 9 * * *", "start": "2026-05-01T00:00Z", "end": "2026-04-01T00:00Z"},
            "trigger.end 2026-04-01T00:00:00+00:00 is not after trigger.start "
            "2026-05-01T00:00:00+00:00: the end of the window must come after its start.",
        ),
        (
            {"cron": "0 9 * * *", "end": "2026-01-15T00:00Z"},
            "trigger.end 2026-01-15T00:00:00+00:00 is in the past (now is "
            "2026-02-01T12:00:00+00:00): nothing would fire; move it later or remove it.",
        ),
        (
            {"cron": "0 9 * * *", "start": "2026-05-01T10:00Z", "end": "2026-05-01T11:00Z"},
            'trigger.cron "0 9 * * *" never fires between trigger.start '
            "2026-05-01T10:00:00+00:00 and trigger.end 2026-05-01T11:00:00+00:00: widen the "
            "window or change the schedule.",
        ),
        (
            {},
            "trigger.type recurring needs trigger.cron or trigger.every",
        ),
        (
            {"cron": "0 9 * * *", "every": "day at 09:00"},
            'trigger.cron "0 9 * * *" and trigger.every "day at 09:00" are both given: keep one.',
        ),
        (
            {"type": "immediate", "cron": "0 9 * * *"},
            "trigger.cron applies to type recurring, but trigger.type is immediate (the "
            "default): set type: recurring, or remove trigger.cron.",
        ),
        (
            {"type": "once", "at": "2026-12-01T09:00Z", "end": "2026-12-02T09:00Z"},
            "trigger.end applies to type recurring, but trigger.type is once",
        ),
        (
            {"at": "2026-12-01T09:00Z", "cron": "0 9 * * *"},
            "trigger.at applies to type once, but trigger.type is recurring",
        ),
        (
            {"type": "weekly"},
            'trigger.type "weekly" is not allowed: give immediate, once or recurring.',
        ),
    ],
)
def test_bad_trigger_is_rejected_naming_the_key(trigger: dict[str, Any], message: str) -> None:
    with pytest.raises(TriggerError) as caught:
        compile_(**trigger)
    text = str(caught.value)
    assert text.startswith("trigger.")
    assert message in text


def test_trigger_error_is_a_job_error_and_pickles() -> None:
    with pytest.raises(JobError) as caught:
        compile_(cron="61 * * * *")
    again = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(again, TriggerError)
    assert str(again) == str(caught.value)


def test_naive_clock_is_a_programming_error() -> None:
    schedule = compile_(cron="0 9 * * *")
    with pytest.raises(ValueError, match="after must be an aware datetime"):
        next_fires(schedule, datetime(2026, 3, 1), 1)
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        compile_(now=datetime(2026, 3, 1), cron="0 9 * * *")


# --- fire ids -----------------------------------------------------------------------------------


def test_fire_id_is_stable_for_the_same_instant() -> None:
    due = datetime(2026, 3, 8, 3, 0, tzinfo=NEW_YORK)
    assert fire_id("double11-coupons", due) == "double11-coupons-20260308T070000Z"
    assert fire_id("double11-coupons", due.astimezone(UTC)) == fire_id("double11-coupons", due)
    assert fire_id("double11-coupons", due.astimezone(SHANGHAI)) == fire_id("double11-coupons", due)
    assert fire_id("double11-coupons", due + timedelta(minutes=1)) != fire_id(
        "double11-coupons", due
    )
    assert fire_id("other", due) != fire_id("double11-coupons", due)


def test_fire_id_tells_the_two_repeated_hours_apart() -> None:
    first = datetime(2026, 11, 1, 1, 30, fold=0, tzinfo=NEW_YORK)
    second = datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK)
    assert fire_id("j", first) == "j-20261101T053000Z"
    assert fire_id("j", second) == "j-20261101T063000Z"


# --- due and missed fires -----------------------------------------------------------------------

HOURLY = compile_(cron="0 * * * *")


def test_fire_within_grace_is_due() -> None:
    now = datetime(2026, 3, 1, 9, 0, 30, tzinfo=UTC)
    last = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert due_fires(HOURLY, last, now, grace_s=60) == ([datetime(2026, 3, 1, 9, tzinfo=UTC)], [])


def test_fire_exactly_at_now_is_due() -> None:
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    due, missed = due_fires(HOURLY, datetime(2026, 3, 1, 8, 0, tzinfo=UTC), now, grace_s=0)
    assert (due, missed) == ([now], [])


def test_nothing_due_before_the_next_fire() -> None:
    last = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert due_fires(HOURLY, last, datetime(2026, 3, 1, 9, 59, 59, tzinfo=UTC), 60) == ([], [])


def test_fire_beyond_grace_is_missed() -> None:
    now = datetime(2026, 3, 1, 9, 5, tzinfo=UTC)
    last = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert due_fires(HOURLY, last, now, grace_s=60) == (
        [],
        [datetime(2026, 3, 1, 9, tzinfo=UTC)],
    )


def test_long_outage_runs_only_the_latest_within_grace() -> None:
    last = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    now = datetime(2026, 3, 2, 6, 0, 20, tzinfo=UTC)  # down 30 hours
    due, missed = due_fires(HOURLY, last, now, grace_s=300)
    assert due == [datetime(2026, 3, 2, 6, tzinfo=UTC)]
    assert len(missed) == 29
    assert missed[0] == datetime(2026, 3, 1, 1, tzinfo=UTC)
    assert missed[-1] == datetime(2026, 3, 2, 5, tzinfo=UTC)


def test_long_outage_with_the_latest_beyond_grace_runs_nothing() -> None:
    last = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    now = datetime(2026, 3, 1, 3, 30, tzinfo=UTC)
    due, missed = due_fires(HOURLY, last, now, grace_s=300)
    assert due == []
    assert [m.hour for m in missed] == [1, 2, 3]


def test_a_fire_is_due_once_then_not_again() -> None:
    now = datetime(2026, 3, 1, 9, 0, 30, tzinfo=UTC)
    due, _ = due_fires(HOURLY, datetime(2026, 3, 1, 8, tzinfo=UTC), now, grace_s=60)
    assert due_fires(HOURLY, due[0], now + timedelta(seconds=5), grace_s=60) == ([], [])


def test_due_fires_across_fall_back_never_fires_an_hour_twice() -> None:
    schedule = compile_(cron="0 * * * *", timezone="America/New_York")
    last: datetime | None = datetime(2026, 11, 1, 0, 0, tzinfo=NEW_YORK)
    clock = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # 00:00 EDT
    fired: list[datetime] = []
    for _ in range(6 * 60):  # tick every minute for six hours
        clock += timedelta(minutes=1)
        due, missed = due_fires(schedule, last, clock, grace_s=120)
        assert missed == []
        fired += due
        last = due[-1] if due else last
    assert [f.strftime("%H:%M%z") for f in fired] == [
        "01:00-0400",
        "02:00-0500",
        "03:00-0500",
        "04:00-0500",
        "05:00-0500",
    ]


def test_once_due_within_grace_and_missed_beyond() -> None:
    schedule = compile_(type="once", at="2026-03-01T09:00:00+00:00")
    at = datetime(2026, 3, 1, 9, tzinfo=UTC)
    assert due_fires(schedule, None, at - timedelta(seconds=1), 60) == ([], [])
    assert due_fires(schedule, None, at + timedelta(seconds=59), 60) == ([at], [])
    assert due_fires(schedule, None, at + timedelta(hours=2), 60) == ([], [at])
    assert due_fires(schedule, at, at + timedelta(seconds=5), 60) == ([], [])


def test_never_fired_without_start_runs_the_latest_and_reports_nothing_missed() -> None:
    every_minute = compile_(cron="* * * * *")
    now = datetime(2026, 3, 1, 9, 0, 30, tzinfo=UTC)
    assert due_fires(every_minute, None, now, grace_s=300) == (
        [datetime(2026, 3, 1, 9, 0, tzinfo=UTC)],
        [],
    )


def test_never_fired_with_start_counts_missed_from_start() -> None:
    schedule = compile_(cron="0 * * * *", start="2026-03-01T06:00:00Z")
    now = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    due, missed = due_fires(schedule, None, now, grace_s=60)
    assert due == []
    assert [m.hour for m in missed] == [6, 7, 8]


def test_due_fires_stops_at_end() -> None:
    schedule = compile_(cron="0 * * * *", end="2026-03-01T07:30:00Z")
    last = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    now = datetime(2026, 3, 1, 9, 0, 10, tzinfo=UTC)
    assert due_fires(schedule, last, now, grace_s=60) == (
        [],
        [datetime(2026, 3, 1, 7, tzinfo=UTC)],
    )


def test_negative_grace_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="grace_s"):
        due_fires(HOURLY, None, NOW, grace_s=-1)


def test_window_that_ends_before_the_next_fire_is_rejected() -> None:
    with pytest.raises(TriggerError) as caught:
        compile_(cron="0 9 * * *", start="2026-01-01T00:00Z", end="2026-02-01T13:00Z")
    assert str(caught.value) == (
        'trigger.cron "0 9 * * *" never fires between now (2026-02-01T12:00:00+00:00) and '
        "trigger.end 2026-02-01T13:00:00+00:00: widen the window or change the schedule."
    )
