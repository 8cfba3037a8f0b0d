"""Benchmark hookcast against two single-process peers, end to end, on a local receiver.

    python bench/run_bench.py --contacts 1000000 [--routes plain,duckdb,hookcast] [--repeats 3]
    python bench/run_bench.py --contacts 1000000,10000000 --shape cdp
    python bench/run_bench.py --memory-sweep 200000,2000000

The routes run interleaved (plain, duckdb, hookcast, plain, …) against one receiver. What is
measured, and how, is in bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from rich.console import Console
from rich.table import Table

from hookcast.actors.signing import new_secret
from hookcast.cluster.testbed import synth

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
ROUTES = (
    "plain",
    "duckdb",
    "hookcast",
    "hookcast-signed",
    "hookcast-gzip",
    "hookcast-unguarded",
)
DEFAULT_ROUTES = ("plain", "duckdb", "hookcast")
# hookcast's variants: the job keys each changes ("webhook.signing": ...). Signed routes go
# to a receiver that verifies every request with the official standardwebhooks library;
# unguarded is hookcast without the canary, the breaker and adaptive concurrency (what those
# cost a clean run).
HOOKCAST_ROUTES: dict[str, dict[str, Any]] = {
    "hookcast": {},
    "hookcast-signed": {"webhook.signing": {"secret": "${HOOKCAST_BENCH_SECRET}"}},
    "hookcast-gzip": {"webhook.compression": "gzip"},
    "hookcast-unguarded": {
        "canary": {"batches": 0},
        "circuit_breaker": {"enabled": False},
        "rate_limit.adaptive": False,
    },
}
ROUTE_SCRIPTS = {"plain": BENCH_DIR / "baseline.py", "duckdb": BENCH_DIR / "duckdb_route.py"}
SAMPLE_S = 0.2
LEFTOVER_WAIT_S = 5.0
MB = 1024 * 1024
SWEEP_TARGET = 1.2

# (label, run key, format) of the figures summarised per route, in table order.
METRICS = (
    ("contacts", "contacts", "{:,.0f}"),
    ("requests", "requests", "{:,.0f}"),
    ("wall s (end to end)", "wall_s", "{:.2f}"),
    ("contacts/s (end to end)", "contacts_per_s", "{:,.0f}"),
    ("sending rate contacts/s (first → last request)", "sending_rate", "{:,.0f}"),
    ("time to first request s", "time_to_first_request_s", "{:.2f}"),
    ("own duration s", "own_duration_s", "{:.2f}"),
    ("CPU s (process tree)", "cpu_s", "{:.2f}"),
    ("MB on the wire", "wire_mb", "{:,.0f}"),
    ("MB of JSON (decompressed)", "json_mb", "{:,.0f}"),
    ("peak total RSS MB", "peak_total_rss_mb", "{:,.0f}"),
    ("peak single-process RSS MB", "peak_single_rss_mb", "{:,.0f}"),
    ("receiver CPU s (not counted)", "receiver_cpu_s", "{:.2f}"),
    ("receiver peak RSS MB (not counted)", "receiver_peak_rss_mb", "{:,.0f}"),
)
# Ratios printed under each size: (label, route on top, route below, metric).
RATIOS = (
    ("hookcast/duckdb contacts/s (end to end)", "hookcast", "duckdb", "contacts_per_s"),
    ("hookcast/plain contacts/s (end to end)", "hookcast", "plain", "contacts_per_s"),
    ("hookcast/duckdb sending rate", "hookcast", "duckdb", "sending_rate"),
    ("hookcast/plain sending rate", "hookcast", "plain", "sending_rate"),
    ("hookcast/duckdb CPU s", "hookcast", "duckdb", "cpu_s"),
    ("hookcast/plain CPU s", "hookcast", "plain", "cpu_s"),
    ("hookcast-signed/hookcast contacts/s", "hookcast-signed", "hookcast", "contacts_per_s"),
    ("hookcast-signed/hookcast CPU s", "hookcast-signed", "hookcast", "cpu_s"),
    ("hookcast-gzip/hookcast contacts/s", "hookcast-gzip", "hookcast", "contacts_per_s"),
    ("hookcast-gzip/hookcast CPU s", "hookcast-gzip", "hookcast", "cpu_s"),
    ("hookcast-gzip/hookcast MB on the wire", "hookcast-gzip", "hookcast", "wire_mb"),
    ("hookcast/hookcast-unguarded contacts/s", "hookcast", "hookcast-unguarded", "contacts_per_s"),
    ("hookcast/hookcast-unguarded CPU s", "hookcast", "hookcast-unguarded", "cpu_s"),
)


class BenchError(Exception):
    """Something that stops the benchmark before it measures anything."""


# -- audiences -------------------------------------------------------------------------------


def shape_problem(shape: str) -> str | None:
    """Why ``--shape`` cannot be generated, or None when it can."""
    shapes = getattr(synth, "SHAPES", None)
    takes_shape = "shape" in inspect.signature(synth.write_audience).parameters
    if shapes is None or not takes_shape:
        return (
            f"--shape {shape}: hookcast.cluster.testbed.synth has no audience shapes yet "
            "(SHAPES and write_audience(..., shape=...) are being added in "
            "cluster/testbed/synth.py); nothing was run."
        )
    if shape not in shapes:
        known = "; ".join(f"{name} ({about})" for name, about in shapes.items())
        return f"--shape {shape} is unknown: use one of {known}."
    return None


def ensure_audience(out: Path, contacts: int, shape: str, seed: int, log: Console) -> Path:
    path = out / f"audience-{contacts}-{shape}-seed{seed}.parquet"
    if not path.exists():  # write_audience is atomic: a file or folder that exists is complete
        log.print(f"generating {contacts:,} contacts ({shape}) into {path}")
        synth.write_audience(path, contacts, seed=seed, shape=shape)
    return path


# -- the receiver ----------------------------------------------------------------------------


class Receiver:
    """The receiver, a process of its own: its counters, reset, CPU and memory."""

    def __init__(self, args: argparse.Namespace, secret: str | None = None) -> None:
        cmd = [sys.executable, "-m", "hookcast.cluster.testbed.sink", "--port", "0"]
        if args.fail_rate:
            cmd += ["--fail-rate", str(args.fail_rate)]
        if args.latency_ms:
            cmd += ["--latency-ms", str(args.latency_ms)]
        env = {**os.environ, "HOOKCAST_SINK_SECRET": secret or ""}
        self.secret = secret
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("listening on "):
            stop_process(self.proc)
            raise BenchError(f"the receiver did not start; it printed {line!r}")
        self.url = line.split()[-1]
        self.base = self.url.rsplit("/", 1)[0]
        self.process = psutil.Process(self.proc.pid)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base}/_stats").json()

    def reset(self) -> None:
        httpx.post(f"{self.base}/_reset").raise_for_status()

    def cpu_s(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return self.process.memory_info().rss

    def stop(self) -> None:
        stop_process(self.proc)


class Receivers:
    """The plain receiver, and one that verifies signatures, started when a route needs it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self.plain = Receiver(args)
        self._verifying: Receiver | None = None

    def for_route(self, route: str) -> Receiver:
        if "webhook.signing" not in HOOKCAST_ROUTES.get(route, {}):
            return self.plain
        if self._verifying is None:
            self._verifying = Receiver(self._args, secret=new_secret())
        return self._verifying

    def stop(self) -> None:
        for receiver in (self.plain, self._verifying):
            if receiver is not None:
                receiver.stop()


