"""The embedded Ray that `hookcast run` starts by itself: only when the run lasts long enough
for its metrics, lean, a dashboard on request, and nothing left behind when the command exits.

These start their own `hookcast run` process (its own embedded Ray), next to the session's."""

from __future__ import annotations

import contextlib
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
    write_job, tmp_path: Path, source: Path, receiver: Sink, *options: str, delay_s: float = 0.05
) -> subprocess.Popen:
    """`hookcast [options] run` of 50 batches, one at a time, ``delay_s`` each."""
    job = write_job(receiver.url, source, batch_size=100, rate_limit={"max_in_flight": 1})
    receiver.behaviour = lambda request: Reply(delay_s=delay_s)
    err = (tmp_path / "cli.err").open("wb")
    command = [*HOOKCAST, *options, "run", str(job), "--json", "--state-dir", str(tmp_path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)


def _wait_for_requests(proc: subprocess.Popen, receiver: Sink, tmp_path: Path) -> None:
    deadline = time.monotonic() + 60
    while receiver.recorder.requests < 3:
        assert proc.poll() is None, (tmp_path / "cli.err").read_text()[-2000:]
        assert time.monotonic() < deadline, "no request reached the receiver within 60 s"
        time.sleep(0.05)


def _wait_for_ray(proc: subprocess.Popen, tmp_path: Path) -> list[psutil.Process]:
    """The run's process tree once its Ray is up (raylet, agents and the watchdog)."""
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "cli.err").read_text()[-2000:]
        tree = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in tree if _running(p))
        if all(part in names for part in ("raylet", "DashboardAgent", "cluster.watchdog")):
            return tree
        assert time.monotonic() < deadline, f"Ray did not start within 60 s: {names}"
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, tmp_path: Path) -> dict:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, (tmp_path / "cli.err").read_text()[-2000:]
    return orjson.loads(out)


def test_a_short_run_delivers_without_starting_ray(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    """A run that ends within seconds would show in Ray's metrics not at all: it starts no
    Ray (the batches go out from the hookcast process itself)."""
    with Sink() as receiver:
        job = write_job(receiver.url, audience_5k, batch_size=500)
        err = (tmp_path / "cli.err").open("wb")
        command = [*HOOKCAST, "run", str(job), "--json", "--state-dir", str(tmp_path)]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
        seen: set[str] = set()
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):  # a child that ended while listed
                seen.update(p.name() for p in psutil.Process(proc.pid).children(recursive=True))
            time.sleep(0.01)
        summary = _finish(proc, tmp_path)
        assert receiver.recorder.contacts == 5000
    assert summary["delivered_contacts"] == 5000
    assert not {"raylet", "gcs_server"} & seen, seen


def test_a_long_run_starts_a_lean_embedded_ray_and_leaves_nothing_behind(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    """50 requests of 0.3 s: after its first second the run has ~15 s to go, long enough
    for Ray's metrics; once Ray is up the receiver answers at once."""
    with Sink() as receiver:
        proc = _slow_run(write_job, tmp_path, audience_5k, receiver, delay_s=0.3)
        try:
            _wait_for_requests(proc, receiver, tmp_path)
            tree = _wait_for_ray(proc, tmp_path)
            commands = [" ".join(p.cmdline()) for p in tree if _running(p)]
            receiver.behaviour = lambda request: Reply()
        finally:
            summary = _finish(proc, tmp_path)
        assert receiver.recorder.contacts == 5000
    assert summary["delivered_contacts"] == 5000
    assert not any("ray::IDLE" in c for c in commands), "idle workers were started ahead"
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
        proc = _slow_run(write_job, tmp_path, audience_5k, receiver, delay_s=0.3)
        try:
            _wait_for_requests(proc, receiver, tmp_path)
            tree = _wait_for_ray(proc, tmp_path)
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
