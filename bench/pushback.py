"""An endpoint that pushes back: each scenario of issue #13 against real servers on 127.0.0.1,
on one embedded Ray, with the figures a user would ask for.

    python bench/pushback.py [--outage-s 60] [--only body-limit,canary,...] [--json]

Scenarios: a body-limited nginx (100 KB) in front of the receiver; an endpoint answering 400
to everything; one down for ``--outage-s`` and then back; one that refuses more than 3
requests at once (503); a limit by contacts per second, measured at the receiver over
sliding seconds; a daily quota split across two runs; two jobs to one endpoint at once.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hookcast.cluster.connect import connect, disconnect
from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import Ledger
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.sink import OK, Reply, Request, Sink
from hookcast.cluster.testbed.synth import write_audience

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: tests.nginx
from tests.nginx import Nginx

SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {}


def scenario(name: str):
    def register(fn):
        SCENARIOS[name] = fn
        return fn

    return register


class Workspace:
    """A temp folder with audiences, job files and a ledger."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ledger = Ledger(root / "state")
        self._audiences: dict[int, Path] = {}

    def audience(self, contacts: int) -> Path:
        if contacts not in self._audiences:
            self._audiences[contacts] = write_audience(self.root / f"a{contacts}.parquet", contacts)
        return self._audiences[contacts]

    def job(self, url: str, contacts: int, name: str = "pushback", **keys: Any):
        spec: dict[str, Any] = {
            "name": name,
            "webhook": {"url": url, "timeout_s": 5},
            "audience": {"source": str(self.audience(contacts))},
            **keys,
        }
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return load_job(path)


def busiest(times: list[float], window_s: float, weights: list[int] | None = None) -> float:
    """The most requests (or weight) in any window of ``window_s`` over sorted ``times``."""
    cumulative = [0, *itertools.accumulate(weights or [1] * len(times))]
    return max(
        cumulative[bisect.bisect_left(times, t + window_s)] - cumulative[i]
        for i, t in enumerate(times)
    )


@scenario("body-limit")
def body_limit(ws: Workspace, **_: Any) -> dict[str, Any]:
    """The issue's case: nginx client_max_body_size 100k, 50,000 contacts at batch 500."""
    with Sink() as sink:
        folder = Path(tempfile.mkdtemp(dir=ws.root))
        proxy = Nginx(folder, int(sink.url.split(":")[2].split("/")[0]), 100)
        try:
            job = ws.job(f"http://127.0.0.1:{proxy.port}/hook", 50_000, name="body-limit")
            started = time.monotonic()
            summary = start_run(job, ws.ledger)
            took = time.monotonic() - started
            statuses = proxy.statuses()
        finally:
            proxy.stop()
        recorder = sink.recorder
    return {
        "status": summary.status,
        "contacts_delivered_once": len(recorder.delivered_ids),
        "duplicates": recorder.duplicate_ids,
        "requests_at_proxy": sum(statuses.values()),
        "answered_413": statuses[413],
        "dead_letters": summary.failed_batches,
        "split_batches": summary.split_batches,
        "duration_s": round(took, 1),
    }


@scenario("canary")
def canary(ws: Workspace, **_: Any) -> dict[str, Any]:
    """An endpoint that answers 400 to everything."""
    with Sink(behaviour=lambda request: Reply(400, body=b'{"error": "schema"}')) as sink:
        summary = start_run(ws.job(sink.url, 50_000, name="canary"), ws.ledger)
        reached = sink.recorder.requests
    return {"status": summary.status, "requests_reaching_it": reached, "note": summary.note}


@scenario("outage")
def outage(ws: Workspace, outage_s: float = 60.0, **_: Any) -> dict[str, Any]:
    """Down (503) for ``outage_s`` from the 20th request on, then back."""
    state: dict[str, float] = {}
    during: list[float] = []

    def behaviour(request: Request) -> Reply:
        now = time.monotonic()
        if request.n == 20:
            state["down"] = now
        if "down" in state and now - state["down"] < outage_s:
            during.append(now)
            return Reply(503)
        if "down" in state and "back_ok" not in state:
            state["back_ok"] = now
        return OK

    with Sink(behaviour=behaviour) as sink:
        job = ws.job(sink.url, 100_000, name="outage", batch_size=100)  # 1,000 requests
        started = time.monotonic()
        summary = start_run(job, ws.ledger)
        took = time.monotonic() - started
        recorder = sink.recorder
    back_at = state["down"] + outage_s
    return {
        "status": summary.status,
        "contacts_delivered_once": len(recorder.delivered_ids),
        "dead_letters": summary.failed_batches,
        "requests_while_down": len(during),
        "of_which_after_the_first_10_s": sum(1 for t in during if t - state["down"] > 10),
        "first_2xx_after_back_s": round(state.get("back_ok", float("nan")) - back_at, 1),
        "duration_s": round(took, 1),
    }