def stop_process(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- one run ---------------------------------------------------------------------------------


def process_kind(proc: psutil.Process, root_pid: int) -> str:
    """What a process of the tree is: driver, raylet, gcs, a Ray worker by its title
    (``ray::Sender``, ``ray::IDLE``; the method a worker runs is dropped), else its name."""
    if proc.pid == root_pid:
        return "driver"
    name = proc.name()
    args = proc.cmdline()
    title = args[0] if args else name
    if name == "raylet" or title.endswith("/raylet"):
        return "raylet"
    if name.startswith("gcs_server") or title.endswith("/gcs_server"):
        return "gcs"
    if title.startswith("ray::"):
        return title.split()[0].split(".")[0]
    # A Python helper by what it runs: `python3 -m hookcast.cluster.watchdog`, `python agent.py`.
    modules = [m for flag, m in itertools.pairwise(args) if flag == "-m"]
    scripts = [os.path.basename(a) for a in args[1:] if a.endswith(".py")]
    return " ".join([name, *(modules or scripts)[:1]])


class ProcessTree:
    """CPU and memory of a process and its descendants, sampled with psutil.

    Each sample records, per pid, its own user+system CPU seconds (never its children's, so
    nothing counts twice), its kind and its RSS (the largest of each kind's processes is
    kept, to see which process grows with the audience). A process that exits between two samples
    loses what it used after its last one; ``cpu_s`` makes up for the root's waited-for
    descendants with the root's cumulative children's times (see ``finish``)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.known: dict[int, psutil.Process] = {}
        self.cpu: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self.peak_total = self.peak_single = 0
        self.largest = ""
        self.peak_by_kind: dict[str, int] = {}  # the largest RSS of one process of that kind
        self.root_cumulative_s = 0.0

    def sample(self, procs: Iterable[psutil.Process] | None = None) -> None:
        if procs is None:
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
        total = 0
        for proc in procs:  # any of them may exit mid-sample
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied), proc.oneshot():
                rss = proc.memory_info().rss
                times = proc.cpu_times()
                kind = process_kind(proc, self.root.pid)
                if " " not in kind and proc.pid in self.kind:
                    kind = self.kind[proc.pid]  # an exiting helper no longer shows its module
                self.known.setdefault(proc.pid, proc)
                self.cpu[proc.pid] = times.user + times.system
                self.kind[proc.pid] = kind
                total += rss
                if rss > self.peak_single:
                    self.peak_single, self.largest = rss, kind
                self.peak_by_kind[kind] = max(self.peak_by_kind.get(kind, 0), rss)
        self.peak_total = max(self.peak_total, total)

    def finish(self) -> None:
        """Read the root once it has exited, before it is reaped: its own CPU seconds, and
        its children's cumulative times (every descendant it waited for, with theirs)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            times = self.root.cpu_times()
            self.cpu[self.root.pid] = times.user + times.system
            self.kind[self.root.pid] = "driver"
            self.root_cumulative_s = (
                times.user + times.system + times.children_user + times.children_system
            )

    def alive_descendants(self) -> list[psutil.Process]:
        return [p for pid, p in self.known.items() if pid != self.root.pid and p.is_running()]

    @property
    def sampled_cpu_s(self) -> float:
        return sum(self.cpu.values())

    @property
    def cpu_s(self) -> float:
        return max(self.sampled_cpu_s, self.root_cumulative_s)

    def cpu_by_kind(self) -> dict[str, float]:
        kinds: dict[str, float] = {}
        for pid, seconds in self.cpu.items():
            kinds[self.kind[pid]] = kinds.get(self.kind[pid], 0.0) + seconds
        missed = self.cpu_s - self.sampled_cpu_s
        if missed > 0.005:
            kinds["not sampled (reaped by the root)"] = missed
        return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def run_sampled(cmd: list[str], receiver: Receiver, stderr_log: Path) -> dict[str, Any]:
    """Run ``cmd`` to its exit: wall time, the CPU and memory of its process tree, and the
    receiver's CPU meanwhile. Processes of the tree still alive 5 s after the exit are
    reported (they would skew the next run)."""
    peak_receiver = 0
    exited = threading.Event()
    with tempfile.TemporaryFile("w+") as stdout, stderr_log.open("w") as stderr:
        receiver_cpu_before = receiver.cpu_s()
        started_at = time.time()  # the receiver's clock, for the time to first request
        started = time.perf_counter()
        env = {**os.environ, "HOOKCAST_BENCH_SECRET": receiver.secret or ""}
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=stderr, text=True, env=env)
        tree = ProcessTree(proc.pid)
        exit_at: list[float] = []

        def wait_for_exit() -> None:
            # WNOWAIT leaves the process a zombie, so its times can still be read.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            exit_at.append(time.perf_counter())
            exited.set()

        threading.Thread(target=wait_for_exit, daemon=True).start()
        while True:
            tree.sample()
            peak_receiver = max(peak_receiver, receiver.rss())
            if exited.wait(SAMPLE_S):
                break
        tree.finish()
        exit_code = proc.wait()
        wall_s = exit_at[0] - started
        deadline = time.monotonic() + LEFTOVER_WAIT_S
        while (alive := tree.alive_descendants()) and time.monotonic() < deadline:
            tree.sample(alive)
            time.sleep(SAMPLE_S)
        receiver_cpu_s = receiver.cpu_s() - receiver_cpu_before
        stdout.seek(0)
        output = stdout.read()
    return {
        "exit_code": exit_code,
        "started_at": started_at,
        "wall_s": wall_s,
        "summary": parse_summary(output),
        "cpu_s": tree.cpu_s,
        "cpu_s_sampled": tree.sampled_cpu_s,
        "cpu_s_root_cumulative": tree.root_cumulative_s,
        "cpu_by_kind": tree.cpu_by_kind(),
        "peak_total_rss_mb": tree.peak_total / MB,
        "peak_single_rss_mb": tree.peak_single / MB,
        "largest_process": tree.largest,
        "peak_rss_by_kind_mb": {kind: rss / MB for kind, rss in tree.peak_by_kind.items()},
        "processes": len(tree.known),
        "receiver_cpu_s": receiver_cpu_s,
        "receiver_peak_rss_mb": peak_receiver / MB,
        "leftover_pids": [p.pid for p in alive],
    }


