"""How many requests one run coordinator decides a second, and its CPU per decision.

    python bench/coordinator_rate.py [--batches 20000] [--repeats 3] [--senders 2] [--json]

One `Coordinator` (plain Python, no Ray) delivers a run of ``--batches`` batches of 500
contacts (20,000: a 10M-contact run) through the unit tests' `FakePool` on their `FakeClock`
(tests/unit/fakes.py; `plan_run`'s batch size patched to 500 for the call), which answers
every request 2xx at once, and records every batch in a real SQLite `Ledger` in a temporary
state dir (SENDING before its request leaves, then its outcome). The settings are a job's
defaults (8 in flight, adaptive concurrency, breaker, a canary of 3), without a request rate
(8 batches a sender call) and with ``requests_per_second`` 1e9 (each request its own call,
through the rate limiter, which never holds one back). Timed: building the coordinator and
``run()``; planning the run (`plan_run`) is not.

The fake clock moves only when the coordinator waits for an answer (the fake's simulated
2 ms transit and 10 ms latency: with none, the adaptive limit has no round trip to judge and
stays at 1-2), so the wall time is all decision work. The CPU includes the fake pool's own
bookkeeping (it keeps a `Request` record a request). Left out: Ray (the sender calls and the
segment's chunks, ~2.5 ms of CPU a call, paid elsewhere), real HTTP, `RunMetrics` (Ray's
metrics), the progress display and the heartbeat of runs sharing an endpoint.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from hookcast.cluster.coordinator import Coordinator, DeliverySettings, Progress
from hookcast.cluster.ledger import BatchStatus, Ledger, RunStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: tests.unit.fakes
from tests.unit import fakes

RUN = "rate-1"
CONTACTS = 500  # per batch
VARIANTS = {"no rate limit": None, "requests_per_second 1e9": 1e9}


def measure(batches: int, *, rps: float | None = None, senders: int = 2) -> dict:
    """Deliver ``batches`` batches through one coordinator; its time, CPU and ledger counts."""
    with (
        tempfile.TemporaryDirectory() as state,
        mock.patch.object(fakes, "CONTACTS_PER_BATCH", CONTACTS),
    ):
        ledger = Ledger(Path(state) / "state")
        try:
            keys = fakes.plan_run(ledger, RUN, batches)
            clock = fakes.FakeClock()
            pool = fakes.FakePool(clock, size=senders)
            wall, cpu = time.perf_counter(), time.process_time()
            run = Coordinator(
                run_id=RUN,
                ledger=ledger,
                pool=pool,
                seqs=list(keys),
                keys=keys,
                settings=DeliverySettings(batch_size=CONTACTS, requests_per_second=rps),
                progress=Progress(contacts=batches * CONTACTS, batches=batches),
                clock=clock.clock(),
                sizes=dict.fromkeys(keys, CONTACTS),
            )
            status = run.run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            counts = ledger.batch_counts(RUN)
        finally:
            ledger.close()
    requests = run.progress.requests
    return {
        "batches": batches,
        "status": str(status),
        "requests": requests,
        "endpoint_requests": len(pool.requests),
        "delivered_batches": counts.get(BatchStatus.DELIVERED, (0, 0))[0],
        "delivered_contacts": counts.get(BatchStatus.DELIVERED, (0, 0))[1],
        "sender_calls": len(pool.submits),
        "most_in_flight": pool.most_in_flight,
        "wall_s": wall,
        "cpu_s": cpu,
        "requests_per_s": requests / wall if wall else 0.0,
        "cpu_us_per_request": cpu / requests * 1e6 if requests else 0.0,
        "succeeded": status is RunStatus.SUCCEEDED,
    }


def median_of(runs: list[dict]) -> dict:
    """Each timed figure's median over ``runs`` (the counts are the first run's)."""
    timed = ("wall_s", "cpu_s", "requests_per_s", "cpu_us_per_request")
    return {**runs[0], **{k: statistics.median(r[k] for r in runs) for k in timed}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20_000, help="500-contact batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--senders", type=int, default=2, help="the fake pool's senders")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):  # interleaved: a slow spell falls on every variant
        for name, rps in VARIANTS.items():
            runs[name].append(measure(args.batches, rps=rps, senders=args.senders))
            print(f"repeat {repeat + 1} {name}: {runs[name][-1]['wall_s']:.2f} s", file=sys.stderr)
    medians = {name: median_of(r) for name, r in runs.items()}
    ok = all(
        r["succeeded"] and r["delivered_batches"] == args.batches for v in runs.values() for r in v
    )
    if args.json:
        out = {
            "batches": args.batches,
            "repeats": args.repeats,
            "senders": args.senders,
            "all_delivered": ok,
            "median": medians,
            "runs": runs,
        }
        print(json.dumps(out, indent=2))
        return 0 if ok else 1
    print(
        f"one coordinator, {args.batches:,} batches of {CONTACTS} contacts, "
        f"{args.senders} fake senders, median of {args.repeats}"
    )
    head = ("variant", "batches", "calls", "wall s", "CPU s", "requests/s", "CPU µs/request")
    print("| " + " | ".join(head) + " |\n|---|" + "---:|" * (len(head) - 1))
    for name, m in medians.items():
        low, high = (f(r["requests_per_s"] for r in runs[name]) for f in (min, max))
        print(
            f"| {name} | {m['batches']:,} | {m['sender_calls']:,} | {m['wall_s']:.2f} | "
            f"{m['cpu_s']:.2f} | {m['requests_per_s']:,.0f} ({low:,.0f}–{high:,.0f}) | "
            f"{m['cpu_us_per_request']:.1f} |"
        )
    print("every batch delivered in the ledger" if ok else "NOT every batch was delivered")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
