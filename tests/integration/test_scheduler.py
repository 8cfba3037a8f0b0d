"""The scheduler actor on the real Ray: fires on time, once, and survives a restart."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ray
from typer.testing import CliRunner

from hookcast.actors.scheduler import SchedulerConfig
from hookcast.cli.app import app
from hookcast.cluster.ledger import Ledger
from hookcast.cluster.schedule_store import ScheduleStore
from hookcast.cluster.scheduler_hooks import start_scheduler
from hookcast.cluster.testbed.sink import Sink
from hookcast.cluster.testbed.synth import write_audience

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


def test_a_dynamic_segment_is_evaluated_again_at_each_fire(
    sink: Sink, write_job, tmp_path: Path
) -> None:
    import threading

    import pyarrow as pa
    import pyarrow.parquet as pq

    from hookcast.actors.trigger import fire_id
    from hookcast.cluster.scheduler_hooks import StoreHooks

    audience = write_audience(tmp_path / "live.parquet", 200)
    job = write_job(
        sink.url,
        audience,
        audience__where="isAnonymous = false",
        trigger={"type": "recurring", "cron": "0 9 * * *"},
        batch_size=100,
    )
    state = tmp_path / "state"
    assert (
        runner.invoke(app, ["schedule", "add", str(job), "--state-dir", str(state)]).exit_code == 0
    )
    hooks = StoreHooks(str(state))

    def fire(due: datetime) -> set[int]:
        run_id = fire_id("test-job", due)
        assert hooks.claim("test-job", due, "fired", run_id)
        assert hooks.fire("test-job", due, run_id, threading.Event()) == "succeeded"
        return {i for a in sink.recorder.arrivals if a.key.startswith(run_id) for i in a.ids}

    first = fire(datetime(2026, 12, 1, 9, tzinfo=UTC))
    table = pq.read_table(audience)
    newcomer = table.slice(0, 1).to_pylist()[0] | {"id": 1, "isAnonymous": False}
    pq.write_table(
        pa.concat_tables([table, pa.Table.from_pylist([newcomer], table.schema)]), audience
    )
    second = fire(datetime(2026, 12, 2, 9, tzinfo=UTC))
    assert 1 not in first and 1 in second
    assert second - {1} == first


def test_scheduler_start_and_stop_keep_one_detached_scheduler(tmp_path: Path) -> None:
    from hookcast.cluster.scheduler_hooks import find_scheduler

    address = ray.get_runtime_context().gcs_address
    state = str(tmp_path / "state")
    for _ in range(2):  # a second start finds the running one
        started = runner.invoke(
            app, ["scheduler", "start", "--address", address, "--state-dir", state]
        )
        assert started.exit_code == 0, started.output
    assert find_scheduler() is not None
    stopped = runner.invoke(app, ["scheduler", "stop", "--address", address])
    assert stopped.exit_code == 0 and "scheduler stopped" in stopped.output
    assert _wait_for(lambda: find_scheduler() is None, 10)