def parse_summary(text: str) -> dict[str, Any]:
    """The one JSON object the route printed; {} when it printed none (it crashed)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


def measure(cmd: list[str], contacts: int, receiver: Receiver, log_path: Path) -> dict[str, Any]:
    """Run one route on a freshly reset receiver, then check what the receiver got."""
    receiver.reset()
    run = run_sampled(cmd, receiver, log_path)
    stats = receiver.stats()
    receiver.reset()
    summary, wall_s = run.pop("summary"), run["wall_s"]
    sent = summary.get("contacts", 0)
    first, last = stats.get("first_request_at"), stats.get("last_request_at")
    window = None if first is None or last is None else last - first
    run.update(
        contacts=sent,
        requests=summary.get("requests", 0),
        own_duration_s=summary.get("duration_s"),
        own_contacts_per_s=summary.get("contacts_per_s"),
        contacts_per_s=sent / wall_s,
        requests_per_s=summary.get("requests", 0) / wall_s,
        time_to_first_request_s=None if first is None else first - run["started_at"],
        send_window_s=window,
        sending_rate=stats["contacts"] / window if window else None,
        wire_mb=stats["bytes_received"] / MB,
        json_mb=stats["bytes_decoded"] / MB,
        receiver=stats,
        verified=run["exit_code"] == 0
        and sent == contacts
        and stats["unique_ids"] == contacts
        and (receiver.secret is None or stats["signatures_verified"] == stats["requests"])
        and stats["duplicate_ids"] == 0,
        stderr_log=str(log_path),
    )
    return run


def peer_command(route: str, source: Path, url: str, args: argparse.Namespace) -> list[str]:
    return [
        *(sys.executable, str(ROUTE_SCRIPTS[route]), "--source", str(source)),
        *("--url", url, "--batch-size", str(args.batch_size)),
        *("--concurrency", str(args.concurrency), "--json"),
    ]


def hookcast_command(
    route: str, work: Path, source: Path, url: str, args: argparse.Namespace
) -> list[str]:
    job = synth.load_test_job(
        "bench",
        url,
        source,
        batch_size=args.batch_size,
        max_in_flight=args.concurrency,
        requests_per_second=args.rps,
    )
    for dotted, value in HOOKCAST_ROUTES[route].items():
        *parents, key = dotted.split(".")
        tree = job
        for parent in parents:
            tree = tree.setdefault(parent, {})
        tree[key] = value
    (work / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    hookcast = Path(sys.executable).parent / "hookcast"  # the venv's, not whatever is on PATH
    return [str(hookcast), "run", str(work / "job.yaml"), "--json", "--state-dir", str(work)]


def measure_route(
    route: str,
    args: argparse.Namespace,
    source: Path,
    contacts: int,
    receivers: Receivers,
    log_path: Path,
) -> dict[str, Any]:
    receiver = receivers.for_route(route)
    if route not in HOOKCAST_ROUTES:
        return measure(
            peer_command(route, source, receiver.url, args), contacts, receiver, log_path
        )
    with tempfile.TemporaryDirectory(prefix="hookcast-bench-") as work:
        cmd = hookcast_command(route, Path(work), source, receiver.url, args)
        return measure(cmd, contacts, receiver, log_path)


# -- reports ---------------------------------------------------------------------------------


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values that are not None (None when there are none)."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {"median": statistics.median(known), "min": min(known), "max": max(known)}


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of every figure over one route's repeats."""
    summary: dict[str, Any] = {key: spread([r.get(key) for r in runs]) for _, key, _ in METRICS}
    kinds = sorted({kind for r in runs for kind in r["cpu_by_kind"]})
    summary["cpu_by_kind"] = {
        k: spread([r["cpu_by_kind"].get(k, 0.0) for r in runs]) for k in kinds
    }
    kinds = sorted({kind for r in runs for kind in r["peak_rss_by_kind_mb"]})
    summary["peak_rss_by_kind_mb"] = {
        k: spread([r["peak_rss_by_kind_mb"].get(k, 0.0) for r in runs]) for k in kinds
    }
    summary["verified"] = sum(r["verified"] for r in runs)
    return summary


