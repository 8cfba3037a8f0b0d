"""Ctrl-C twice on `hookcast run` (a process of its own, its own embedded Ray): the run stops
at once, prints its summary and how to resume, exits 3; resume then delivers every id."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from typer.testing import CliRunner

from hookcast.cli.app import app
from hookcast.cluster.ledger import BatchStatus, Ledger
from hookcast.cluster.testbed.sink import OK, Reply, Sink

HOOKCAST = [sys.executable, "-m", "hookcast.cli.app"]
FAST_REQUESTS = 20  # answered at once; every later request is held for HELD_S
HELD_S = 30.0
MAX_IN_FLIGHT = 4


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def test_ctrl_c_twice_stops_at_once_with_summary_resume_hint_and_exit_3_then_resume_delivers(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    release = threading.Event()  # set once the run has stopped: held requests answer 503
    arrived = [0]

    async def behaviour(request) -> Reply:
        arrived[0] = max(arrived[0], request.n)
        if release.is_set() or request.n <= FAST_REQUESTS:
            return OK
        started = time.monotonic()
        while not release.is_set() and time.monotonic() - started < HELD_S:
            await asyncio.sleep(0.02)
        return Reply(status=503)  # never acknowledged: the sender had gone

    with Sink(behaviour=behaviour) as receiver:
        job = write_job(
            receiver.url,
            audience_5k,
            batch_size=50,
            # Fixed concurrency: the held requests must fill max_in_flight (no slow start).
            rate_limit={
                "requests_per_second": 100,
                "max_in_flight": MAX_IN_FLIGHT,
                "adaptive": False,
            },
        )
        out, err = tmp_path / "cli.out", tmp_path / "cli.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [*HOOKCAST, "run", str(job), "--state-dir", str(state)],
                stdout=stdout,
                stderr=stderr,
            )
        try:

            def held_at_receiver() -> bool:
                assert proc.poll() is None, err.read_text()[-2000:]
                return arrived[0] >= FAST_REQUESTS + MAX_IN_FLIGHT

            _wait_for(held_at_receiver, 120, "requests held at the receiver")
            proc.send_signal(signal.SIGINT)
            _wait_for(lambda: "stopping:" in err.read_text(), 30, "the first Ctrl-C's notice")
            proc.send_signal(signal.SIGINT)
            stopped_at = time.monotonic()
            code = proc.wait(timeout=HELD_S - 5)
            waited_s = time.monotonic() - stopped_at
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        printed, errors = out.read_text(), err.read_text()
        assert code == 3, errors[-2000:]
        assert waited_s < HELD_S - 5, "the second Ctrl-C did not stop the run at once"
        assert "stopping now" in errors
        assert "interrupted" in printed and "delivered" in printed  # the summary table
        assert "Traceback" not in errors and "KeyboardInterrupt" not in errors
        [hint] = [line for line in errors.splitlines() if "hookcast resume" in line]
        run_id = hint.rsplit(" ", 1)[-1]

        ledger = Ledger(state)
        in_flight = {b.idem_key for b in ledger.batches(run_id, [BatchStatus.SENDING])}
        assert 0 < len(in_flight) <= MAX_IN_FLIGHT, "the batches in flight stay resumable"
        resumed = CliRunner().invoke(app, ["resume", run_id, "--json", "--state-dir", str(state)])
        assert resumed.exit_code == 0, resumed.output
        assert orjson.loads(resumed.stdout)["delivered_batches"] == 100
        acked = [a for a in receiver.recorder.arrivals if a.status == 200]

    audience = set(pq.read_table(audience_5k, columns=["id"]).column("id").to_pylist())
    delivered = [i for arrival in acked for i in arrival.ids]
    assert set(delivered) == audience
    assert len(delivered) == len(audience), "an id was delivered twice"
