"""An endpoint that pushes back, on a real Ray and a real receiver: concurrency that adapts to
an endpoint refusing more than C requests at once, a breaker that waits out an outage, the
canary in front of an endpoint that refuses everything, a limit by contacts per second."""

from __future__ import annotations

import asyncio
import bisect
import time
from pathlib import Path

from typer.testing import CliRunner

from hookcast.cli.app import app
from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import BatchStatus, Ledger, RunStatus
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.sink import OK, Reply, Request, Sink


class AtMost:
    """Answers 503 to a request that arrives while ``capacity`` are being worked on."""

    def __init__(self, capacity: int, work_s: float) -> None:
        self.capacity, self.work_s = capacity, work_s
        self.busy = 0
        self.refused = 0

    async def __call__(self, request: Request) -> Reply:
        if self.busy >= self.capacity:
            self.refused += 1
            return Reply(503)
        self.busy += 1
        try:
            await asyncio.sleep(self.work_s)
        finally:
            self.busy -= 1
        return OK


def test_concurrency_adapts_to_an_endpoint_that_takes_three_at_once(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    endpoint = AtMost(capacity=3, work_s=0.03)
    with Sink(behaviour=endpoint) as sink:
        path = write_job(
            sink.url,
            audience_5k,
            batch_size=25,  # 200 requests
            rate_limit={"max_in_flight": 12},
            retry={"max_attempts": 30, "backoff_base_s": 0.02, "backoff_max_s": 0.1},
        )
        summary = start_run(load_job(path), ledger)
        requests = sink.recorder.requests
    assert summary.status == RunStatus.SUCCEEDED
    assert len(sink.recorder.delivered_ids) == 5000 and sink.recorder.duplicate_ids == 0
    # At 12 in flight without adapting, most requests would find 3 busy: 503.
    assert endpoint.refused < 0.25 * requests, (endpoint.refused, requests)


def test_an_outage_is_waited_out_by_the_breaker_without_dead_letters(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    down: dict[str, float] = {}

    def outage(request: Request) -> Reply:
        # Down for 2 s from the 5th request on: every answer a 503.
        if request.n == 5:
            down["from"] = time.monotonic()
        if "from" in down and time.monotonic() - down["from"] < 2.0:
            return Reply(503)
        return OK

    with Sink(behaviour=outage) as sink:
        path = write_job(
            sink.url,
            audience_5k,
            batch_size=50,  # 100 requests
            retry={"max_attempts": 4, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
            circuit_breaker={"open_s": 0.5, "min_requests": 5},
        )
        summary = start_run(load_job(path), ledger)
        refused = sink.recorder.statuses.get(503, 0)
    assert summary.status == RunStatus.SUCCEEDED, summary
    assert len(sink.recorder.delivered_ids) == 5000
    dead = ledger.batches(summary.run_id, (BatchStatus.DEAD_LETTERED,))
    assert dead == []
    # Without the breaker, 4 attempts each within ~0.5 s would dead-letter most batches; with
    # it: the failures that trip it, those in flight then, and the probes (0.5, 1, 2 s apart).
    assert refused <= 5 + 8 + 4, refused


def test_the_canary_stops_a_broadcast_the_endpoint_refuses_then_resume_and_replay_send_it(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    with Sink(behaviour=lambda request: Reply(400, body=b'{"error":"bad schema"}')) as sink:
        path = write_job(sink.url, audience_5k)
        state = str(tmp_path / "state")
        result = CliRunner().invoke(app, ["run", str(path), "--json", "--state-dir", state])
        assert sink.recorder.requests == 3
        assert result.exit_code == 1, result.output
        assert '"status":"aborted"' in result.stdout.replace(" ", "")
        assert "bad schema" in result.stdout
        run_id = result.stdout.split('"run_id":')[1].split('"')[1]

        assert f"hookcast resume {run_id}" in result.output
        assert f"hookcast replay {run_id}" in result.output

        sink.behaviour = None  # fixed: accepts everything
        resumed = CliRunner().invoke(app, ["resume", run_id, "--json", "--state-dir", state])
        assert resumed.exit_code == 1, resumed.output  # the 7 sent; the canary's 3 dead letters
        replayed = CliRunner().invoke(app, ["replay", run_id, "--json", "--state-dir", state])
    assert replayed.exit_code == 0, replayed.output
    assert len(sink.recorder.delivered_ids) == 5000 and sink.recorder.duplicate_ids == 0


def test_contacts_per_second_holds_at_the_receiver(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    rate = 10_000  # contacts/s: 5,000 contacts in batches of 250 take ~0.5 s
    with Sink() as sink:
        path = write_job(
            sink.url,
            audience_5k,
            batch_size=250,
            rate_limit={"contacts_per_second": rate, "max_in_flight": 8},
        )
        started = time.monotonic()
        summary = start_run(load_job(path), ledger)
        arrivals = sorted(sink.recorder.arrivals, key=lambda a: a.t)
    assert summary.status == RunStatus.SUCCEEDED
    times = [a.t for a in arrivals]
    sizes = [len(a.ids) for a in arrivals]
    # No request arrives before its slot: the k-th request's contacts fit in rate * elapsed
    # since the first, plus one batch (the slot lead of 0.1 s allowed for).
    for k in range(len(times)):
        sent_before = sum(sizes[:k])
        assert sent_before <= rate * (times[k] - times[0] + 0.1) + 250, k
    window = max(sum(sizes[i : bisect.bisect_left(times, t + 0.25)]) for i, t in enumerate(times))
    assert window <= rate * 0.25 + 250 + rate * 0.1
    assert time.monotonic() - started >= (5000 - 250) / rate