def ratios(runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> dict[str, Any]:
    """The RATIOS whose two routes both ran: of the medians, and per repeat (the routes of
    one repeat ran back to back, so their ratio is the least disturbed by the machine)."""
    found: dict[str, Any] = {}
    for label, top, below, key in RATIOS:
        if top not in runs or below not in runs:
            continue
        a, b = summary[top][key], summary[below][key]
        if a is None or b is None or not b["median"]:
            continue
        pairs = zip(runs[top], runs[below], strict=True)
        found[label] = {
            "value": a["median"] / b["median"],
            "per_repeat": [x[key] / y[key] if x[key] and y[key] else None for x, y in pairs],
        }
    return found


def compare(
    args: argparse.Namespace, size: int, receivers: Receivers, log: Console
) -> dict[str, Any]:
    """Every route, ``--repeats`` times, interleaved, on one audience of ``size`` contacts."""
    source = ensure_audience(args.out, size, args.shape, args.seed, log)
    runs: dict[str, list[dict[str, Any]]] = {route: [] for route in args.routes}
    for repeat in range(1, args.repeats + 1):
        for route in args.routes:
            log.print(f"{size:,} contacts: {route}, run {repeat} of {args.repeats}")
            log_path = args.out / f"{route}-{size}-{args.shape}-{repeat}.log"
            run = measure_route(route, args, source, size, receivers, log_path)
            run["repeat"] = repeat
            runs[route].append(run)
    summary = {route: summarise(route_runs) for route, route_runs in runs.items()}
    title = (
        f"{size:,} contacts ({args.shape}), batch {args.batch_size}, concurrency "
        f"{args.concurrency}, {args.repeats} interleaved run(s) per route"
    )
    ok = all(r["verified"] for route_runs in runs.values() for r in route_runs)
    return {
        "title": title,
        "contacts": size,
        "shape": args.shape,
        "audience": str(source),
        "runs": runs,
        "summary": summary,
        "ratios": ratios(runs, summary),
        "ok": ok,
    }


def sweep_memory(args: argparse.Namespace, receivers: Receivers, log: Console) -> dict[str, Any]:
    """hookcast alone, once per size: does its peak memory grow with the audience?"""
    sizes = sorted(int(s) for s in args.memory_sweep.split(","))
    runs: dict[str, list[dict[str, Any]]] = {}
    for size in sizes:
        source = ensure_audience(args.out, size, args.shape, args.seed, log)
        log.print(f"running hookcast on {size:,} contacts")
        log_path = args.out / f"hookcast-{size}-{args.shape}-sweep.log"
        runs[f"{size:,}"] = [measure_route("hookcast", args, source, size, receivers, log_path)]
    smallest, largest = runs[f"{sizes[0]:,}"][0], runs[f"{sizes[-1]:,}"][0]
    span = f"{sizes[-1]:,} / {sizes[0]:,}"
    found = {
        f"peak total RSS {span}": {
            "value": largest["peak_total_rss_mb"] / smallest["peak_total_rss_mb"]
        },
        f"peak single-process RSS {span}": {
            "value": largest["peak_single_rss_mb"] / smallest["peak_single_rss_mb"]
        },
    }
    # The target is per process (#11): the processes of the smallest run, each as large at the
    # largest size. A longer run may start processes a short one does not (an embedded Ray
    # for its metrics, in a process of its own): those are listed, at their size.
    growths = []
    for kind, small in smallest["peak_rss_by_kind_mb"].items():
        large = largest["peak_rss_by_kind_mb"].get(kind)
        if large is not None and small > 0:
            growths.append(large / small)
            label = f"peak RSS of {kind} {span} (target <= {SWEEP_TARGET})"
            found[label] = {"value": large / small}
    for kind, large in largest["peak_rss_by_kind_mb"].items():
        if kind not in smallest["peak_rss_by_kind_mb"]:
            found[f"peak RSS MB of {kind}, only at {sizes[-1]:,}"] = {"value": large}
    title = (
        f"hookcast memory sweep ({args.shape}), batch {args.batch_size}, "
        f"concurrency {args.concurrency}"
    )
    ok = all(r[0]["verified"] for r in runs.values()) and max(growths) <= SWEEP_TARGET
    summary = {size: summarise(size_runs) for size, size_runs in runs.items()}
    return {"title": title, "runs": runs, "summary": summary, "ratios": found, "ok": ok}


def describe_machine() -> dict[str, Any]:
    uname = platform.uname()
    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or uname.machine,
        "system": f"{uname.system} {uname.release} {uname.machine}",
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("ray", "duckdb", "pyarrow", "httpx")},
    }


