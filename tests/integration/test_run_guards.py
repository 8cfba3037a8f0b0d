"""Guards around whole runs, on the real Ray with a real receiver: one run of a job at a time,
skipped batches sent by resume once the endpoint is back, and the daily quota per endpoint
shared by every run of every job."""

from __future__ import annotations

import asyncio
import bisect
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hookcast.actors.errors import LedgerError
from hookcast.actors.quota import day_window, local_time_text
from hookcast.cli.app import app
from hookcast.cli.running import next_steps
from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import BatchStatus, Ledger, RunStatus
from hookcast.cluster.runs import replay_run, resume_run, start_run
from hookcast.cluster.testbed.sink import OK, Reply, Request, Sink


def _in_thread(target, *args) -> tuple[threading.Thread, dict]:
    """Run ``target(ledger, *args)`` in a thread with a ledger of its own (a SQLite
    connection belongs to its thread); the result or the error lands in the dict."""
    outcome: dict = {}

    def work() -> None:
        ledger = Ledger(args[0])
        try:
            outcome["result"] = target(ledger, *args[1:])
        except Exception as exc:
            outcome["error"] = exc
        finally:
            ledger.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


# -- one run of a job at a time ------------------------------------------------------------------


def test_a_run_of_a_job_that_is_running_is_refused_and_sends_nothing(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    release = threading.Event()
    arrived = threading.Event()
    keys: list[str | None] = []

    async def hold(request: Request):
        keys.append(request.key)
        arrived.set()
        while not release.is_set():
            await asyncio.sleep(0.02)
        return OK

    with Sink(behaviour=hold) as receiver:
        job = load_job(write_job(receiver.url, audience_5k, webhook__timeout_s=60))
        # An earlier run of the job, stopped before it sent anything: resumable.
        stopped = threading.Event()
        stopped.set()
        earlier = start_run(job, ledger, stop=stopped)
        assert earlier.status == RunStatus.INTERRUPTED and keys == []

        first, first_outcome = _in_thread(lambda book: start_run(job, book), ledger.state_dir)
        try:
            assert arrived.wait(60), "the first run sent nothing"
            [running] = [r for r in ledger.list_runs() if r.status == RunStatus.RUNNING]
            assert running.run_id != earlier.run_id

            second, second_outcome = _in_thread(lambda book: start_run(job, book), ledger.state_dir)
            second.join(60)
            again, again_outcome = _in_thread(
                lambda book: resume_run(book, earlier.run_id), ledger.state_dir
            )
            again.join(60)
            sent_while_running = list(keys)
        finally:
            release.set()
            first.join(120)

    refused = second_outcome.get("error")
    assert isinstance(refused, LedgerError), second_outcome
    message = str(refused)
    assert f"job test-job is already running: run {running.run_id} " in message
    assert f"pid {running.pid} on {running.host}" in message
    resume_refused = again_outcome.get("error")
    assert isinstance(resume_refused, LedgerError), again_outcome
    assert f"run {running.run_id} " in str(resume_refused)
    assert f"`hookcast resume {earlier.run_id}` can go once it has ended" in str(resume_refused)

    assert all(k and k.startswith(running.run_id) for k in sent_while_running)
    assert first_outcome["result"].status == RunStatus.SUCCEEDED
    assert all(k and k.startswith(running.run_id) for k in keys), "a refused run sent"
    assert len(receiver.recorder.delivered_ids) == 5000 and receiver.recorder.duplicate_ids == 0
    # The refused run left nothing: no run in the ledger, no frozen audience.
    runs = {r.run_id: r.status for r in ledger.list_runs()}
    assert runs == {earlier.run_id: RunStatus.INTERRUPTED, running.run_id: RunStatus.SUCCEEDED}
    assert sorted(p.name for p in (ledger.state_dir / "runs").iterdir()) == sorted(runs)


# -- skipped is not lost -------------------------------------------------------------------------


def test_batches_skipped_after_a_410_are_sent_by_resume_with_their_keys(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    back = threading.Event()

    def gone_at_third(request: Request) -> Reply:
        if request.n == 3 and not back.is_set():
            return Reply(410, body=b'{"error":"this hook was deleted"}')
        return OK

    with Sink(behaviour=gone_at_third) as receiver:
        job = load_job(write_job(receiver.url, audience_5k))
        first = start_run(job, ledger)
        skipped = ledger.batches(first.run_id, [BatchStatus.SKIPPED])
        [dead] = ledger.batches(first.run_id, [BatchStatus.DEAD_LETTERED])
        before = len(receiver.recorder.arrivals)

        back.set()
        second = resume_run(ledger, first.run_id)
        resumed = receiver.recorder.arrivals[before:]
        third = replay_run(ledger, first.run_id)

    assert first.status == RunStatus.FAILED and first.skipped_batches == len(skipped) > 0
    steps = next_steps(first)
    assert any(f"hookcast resume {first.run_id}" in s and "skipped" in s for s in steps)
    assert any(f"hookcast replay {first.run_id}" in s for s in steps)

    # Resume sent exactly the skipped batches, each once, with its planned key and contacts.
    assert Counter(a.key for a in resumed) == Counter({b.idem_key: 1 for b in skipped})
    by_key = {a.key: a.ids for a in resumed}
    for batch in skipped:
        ids = by_key[batch.idem_key]
        assert (ids[0], ids[-1], len(ids)) == (batch.first_id, batch.last_id, batch.contacts)
    assert second.status == RunStatus.FAILED  # the dead letter is replay's
    assert second.skipped_batches == 0 and second.failed_batches == 1
    assert [s for s in next_steps(second) if "resume" in s] == []

    assert third.status == RunStatus.SUCCEEDED
    assert dead.http_status == 410
    assert len(receiver.recorder.delivered_ids) == 5000


# -- the daily quota -----------------------------------------------------------------------------


def test_the_daily_quota_is_shared_by_every_run_to_the_endpoint(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    with Sink() as receiver:
        job = load_job(write_job(receiver.url, audience_5k, rate_limit__daily_contacts=3000))
        first = start_run(job, ledger)
        after_first = receiver.recorder.requests
        arrived_first = receiver.recorder.contacts
        delivered_first = len(receiver.recorder.delivered_ids)

        other = load_job(
            write_job(
                receiver.url,
                audience_5k,
                filename="other.yaml",
                name="other-job",
                rate_limit__daily_contacts=3000,
            )
        )
        second = start_run(other, ledger)
        after_second = receiver.recorder.requests
        third = resume_run(ledger, first.run_id)  # the same day: nothing more either
        after_third = receiver.recorder.requests

    resets_at = day_window(time.time(), "UTC")[1]
    reset_text = local_time_text(resets_at, "UTC")

    assert first.status == RunStatus.INTERRUPTED
    assert 0 < first.delivered_contacts == delivered_first <= 3000
    assert arrived_first == delivered_first  # nothing beyond the quota was sent
    note = first.note or ""
    assert "the daily quota of 3,000 contacts for " in note and receiver.url in note
    assert f"({first.delivered_contacts:,} delivered today)" in note
    assert f"it resets at {reset_text}" in note
    assert f"`hookcast resume {first.run_id}`" in note
    assert ledger.get_run(first.run_id).resume_after == resets_at
    unfinished = ledger.batches(first.run_id, [BatchStatus.PLANNED, BatchStatus.SENDING])
    assert sum(b.contacts for b in unfinished) == 5000 - first.delivered_contacts

    assert second.status == RunStatus.INTERRUPTED and second.delivered_contacts == 0
    assert after_second == after_first, "a run over the used-up quota sent"
    assert "the daily quota of 3,000 contacts" in (second.note or "")
    assert ledger.get_run(second.run_id).resume_after == resets_at

    assert third.status == RunStatus.INTERRUPTED and after_third == after_first
    assert receiver.recorder.duplicate_ids == 0


# -- limits shared by the runs to one endpoint ----------------------------------------------------


def test_two_jobs_to_one_endpoint_at_once_hold_its_rate_together(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    rate = 10.0
    first_arrival = threading.Event()

    def note_first(request: Request) -> Reply:
        first_arrival.set()
        return OK

    with Sink(behaviour=note_first) as receiver:
        jobs = [
            load_job(
                write_job(
                    receiver.url,
                    audience_5k,
                    filename=f"{name}.yaml",
                    name=name,
                    batch_size=100,  # 50 requests each: 5 s alone at the rate
                    rate_limit={"requests_per_second": rate},
                )
            )
            for name in ("job-a", "job-b")
        ]
        state = ledger.state_dir

        def run(ledger: Ledger, job) -> object:
            return start_run(job, ledger)

        a, a_out = _in_thread(run, state, jobs[0])
        assert first_arrival.wait(60), f"the first run sent nothing within 60 s: {a_out}"
        b, b_out = _in_thread(run, state, jobs[1])
        a.join(120)
        b.join(120)
        arrivals = receiver.recorder.arrivals

    assert "error" not in a_out and "error" not in b_out, (a_out, b_out)
    assert a_out["result"].status == b_out["result"].status == RunStatus.SUCCEEDED
    assert len(receiver.recorder.delivered_ids) == 5000 and receiver.recorder.contacts == 10_000
    by_run = {
        run: sorted(x.t for x in arrivals if x.key.startswith(run)) for run in ("job-a", "job-b")
    }
    assert by_run["job-b"][0] < by_run["job-a"][-1], "the two runs did not overlap"
    times = sorted(x.t for x in arrivals)
    for window_s in (1.0, 3.0):  # together, never more than one run alone may send
        most = busiest(times, window_s)
        assert most <= rate * window_s + 2, f"{most} requests within {window_s} s"


def test_status_shows_a_running_runs_open_breaker_and_its_in_flight_limit(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    stop = threading.Event()
    with Sink(behaviour=lambda request: Reply(503)) as receiver:
        job = load_job(
            write_job(
                receiver.url,
                audience_5k,
                batch_size=100,
                canary={"batches": 0},
                circuit_breaker={"min_requests": 3, "open_s": 60, "max_outage_s": 600},
            )
        )
        state = ledger.state_dir
        thread, out = _in_thread(lambda book, job: start_run(job, book, stop=stop), state, job)
        try:
            deadline = time.monotonic() + 60
            while True:
                shown = CliRunner().invoke(app, ["status", "--json", "--state-dir", str(state)])
                assert shown.exit_code == 0, shown.output
                runs = json.loads(shown.output)["runs"]
                live = runs[0]["live"] if runs else None
                if live and live["breaker"] == "open":
                    break
                assert time.monotonic() < deadline, f"no open breaker shown within 60 s: {runs}"
                time.sleep(0.2)
            table = CliRunner().invoke(
                app, ["status", "--state-dir", str(state)], terminal_width=250
            )
        finally:
            stop.set()
            thread.join(60)
    assert live["in_flight_limit"] >= 1 and live["breaker_open_until"] > time.time()
    assert "open," in table.output and "probe" in table.output  # (80 columns: it wraps)
    assert out["result"].status == RunStatus.INTERRUPTED


def busiest(times: list[float], window_s: float) -> int:
    return max(bisect.bisect_left(times, t + window_s) - i for i, t in enumerate(times))


@pytest.fixture(autouse=True)
def _no_stray_runs(ledger: Ledger):
    """Every run a test starts has ended by its end (none left RUNNING)."""
    yield
    assert not [r.run_id for r in ledger.list_runs() if r.status == RunStatus.RUNNING]


def test_runs_from_different_state_dirs_meet_in_the_clusters_registry(tmp_path: Path) -> None:
    from hookcast.cluster.ledger import LiveRun
    from hookcast.cluster.live_registry import SharedEndpoints, cluster_registry

    endpoint = "https://hooks.example.com/shared"
    laptops = [Ledger(tmp_path / name) for name in ("laptop-a", "laptop-b")]
    try:
        a, b = (SharedEndpoints(book, cluster_registry()) for book in laptops)
        a.heartbeat(LiveRun("run-a", endpoint, seen_at=time.time()))
        seen = b.heartbeat(LiveRun("run-b", endpoint, seen_at=time.time()))
        assert sorted(r.run_id for r in seen) == ["run-a", "run-b"]
        assert [r.run_id for r in laptops[1].live_runs()] == ["run-b"]  # not in b's ledger
        a.leave("run-a")
        again = b.heartbeat(LiveRun("run-b", endpoint, seen_at=time.time()))
        assert [r.run_id for r in again] == ["run-b"]
        b.leave("run-b")
    finally:
        for book in laptops:
            book.close()
