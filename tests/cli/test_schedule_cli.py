"""`hookcast schedule ...` as a user types it: validation, listing, pause/resume/remove."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from hookcast.cli.app import app
from hookcast.cluster.testbed.sink import Sink

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def test_schedule_list_shows_the_next_three_fires_in_the_jobs_timezone(
    sink: Sink, write_job, audience_5k: Path, tmp_path: Path
) -> None:
    job = write_job(
        sink.url,
        audience_5k,
        trigger={
            "type": "recurring",
            "every": "week on mon,thu at 20:30",
            "timezone": "Asia/Shanghai",
        },
    )
    state = tmp_path / "state"
    added = invoke("schedule", "add", job, "--state-dir", state)
    assert added.exit_code == 0, added.output
    listed = invoke("schedule", "list", "--json", "--state-dir", state)
    [row] = orjson.loads(listed.stdout)
    assert row["status"] == "active" and row["timezone"] == "Asia/Shanghai"
    fires = [datetime.fromisoformat(f) for f in row["next"]]
    assert len(fires) == 3
    assert all(f.utcoffset() == timedelta(hours=8) for f in fires)
    assert all((f.hour, f.minute) == (20, 30) and f.strftime("%a") in ("Mon", "Thu") for f in fires)
    assert fires == sorted(fires) and fires[0] > datetime.now(UTC)

    assert invoke("schedule", "pause", "test-job", "--state-dir", state).exit_code == 0
    paused = orjson.loads(invoke("schedule", "list", "--json", "--state-dir", state).stdout)
    assert paused[0]["status"] == "paused" and paused[0]["next"] == []
    assert invoke("schedule", "resume", "test-job", "--state-dir", state).exit_code == 0
    assert invoke("schedule", "remove", "test-job", "--state-dir", state).exit_code == 0
    assert orjson.loads(invoke("schedule", "list", "--json", "--state-dir", state).stdout) == []
    missing = invoke("schedule", "pause", "test-job", "--state-dir", state)
    assert missing.exit_code == 2 and "no scheduled job test-job" in missing.output
    assert sink.recorder.requests == 0


PAST = (datetime.now(UTC) - timedelta(days=1)).isoformat()
FUTURE = (datetime.now(UTC) + timedelta(days=2)).isoformat()
LATER = (datetime.now(UTC) + timedelta(days=9)).isoformat()

BAD_TRIGGERS = {
    "6-field cron": ({"type": "recurring", "cron": "0 0 9 * * 1"}, "trigger.cron"),
    "minute 61": ({"type": "recurring", "cron": "61 * * * *"}, "trigger.cron"),
    "step 0": ({"type": "recurring", "cron": "*/0 * * * *"}, "trigger.cron"),
    "empty cron": ({"type": "recurring", "cron": ""}, "trigger.cron"),
    "unknown timezone": (
        {"type": "recurring", "cron": "0 9 * * *", "timezone": "Mars/Olympus"},
        "trigger.timezone",
    ),
    "once without at": ({"type": "once"}, "trigger.at"),
    "at in the past": ({"type": "once", "at": PAST}, "trigger.at"),
    "end before start": (
        {"type": "recurring", "cron": "0 9 * * *", "start": LATER, "end": FUTURE},
        "trigger.end",
    ),
    "never fires": ({"type": "recurring", "cron": "0 0 30 2 *"}, "never fires"),
    "immediate": ({"type": "immediate"}, "nothing to schedule"),
}


@pytest.mark.parametrize("case", BAD_TRIGGERS, ids=str)
def test_bad_trigger_is_rejected_at_schedule_add(
    case: str, sink: Sink, write_job, audience_5k: Path, tmp_path: Path
) -> None:
    trigger, named = BAD_TRIGGERS[case]
    result = invoke(
        "schedule",
        "add",
        write_job(sink.url, audience_5k, trigger=trigger),
        "--state-dir",
        tmp_path / "state",
    )
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
    listed = invoke("schedule", "list", "--json", "--state-dir", tmp_path / "state")
    assert orjson.loads(listed.stdout) == []


def test_schedule_add_checks_the_audience_too(sink: Sink, write_job, tmp_path: Path) -> None:
    job = write_job(
        sink.url, tmp_path / "missing.parquet", trigger={"type": "recurring", "cron": "0 9 * * *"}
    )
    result = invoke("schedule", "add", job, "--state-dir", tmp_path / "state")
    assert result.exit_code == 2
    assert "audience.source" in result.output