def cell(figures: dict[str, float] | None, fmt: str, repeats: int) -> str:
    """The median, and the min and max when there were several runs."""
    if figures is None:
        return "-"
    text = fmt.format(figures["median"])
    if repeats > 1:
        text += f" ({fmt.format(figures['min'])}–{fmt.format(figures['max'])})"
    return text


def print_size(report: dict[str, Any], console: Console) -> None:
    summary = report["summary"]
    repeats = max(len(runs) for runs in report["runs"].values())
    table = Table(title=report["title"])
    table.add_column("median (min–max)" if repeats > 1 else "")
    for name in summary:
        table.add_column(name, justify="right")
    for label, key, fmt in METRICS:
        table.add_row(label, *(cell(s[key], fmt, repeats) for s in summary.values()))
        if key == "peak_single_rss_mb":
            largest = (
                max(runs, key=lambda r: r["peak_single_rss_mb"])["largest_process"]
                for runs in report["runs"].values()
            )
            table.add_row("  largest process", *largest)
            kinds = sorted({k for s in summary.values() for k in s["peak_rss_by_kind_mb"]})
            for kind in kinds:
                cells = (
                    cell(s["peak_rss_by_kind_mb"].get(kind), "{:,.0f}", repeats)
                    for s in summary.values()
                )
                table.add_row(f"  peak RSS MB: {kind}", *cells)
        if key == "cpu_s":
            kinds = sorted({k for s in summary.values() for k in s["cpu_by_kind"]})
            for kind in kinds:
                cells = (
                    cell(s["cpu_by_kind"].get(kind), "{:.2f}", repeats) for s in summary.values()
                )
                table.add_row(f"  CPU s: {kind}", *cells)
    table.add_row(
        "all verified",
        *(
            f"{s['verified']}/{len(report['runs'][name])}"
            if s["verified"] < len(report["runs"][name])
            else "yes"
            for name, s in summary.items()
        ),
    )
    console.print(table)
    for label, ratio in report["ratios"].items():
        per_repeat = ratio.get("per_repeat")
        detail = ""
        if per_repeat and len(per_repeat) > 1:
            detail = (
                " (per run: "
                + ", ".join("-" if r is None else f"{r:.2f}" for r in per_repeat)
                + ")"
            )
        console.print(f"{label}: [bold]{ratio['value']:.2f}[/bold]{detail}")
    for name, runs in report["runs"].items():
        for run in runs:
            if not run["verified"] or run["leftover_pids"]:
                console.print(
                    f"[red]{name}: exit {run['exit_code']}, receiver {run['receiver']},"
                    f" leftover processes {run['leftover_pids']}; stderr in"
                    f" {run['stderr_log']}[/red]"
                )


