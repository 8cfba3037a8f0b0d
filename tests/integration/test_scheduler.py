"""The scheduler actor on the real Ray: fires on time, once, and survives a restart."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ray
from typer.testing import CliRunner

from actors.scheduler import SchedulerConfig
from cli.app import app
from cluster.ledger import Ledger
from cluster.schedules import ScheduleStore
from cluster.scheduling import start_scheduler
from cluster.sink import Sink
from cluster.synth import write_audience

runner = CliRunner()


def test_once_job_is_delivered_once_by_scheduler_run(
    sink: Sink, write_job, audience_5k: Path, tmp_path: Path
) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    job = write_job(sink.url, audience_5k, trigger={"type": "once", "at": at})
    state = tmp_path / "state"
    added = runner.invoke(app, ["schedule", "add", str(job), "--state-dir", str(state)])
    assert added.exit_code == 0, added.output
    assert sink.recorder.requests == 0

    ran = runner.invoke(app, ["scheduler", "run", "--state-dir", str(state), "--until-idle"])
    assert ran.exit_code == 0, ran.output
    assert "fired test-job" in ran.output
    assert sink.recorder.contacts == 5000 and sink.recorder.duplicate_ids == 0
    first_arrival = min(a.t for a in sink.recorder.arrivals)
    assert first_arrival > 0

    again = runner.invoke(app, ["scheduler", "run", "--state-dir", str(state), "--until-idle"])
    assert again.exit_code == 0
    assert sink.recorder.contacts == 5000, "a once job fired twice"
    [run] = Ledger(state).list_runs()
    assert run.status == "succeeded" and run.run_id.startswith("test-job-")


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_minutely_job_on_a_fast_clock_fires_once_per_minute_across_a_restart(
    sink: Sink, write_job, tmp_path: Path
) -> None:
    audience = write_audience(tmp_path / "small.parquet", 300)
    job = write_job(
        sink.url, audience, trigger={"type": "recurring", "cron": "* * * * *"}, batch_size=100
    )
    state = tmp_path / "state"
    added = runner.invoke(app, ["schedule", "add", str(job), "--state-dir", str(state)])
    assert added.exit_code == 0, added.output

    # 1 real second = 20 scheduler seconds: a minute passes every 3 s.
    now = time.time()
    config = SchedulerConfig(
        grace_s=600, tick_s=0.2, time_scale=20, origin_epoch_s=now, real_origin_epoch_s=now
    )
    actor = start_scheduler(str(state), config, detached=False)
    store = ScheduleStore(state)
    try:
        assert _wait_for(lambda: len(store.fires("test-job")) >= 2, 30)
        ray.kill(actor, no_restart=False)  # the actor restarts and reloads from the store
        assert _wait_for(lambda: len(store.fires("test-job")) >= 5, 40)
        end = ray.get(actor.now.remote())
    finally:
        ray.get(actor.shutdown.remote())
        ray.kill(actor, no_restart=True)
    fires = sorted(store.fires("test-job"), key=lambda f: f.due)
    dues = [datetime.fromtimestamp(f.due, UTC) for f in fires]
    # One fire per minute, every minute from the first to the last: none twice, none missed.
    assert len(set(dues)) == len(dues)
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(dues))
    assert all(d.second == 0 for d in dues)
    assert dues[-1] <= end
    outcomes = Counter(f.outcome for f in fires)
    assert set(outcomes) <= {"fired", "skipped_overlap"}
    assert "missed" not in outcomes
    # Every fired run's contacts arrived, under run-specific keys.
    fired = [f.run_id for f in fires if f.outcome == "fired"]
    runs = {r.run_id: r for r in Ledger(state).list_runs()}
    assert set(fired) <= set(runs)
    keys_by_run = Counter(a.key.rsplit("-", 1)[0] for a in sink.recorder.arrivals)
    for run_id in fired:
        if runs[run_id].status == "succeeded":
            assert keys_by_run[run_id] == 3
