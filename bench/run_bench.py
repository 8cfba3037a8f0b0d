"""Benchmark hookcast against the plain baseline, end to end, on a local receiver.

    python bench/run_bench.py --contacts 1000000 [--batch-size 500] [--concurrency 8]
    python bench/run_bench.py --memory-sweep 200000,2000000

What is measured, and how, is in bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from rich.console import Console
from rich.table import Table

from hookcast.cluster.testbed.synth import load_test_job, write_audience

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SAMPLE_S = 0.2
MB = 1024 * 1024
SWEEP_TARGET = 1.2


def ensure_audience(out: Path, contacts: int, seed: int, log: Console) -> Path:
    path = out / f"audience-{contacts}-seed{seed}.parquet"
    if not path.exists():  # write_audience is atomic: a file that exists is complete
        log.print(f"generating {contacts:,} contacts into {path}")
        out.mkdir(parents=True, exist_ok=True)
        write_audience(path, contacts, seed=seed)
    return path


def start_receiver(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "hookcast.cluster.testbed.sink", "--port", "0"]
    if args.fail_rate:
        cmd += ["--fail-rate", str(args.fail_rate)]
    if args.latency_ms:
        cmd += ["--latency-ms", str(args.latency_ms)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("listening on "):
        stop_process(proc)
        raise RuntimeError(f"the receiver did not start; it printed {line!r}")
    return proc, line.split()[-1]


def stop_process(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def sample_tree(root: psutil.Process, seen: dict[int, psutil.Process]) -> tuple[int, int, str]:
    """RSS in bytes of `root` and its descendants: (sum, largest, the largest's name)."""
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, ""
    sizes = []
    for proc in tree:  # any of them may exit mid-sample
        seen.setdefault(proc.pid, proc)
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            sizes.append((proc.memory_info().rss, proc.name()))
    largest = max(sizes, default=(0, ""))
    return sum(rss for rss, _ in sizes), *largest


def run_sampled(cmd: list[str], receiver: psutil.Process, stderr_log: Path) -> dict[str, Any]:
    """Run `cmd` to its exit, timing it and sampling the RSS of its process tree."""
    peak_total = peak_single = peak_receiver = 0
    largest = ""
    seen: dict[int, psutil.Process] = {}
    with tempfile.TemporaryFile("w+") as stdout, stderr_log.open("w") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=stderr, text=True)
        root = psutil.Process(proc.pid)
        while True:
            total, single, name = sample_tree(root, seen)
            peak_total = max(peak_total, total)
            if single > peak_single:
                peak_single, largest = single, name
            peak_receiver = max(peak_receiver, receiver.memory_info().rss)
            try:
                exit_code = proc.wait(SAMPLE_S)  # returns within ~50 ms of the exit
                break
            except subprocess.TimeoutExpired:
                pass
        wall_s = time.perf_counter() - started
        stdout.seek(0)
        output = stdout.read()
    # Ray processes that outlive the run would eat CPU from the next one: report them.
    orphans = [p for pid, p in seen.items() if pid != proc.pid]
    _, alive = psutil.wait_procs(orphans, timeout=5)
    return {
        "exit_code": exit_code,
        "wall_s": wall_s,
        "summary": parse_summary(output),
        "peak_total_rss_mb": peak_total / MB,
        "peak_single_rss_mb": peak_single / MB,
        "largest_process": largest,
        "receiver_peak_rss_mb": peak_receiver / MB,
        "processes": len(seen),
        "leftover_pids": [p.pid for p in alive],
    }