def print_report(report: dict[str, Any], console: Console) -> None:
    for size_report in report["sizes"]:
        print_size(size_report, console)
    m = report["machine"]
    console.print(
        f"machine: {m['cpus']} CPUs, {m['processor']}, {m['system']}, {m['memory_gib']} GiB,"
        f" Python {m['python']}; " + ", ".join(f"{name} {v}" for name, v in m["versions"].items())
    )
    console.print(
        "CPU s: user+system of the route's process and every descendant (see bench/README.md)"
    )


# -- the command line ------------------------------------------------------------------------


def parse_list(text: str, item: Callable[[str], Any], what: str) -> list[Any]:
    try:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} {text!r}: give comma-separated values, e.g. 1000000,10000000"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"{what} {text!r} is empty")
    return values


def sizes(text: str) -> list[int]:
    values = parse_list(text, lambda n: int(n.replace("_", "")), "--contacts")
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"--contacts {text}: every size must be 1 or more")
    return values


def routes(text: str) -> list[str]:
    values = parse_list(text, str, "--routes")
    unknown = [v for v in values if v not in ROUTES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"--routes {text}: unknown {', '.join(unknown)}; use some of {', '.join(ROUTES)}"
        )
    return list(dict.fromkeys(values))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--contacts", type=sizes, default=[1_000_000], metavar="N[,N…]", help="audience sizes"
    )
    parser.add_argument(
        "--routes",
        type=routes,
        default=list(DEFAULT_ROUTES),
        metavar="R[,R…]",
        help=f"routes to run, in this order within a repeat (of {','.join(ROUTES)})",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each route per size")
    parser.add_argument("--shape", default="cdp", help="synthetic audience shape (synth.SHAPES)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="synthetic audience seed")
    parser.add_argument("--skip-baseline", action="store_true", help="same as --routes hookcast")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="audiences, logs")
    parser.add_argument(
        "--memory-sweep", metavar="N,N,...", help="run only hookcast at each size; compare RSS"
    )
    # Faults and limits (with --routes hookcast: the peers have no rate limit).
    parser.add_argument("--fail-rate", type=float, default=0.0, help="receiver answers 500")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="receiver delay")
    parser.add_argument("--rps", type=float, default=None, help="hookcast's requests_per_second")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give 1 or more")
    if args.skip_baseline:
        args.routes = ["hookcast"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Console(stderr=True)  # progress goes to stderr so --json output stays clean
    problem = shape_problem(args.shape)
    if problem is not None:
        log.print(f"[red]{problem}[/red]")
        return 2
    args.out = args.out.resolve()  # the subprocesses run in the repository, not here
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        receivers = Receivers(args)
    except BenchError as exc:
        log.print(f"[red]{exc}[/red]")
        return 2
    try:
        if args.memory_sweep:
            reports = [sweep_memory(args, receivers, log)]
        else:
            reports = [compare(args, size, receivers, log) for size in args.contacts]
    finally:
        receivers.stop()
    options = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k != "skip_baseline"
    }
    report = {
        "options": options,
        "sizes": reports,
        "machine": describe_machine(),
        "ok": all(r["ok"] for r in reports),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, Console())
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
