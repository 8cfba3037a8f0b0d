"""The embedded Ray that `hookcast run` starts by itself: lean by default, a dashboard on
request, and nothing left behind when the command exits.

These start their own `hookcast run` process (its own embedded Ray), next to the session's."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import psutil

from hookcast.cluster.testbed.sink import Reply, Sink

HOOKCAST = [sys.executable, "-m", "hookcast.cli.app"]


def _slow_run(
    write_job, tmp_path: Path, source: Path, receiver: Sink, *options: str
) -> subprocess.Popen:
    """`hookcast [options] run` of 50 batches, one at a time, 50 ms each (a few seconds)."""
    job = write_job(receiver.url, source, batch_size=100, rate_limit={"max_in_flight": 1})
    receiver.behaviour = lambda request: Reply(delay_s=0.05)
    err = (tmp_path / "cli.err").open("wb")
    command = [*HOOKCAST, *options, "run", str(job), "--json", "--state-dir", str(tmp_path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)


def _wait_for_requests(proc: subprocess.Popen, receiver: Sink, tmp_path: Path) -> None:
    deadline = time.monotonic() + 60
    while receiver.recorder.requests < 3:
        assert proc.poll() is None, (tmp_path / "cli.err").read_text()[-2000:]
        assert time.monotonic() < deadline, "no request reached the receiver within 60 s"
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, tmp_path: Path) -> dict:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, (tmp_path / "cli.err").read_text()[-2000:]
    return orjson.loads(out)


def test_embedded_ray_runs_without_autoscaler_or_dashboard_and_leaves_nothing_behind(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    with Sink() as receiver:
        proc = _slow_run(write_job, tmp_path, audience_5k, receiver)
        try:
            _wait_for_requests(proc, receiver, tmp_path)
            tree = psutil.Process(proc.pid).children(recursive=True)
            commands = [" ".join(p.cmdline()) for p in tree if p.is_running()]
        finally:
            summary = _finish(proc, tmp_path)
        assert receiver.recorder.contacts == 5000
    assert summary["delivered_contacts"] == 5000
    assert any("raylet" in c for c in commands), commands  # we did see Ray's processes
    assert not any("autoscaler" in c for c in commands), "the autoscaler monitor was started"
    assert not any("dashboard/dashboard.py" in c for c in commands), "an API server was started"
    assert not any("log_monitor" in c for c in commands), "a log monitor was started"
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"left running after exit: {[p.pid for p in alive]}"


def test_dashboard_option_serves_rays_dashboard_on_loopback_during_the_run(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    with Sink() as receiver:
        proc = _slow_run(write_job, tmp_path, audience_5k, receiver, "--dashboard")
        try:
            _wait_for_requests(proc, receiver, tmp_path)
            shown = (tmp_path / "cli.err").read_text()
            found = re.search(r"dashboard at (http://[\d.]+:\d+)", shown)
            assert found, shown
            url = found.group(1)
            assert url.startswith("http://127.0.0.1:")
            page = httpx.get(url, timeout=10, trust_env=False)
        finally:
            summary = _finish(proc, tmp_path)
    assert page.status_code == 200
    assert "<html" in page.text.lower()
    assert summary["delivered_contacts"] == 5000


def test_sigkill_of_run_leaves_no_ray_process_behind_within_seconds(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    """The watchdog kills the embedded Ray within ~0.1 s of seeing its driver's pipe close
    (measured); 15 s leaves room for a loaded CI machine, and Ray's agents alone outlive a
    killed driver by a minute or more without it."""
    with Sink() as receiver:
        proc = _slow_run(write_job, tmp_path, audience_5k, receiver)
        try:
            _wait_for_requests(proc, receiver, tmp_path)
            tree = psutil.Process(proc.pid).children(recursive=True)
            names = [p.name() for p in tree]
            proc.kill()
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
        deadline = time.monotonic() + 15
        alive = tree
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _running(p)]
            time.sleep(0.05)
    assert "raylet" in names and any("Dashboard" in n for n in names), names
    assert not alive, f"still running 15 s after SIGKILL: {[(p.pid, p.name()) for p in alive]}"


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