def parse_summary(text: str) -> dict[str, Any]:
    """The one JSON object the tool printed; {} when it printed none (it crashed)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


def measure(
    cmd: list[str], contacts: int, url: str, receiver: psutil.Process, log_path: Path
) -> dict[str, Any]:
    """Run one side, then verify what the receiver got and reset it."""
    run = run_sampled(cmd, receiver, log_path)
    base = url.rsplit("/", 1)[0]
    stats = httpx.get(f"{base}/_stats").json()
    httpx.post(f"{base}/_reset").raise_for_status()
    summary, wall_s = run.pop("summary"), run["wall_s"]
    sent = summary.get("contacts", 0)
    run.update(
        contacts=sent,
        requests=summary.get("requests", 0),
        own_duration_s=summary.get("duration_s"),
        own_contacts_per_s=summary.get("contacts_per_s"),
        contacts_per_s=sent / wall_s,
        requests_per_s=summary.get("requests", 0) / wall_s,
        receiver=stats,
        verified=run["exit_code"] == 0
        and sent == contacts
        and stats["unique_ids"] == contacts
        and stats["duplicate_ids"] == 0,
        stderr_log=str(log_path),
    )
    return run


def baseline_command(source: Path, url: str, args: argparse.Namespace) -> list[str]:
    return [
        *(sys.executable, str(BENCH_DIR / "baseline.py"), "--source", str(source)),
        *("--url", url, "--batch-size", str(args.batch_size)),
        *("--concurrency", str(args.concurrency), "--json"),
    ]


def hookcast_command(work: Path, source: Path, url: str, args: argparse.Namespace) -> list[str]:
    job = load_test_job(
        "bench",
        url,
        source,
        batch_size=args.batch_size,
        max_in_flight=args.concurrency,
        requests_per_second=args.rps,
    )
    (work / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    hookcast = Path(sys.executable).parent / "hookcast"  # the venv's, not whatever is on PATH
    return [str(hookcast), "run", str(work / "job.yaml"), "--json", "--state-dir", str(work)]


def measure_hookcast(
    args: argparse.Namespace, source: Path, contacts: int, url: str, receiver: psutil.Process
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hookcast-bench-") as work:
        cmd = hookcast_command(Path(work), source, url, args)
        return measure(cmd, contacts, url, receiver, args.out / f"hookcast-{contacts}.log")


def compare(
    args: argparse.Namespace, url: str, receiver: psutil.Process, log: Console
) -> dict[str, Any]:
    source = ensure_audience(args.out, args.contacts, args.seed, log)
    runs: dict[str, dict[str, Any]] = {}
    if not args.skip_baseline:
        log.print(f"running the baseline on {args.contacts:,} contacts")
        cmd = baseline_command(source, url, args)
        log_path = args.out / f"baseline-{args.contacts}.log"
        runs["baseline"] = measure(cmd, args.contacts, url, receiver, log_path)
    log.print(f"running hookcast on {args.contacts:,} contacts")
    runs["hookcast"] = measure_hookcast(args, source, args.contacts, url, receiver)
    ratios = {}
    if "baseline" in runs and runs["baseline"]["contacts_per_s"]:
        speedup = runs["hookcast"]["contacts_per_s"] / runs["baseline"]["contacts_per_s"]
        ratios["hookcast/baseline contacts/s (end to end)"] = speedup
    title = f"{args.contacts:,} contacts, batch {args.batch_size}, concurrency {args.concurrency}"
    ok = all(r["verified"] for r in runs.values())
    return {"title": title, "runs": runs, "ratios": ratios, "ok": ok}


def sweep_memory(
    args: argparse.Namespace, url: str, receiver: psutil.Process, log: Console
) -> dict[str, Any]:
    sizes = sorted(int(s) for s in args.memory_sweep.split(","))
    runs: dict[str, dict[str, Any]] = {}
    for size in sizes:
        source = ensure_audience(args.out, size, args.seed, log)
        log.print(f"running hookcast on {size:,} contacts")
        runs[f"{size:,}"] = measure_hookcast(args, source, size, url, receiver)
    smallest, largest = runs[f"{sizes[0]:,}"], runs[f"{sizes[-1]:,}"]
    growth = largest["peak_total_rss_mb"] / smallest["peak_total_rss_mb"]
    ratios = {
        f"peak total RSS {sizes[-1]:,} / {sizes[0]:,} (target <= {SWEEP_TARGET})": growth,
        f"peak single-process RSS {sizes[-1]:,} / {sizes[0]:,}": (
            largest["peak_single_rss_mb"] / smallest["peak_single_rss_mb"]
        ),
    }
    title = f"hookcast memory sweep, batch {args.batch_size}, concurrency {args.concurrency}"
    ok = all(r["verified"] for r in runs.values()) and growth <= SWEEP_TARGET
    return {"title": title, "runs": runs, "ratios": ratios, "ok": ok}


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


def print_report(report: dict[str, Any], console: Console) -> None:
    runs = report["runs"]
    table = Table(title=report["title"])
    table.add_column("")
    for name in runs:
        table.add_column(name, justify="right")
    rows = [
        ("contacts", "contacts", "{:,}"),
        ("requests", "requests", "{:,}"),
        ("wall s (end to end)", "wall_s", "{:.2f}"),
        ("own duration s", "own_duration_s", "{:.2f}"),
        ("contacts/s (end to end)", "contacts_per_s", "{:,.0f}"),
        ("contacts/s (own timer)", "own_contacts_per_s", "{:,.0f}"),
        ("requests/s (end to end)", "requests_per_s", "{:,.1f}"),
        ("peak total RSS MB", "peak_total_rss_mb", "{:,.0f}"),
        ("peak single-process RSS MB", "peak_single_rss_mb", "{:,.0f}"),
        ("largest process", "largest_process", "{}"),
        ("processes seen", "processes", "{}"),
        ("receiver peak RSS MB (not counted)", "receiver_peak_rss_mb", "{:,.0f}"),
    ]
    for label, key, fmt in rows:
        cells = [("-" if r.get(key) is None else fmt.format(r[key])) for r in runs.values()]
        table.add_row(label, *cells)
    table.add_row("all verified", *("yes" if r["verified"] else "NO" for r in runs.values()))
    console.print(table)
    for label, value in report["ratios"].items():
        console.print(f"{label}: [bold]{value:.2f}[/bold]")
    m = report["machine"]
    console.print(
        f"machine: {m['cpus']} CPUs, {m['processor']}, {m['system']}, {m['memory_gib']} GiB,"
        f" Python {m['python']}; " + ", ".join(f"{name} {v}" for name, v in m["versions"].items())
    )
    for name, run in runs.items():
        if not run["verified"] or run["leftover_pids"]:
            console.print(
                f"[red]{name}: exit {run['exit_code']}, receiver {run['receiver']},"
                f" leftover processes {run['leftover_pids']}; stderr in {run['stderr_log']}[/red]"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="synthetic audience seed")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="audiences, logs")
    parser.add_argument(
        "--memory-sweep", metavar="N,N,...", help="run only hookcast at each size; compare RSS"
    )
    # Faults and limits (use with --skip-baseline: the baseline has no rate limit).
    parser.add_argument("--fail-rate", type=float, default=0.0, help="receiver answers 500")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="receiver delay")
    parser.add_argument("--rps", type=float, default=None, help="hookcast's requests_per_second")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()  # the subprocesses run in the repository, not here
    args.out.mkdir(parents=True, exist_ok=True)
    log = Console(stderr=True)  # progress goes to stderr so --json output stays clean
    receiver, url = start_receiver(args)
    try:
        run_all = sweep_memory if args.memory_sweep else compare
        report = run_all(args, url, psutil.Process(receiver.pid), log)
    finally:
        stop_process(receiver)
    report["machine"] = describe_machine()
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, Console())
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
