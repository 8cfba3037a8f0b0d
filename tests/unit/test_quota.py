"""The daily quota (actors/quota.py): the local day it counts over, across DST changes, what
is left of it, the note a run stopped by it ends with, and which zone a job's day starts in."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from hookcast.actors.quota import (
    DailyQuota,
    contacts_left,
    day_window,
    local_time_text,
    quota_note,
)

HOUR = 3600.0


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _local(text: str, tz: str, fold: int = 0) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz), fold=fold).timestamp()


# -- day_window ----------------------------------------------------------------------------------


def test_new_york_spring_forward_day_is_23_hours_from_local_midnight() -> None:
    tz = "America/New_York"
    start, end = day_window(_local("2026-03-08T12:00", tz), tz)

    assert start == _utc("2026-03-08T05:00")  # midnight EST (-5)
    assert end == _utc("2026-03-09T04:00")  # midnight EDT (-4)
    assert end - start == 23 * HOUR


def test_new_york_fall_back_day_is_25_hours_and_holds_both_1_30s() -> None:
    tz = "America/New_York"
    first = _local("2026-11-01T01:30", tz, fold=0)  # EDT
    second = _local("2026-11-01T01:30", tz, fold=1)  # an hour later, EST
    assert second - first == HOUR

    assert day_window(first, tz) == day_window(second, tz)
    start, end = day_window(second, tz)
    assert start == _utc("2026-11-01T04:00")  # midnight EDT
    assert end == _utc("2026-11-02T05:00")  # midnight EST
    assert end - start == 25 * HOUR


def test_new_york_days_around_the_changes_are_24_hours() -> None:
    tz = "America/New_York"
    for day in ("2026-03-07", "2026-03-09", "2026-10-31", "2026-11-02"):
        start, end = day_window(_local(f"{day}T09:00", tz), tz)
        assert end - start == 24 * HOUR, day


def test_shanghai_day_starts_at_16_00_utc_the_day_before() -> None:
    tz = "Asia/Shanghai"
    start, end = day_window(_local("2026-12-03T23:59:59", tz), tz)

    assert start == _utc("2026-12-02T16:00")
    assert end == _utc("2026-12-03T16:00")


def test_the_window_is_half_open_midnight_belongs_to_the_new_day() -> None:
    tz = "Asia/Shanghai"
    midnight = _local("2026-12-04T00:00", tz)

    assert day_window(midnight, tz) == (midnight, midnight + 24 * HOUR)
    assert day_window(midnight - 0.001, tz)[1] == midnight


def test_a_day_whose_midnight_is_skipped_starts_at_the_change() -> None:
    # Chile springs forward at 24:00 on 2026-09-05: 00:00-00:59 on 09-06 never happens.
    tz = "America/Santiago"
    start, end = day_window(_local("2026-09-06T12:00", tz), tz)

    assert datetime.fromtimestamp(start, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M") == (
        "2026-09-06 01:00"
    )
    assert end - start == 23 * HOUR


def test_utc_day() -> None:
    assert day_window(_utc("2026-12-03T10:20:30"), "UTC") == (
        _utc("2026-12-03T00:00"),
        _utc("2026-12-04T00:00"),
    )


# -- what is left, and the note ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quota", "delivered", "left"),
    [(3000, 0, 3000), (3000, 2500, 500), (3000, 3000, 0), (3000, 3500, 0)],
)
def test_contacts_left_is_the_quota_less_what_was_delivered_never_below_0(
    quota: int, delivered: int, left: int
) -> None:
    assert contacts_left(quota, delivered) == left


def test_the_note_names_the_quota_the_endpoint_the_count_the_reset_and_the_command() -> None:
    tz = "Asia/Shanghai"
    reset = _local("2026-12-04T00:00", tz)
    note = quota_note(
        quota=DailyQuota(2_000_000, tz),
        endpoint="https://x.example/y",
        delivered_today=1_999_500,
        resets_at=reset,
        run_id="daily-20261203T100000-ab12",
        now=reset - 5 * HOUR,
    )

    assert note == (
        "the daily quota of 2,000,000 contacts for https://x.example/y was reached "
        "(1,999,500 delivered today); it resets at 2026-12-04 00:00 Asia/Shanghai: "
        "`hookcast resume daily-20261203T100000-ab12` then sends the rest"
    )


def test_the_note_of_a_run_that_went_on_past_midnight_says_resume_now() -> None:
    reset = _utc("2026-12-04T00:00")
    note = quota_note(
        quota=DailyQuota(3000, "UTC"),
        endpoint="https://x.example/y",
        delivered_today=3000,
        resets_at=reset,
        run_id="r1",
        now=reset + 60,
    )

    assert "it reset at 2026-12-04 00:00 UTC" in note
    assert "`hookcast resume r1` sends the rest now" in note


def test_local_time_text_is_in_the_quota_zone() -> None:
    assert local_time_text(_utc("2026-12-03T16:00"), "Asia/Shanghai") == (
        "2026-12-04 00:00 Asia/Shanghai"
    )


# -- which zone a job's day starts in ------------------------------------------------------------


def _job(tmp_path: Path, **rate_and_trigger: object):
    from hookcast.cluster.job import load_job_text

    spec: dict = {
        "name": "quota-job",
        "webhook": {"url": "https://hooks.example/in"},
        "audience": {"source": "contacts.parquet"},
    }
    spec.update(rate_and_trigger)
    return load_job_text(yaml.safe_dump(spec), tmp_path / "job.yaml")


def test_a_job_without_daily_contacts_has_no_quota(tmp_path: Path) -> None:
    from hookcast.cluster.runs import daily_quota

    assert daily_quota(_job(tmp_path)) is None


@pytest.mark.parametrize(
    ("rate_limit", "trigger", "zone"),
    [
        ({"daily_contacts": 3000}, None, "UTC"),
        (
            {"daily_contacts": 3000},
            {"type": "immediate", "timezone": "Asia/Shanghai"},
            "Asia/Shanghai",
        ),
        (
            {"daily_contacts": 3000, "timezone": "America/New_York"},
            {"type": "immediate", "timezone": "Asia/Shanghai"},
            "America/New_York",
        ),
    ],
    ids=["utc-by-default", "the-trigger-zone", "rate_limit.timezone-first"],
)
def test_the_day_starts_in_rate_limit_timezone_else_the_triggers_else_utc(
    tmp_path: Path, rate_limit: dict, trigger: dict | None, zone: str
) -> None:
    from hookcast.cluster.runs import daily_quota

    changes: dict = {"rate_limit": rate_limit}
    if trigger is not None:
        changes["trigger"] = trigger
    assert daily_quota(_job(tmp_path, **changes)) == DailyQuota(3000, zone)