@scenario("concurrency")
def concurrency(ws: Workspace, **_: Any) -> dict[str, Any]:
    """An endpoint that works on 3 requests at once (30 ms each) and answers 503 beyond."""
    busy = {"now": 0, "refused": 0}
    seen: list[int] = []

    async def behaviour(request: Request) -> Reply:
        if busy["now"] >= 3:
            busy["refused"] += 1
            return Reply(503)
        busy["now"] += 1
        seen.append(busy["now"])
        try:
            await asyncio.sleep(0.03)
        finally:
            busy["now"] -= 1
        return OK

    with Sink(behaviour=behaviour) as sink:
        job = ws.job(
            sink.url,
            20_000,
            name="concurrency",
            batch_size=25,  # 800 requests
            rate_limit={"max_in_flight": 12},
            retry={"max_attempts": 30, "backoff_base_s": 0.02, "backoff_max_s": 0.1},
        )
        summary = start_run(job, ws.ledger)
        recorder = sink.recorder
    last = seen[-200:]
    return {
        "status": summary.status,
        "contacts_delivered_once": len(recorder.delivered_ids),
        "requests": recorder.requests,
        "refused_503": busy["refused"],
        "refused_share": round(busy["refused"] / recorder.requests, 3),
        "mean_busy_last_200": round(sum(last) / len(last), 2),
    }


@scenario("contacts-per-second")
def contacts_per_second(ws: Workspace, **_: Any) -> dict[str, Any]:
    """contacts_per_second 5000 at batch 500, measured at the receiver."""
    with Sink() as sink:
        job = ws.job(sink.url, 50_000, name="cps", rate_limit={"contacts_per_second": 5000})
        summary = start_run(job, ws.ledger)
        arrivals = sorted(sink.recorder.arrivals, key=lambda a: a.t)
    times = [a.t for a in arrivals]
    weights = [len(a.ids) for a in arrivals]
    return {
        "status": summary.status,
        "most_contacts_in_1s": busiest(times, 1.0, weights),
        "most_contacts_in_5s": busiest(times, 5.0, weights),
        "contacts_per_s_overall": round(sum(weights) / (times[-1] - times[0]), 1),
    }


@scenario("daily-quota")
def daily_quota(ws: Workspace, **_: Any) -> dict[str, Any]:
    """daily_contacts 30,000 shared by two jobs of 20,000 each, one after the other."""
    with Sink() as sink:
        limits = {"daily_contacts": 30_000}
        first = start_run(ws.job(sink.url, 20_000, name="quota-a", rate_limit=limits), ws.ledger)
        second = start_run(ws.job(sink.url, 20_000, name="quota-b", rate_limit=limits), ws.ledger)
        arrived = sink.recorder.contacts
    return {
        "first": (first.status, first.delivered_contacts),
        "second": (second.status, second.delivered_contacts),
        "arrived_at_receiver": arrived,
        "second_note": second.note,
    }


@scenario("two-jobs")
def two_jobs(ws: Workspace, **_: Any) -> dict[str, Any]:
    """Two jobs to one endpoint at once, each with requests_per_second 20."""
    first_arrival = threading.Event()

    def note_first(request: Request) -> Reply:
        first_arrival.set()
        return OK

    with Sink(behaviour=note_first) as sink:
        jobs = [
            ws.job(sink.url, 20_000, name=n, batch_size=100, rate_limit={"requests_per_second": 20})
            for n in ("two-a", "two-b")
        ]
        results: dict[str, Any] = {}

        def run(job) -> None:
            book = Ledger(ws.ledger.state_dir)
            try:
                results[job.spec.name] = start_run(job, book)
            finally:
                book.close()

        a = threading.Thread(target=run, args=(jobs[0],))
        a.start()
        first_arrival.wait(60)
        b = threading.Thread(target=run, args=(jobs[1],))
        b.start()
        a.join()
        b.join()
        times = sorted(x.t for x in sink.recorder.arrivals)
    return {
        "statuses": [r.status for r in results.values()],
        "requests": len(times),
        "most_in_1s": busiest(times, 1.0),
        "most_in_5s": busiest(times, 5.0),
        "limit_per_s": 20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated scenarios (default: all)")
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SCENARIOS)
    connect(None)
    figures: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ws = Workspace(Path(tmp))
            for name in names:
                started = time.monotonic()
                figures[name] = SCENARIOS[name](ws, outage_s=args.outage_s)
                figures[name]["scenario_s"] = round(time.monotonic() - started, 1)
                if not args.json:
                    print(f"{name}: {json.dumps(figures[name], default=str)}", flush=True)
            ws.ledger.close()
    finally:
        disconnect()
    if args.json:
        print(json.dumps(figures, default=str, indent=2))


if __name__ == "__main__":
    main()
