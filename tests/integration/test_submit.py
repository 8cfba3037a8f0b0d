"""`hookcast submit` to a real Ray head started with `ray start --head` on 127.0.0.1.

The head gets its own temp dir; the test stops exactly the processes under it (never
`ray stop`, which would end every Ray on the machine, this session's included).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
from typer.testing import CliRunner

from hookcast.cli.app import app
from hookcast.cluster.testbed.sink import Sink
from tests.integration.local_cluster import free_ports

runner = CliRunner()


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, str]]:
    """A one-node Ray cluster on loopback; yields its dashboard (Jobs API) address and its
    Ray Client address."""
    temp_dir = tempfile.mkdtemp(prefix="hc-head-", dir="/tmp")
    dashboard, client, gcs_port, *agent_ports = free_ports(8)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run(
        [
            str(Path(bin_dir) / "ray"),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}",
            "--num-cpus=2",
            "--object-store-memory=268435456",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            # Its own agent and metrics ports: this session's Ray holds the default ones.
            f"--dashboard-agent-listen-port={agent_ports[0]}",
            f"--dashboard-agent-grpc-port={agent_ports[1]}",
            f"--runtime-env-agent-port={agent_ports[2]}",
            f"--metrics-export-port={agent_ports[3]}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"http://127.0.0.1:{dashboard}", f"ray://127.0.0.1:{client}"
    finally:
        # The agents rename themselves (ray::DashboardAgent): find them as descendants. The
        # Ray Client servers name only the head's GCS address, and outlive it otherwise
        # (holding ports from 23000 that the next head's client server then cannot take).
        marks = (temp_dir, f"127.0.0.1:{gcs_port}")
        started_here = [
            proc
            for proc in psutil.process_iter(["cmdline"])
            if any(mark in part for part in proc.info["cmdline"] or [] for mark in marks)
        ]
        for proc in {p for root in started_here for p in (root, *_descendants(root))}:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


@pytest.fixture(scope="module")
def head(cluster: tuple[str, str]) -> str:
    return cluster[0]


def test_submitted_job_runs_on_the_cluster_and_every_contact_arrives(
    head: str,
    sink: Sink,
    write_job,
    audience_5k: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "local-value-not-sent")
    job = write_job(sink.url, audience_5k, webhook__headers={"X-Token": "${HOOK_TOKEN}"})
    started = time.monotonic()
    result = runner.invoke(
        app,
        [
            "submit",
            str(job),
            "--address",
            head,
            "--follow",
            "--state-dir",
            str(tmp_path / "cluster-state"),
        ],
        env={"HOOK_TOKEN": ""},
    )
    assert "submitted hookcast-test-job-" in result.output, result.output
    assert f"{head}/#/jobs/hookcast-test-job-" in result.output
    # The cluster resolves ${HOOK_TOKEN} itself: here (as on a real cluster) it is not set
    # for the job, so the run is rejected there, and nothing is sent in clear text.
    assert "HOOK_TOKEN" in result.output
    assert result.exit_code == 2, result.output  # rejected there, as `hookcast run` would be
    assert "local-value-not-sent" not in result.output
    assert sink.recorder.requests == 0
    assert time.monotonic() - started < 120

    plain = write_job(sink.url, audience_5k, filename="plain.yaml")
    done = runner.invoke(
        app,
        [
            "submit",
            str(plain),
            "--address",
            head,
            "--follow",
            "--state-dir",
            str(tmp_path / "cluster-state"),
        ],
    )
    assert done.exit_code == 0, done.output
    # --follow shows the run's own summary (read from the job's progress lines), not raw logs.
    assert "5,000 of 5,000 delivered" in done.output
    assert "succeeded" in done.output
    assert "hookcast-progress" not in done.output and "hookcast-summary" not in done.output
    assert sink.recorder.contacts == 5000 and sink.recorder.duplicate_ids == 0


def test_run_with_a_ray_client_address_runs_on_that_cluster(
    cluster: tuple[str, str], sink: Sink, write_job, audience_5k: Path, tmp_path: Path
) -> None:
    """`hookcast run --address ray://...`: the driver stays here, the actors run there."""
    _, client = cluster
    job = write_job(sink.url, audience_5k)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    state = str(tmp_path / "state")
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "hookcast.cli.app",
            "run",
            str(job),
            "--json",
            "--address",
            client,
            "--state-dir",
            state,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = orjson.loads(ran.stdout)
    assert summary["delivered_contacts"] == 5000
    assert sink.recorder.contacts == 5000 and sink.recorder.duplicate_ids == 0
