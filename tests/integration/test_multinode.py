"""A 3-node Ray cluster on this machine (loopback only): senders spread, limits still global."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
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

from hookcast.cluster.ledger import Ledger
from hookcast.cluster.testbed.sink import Sink
from hookcast.cluster.testbed.synth import write_audience

HOOKCAST = [sys.executable, "-m", "hookcast.cli.app"]


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[tuple[str, dict[str, str], int]]:
    """A head and two worker nodes on 127.0.0.1, one CPU each; yields the GCS address, the
    environment to reach it with, and the pid all its processes descend from."""
    temp_dir = tempfile.mkdtemp(prefix="hc-3nodes-", dir="/tmp")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    cluster = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.local_cluster", "3", temp_dir],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([cluster.stdout], [], [], 120)
        assert ready, "the 3-node cluster did not start within 120 s"
        gcs = cluster.stdout.readline().strip()
        assert gcs.startswith("127.0.0.1:"), gcs
        yield gcs, env, cluster.pid
    finally:
        tree = _tree(cluster.pid)
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        finally:
            for proc in tree:  # whatever the shutdown left behind
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            shutil.rmtree(temp_dir, ignore_errors=True)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _loopback(host: str) -> bool:
    address = ipaddress.ip_address(host)
    return address.is_loopback or bool(
        isinstance(address, ipaddress.IPv6Address)
        and address.ipv4_mapped
        and address.ipv4_mapped.is_loopback
    )


def _listening(pid: int) -> set[tuple[str, str]]:
    """(address, process name) of every socket the cluster's processes listen on."""
    found = set()
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, proc.name()))
    return found


@pytest.mark.slow
def test_50000_contacts_over_three_nodes_arrive_once_within_the_global_rate_limit(
    three_nodes: tuple[str, dict[str, str], int], write_job, tmp_path: Path
) -> None:
    gcs, env, cluster_pid = three_nodes
    audience = write_audience(tmp_path / "contacts.parquet", 50_000)
    state = ["--state-dir", str(tmp_path / "state")]
    with Sink() as receiver:
        job = write_job(
            receiver.url,
            audience,
            batch_size=500,
            rate_limit={"requests_per_second": 10, "max_in_flight": 6},
        )
        run = subprocess.Popen(
            [*HOOKCAST, "run", str(job), "--json", "--senders", "3", "--address", gcs, *state],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Mid-run, `hookcast status` on the cluster shows where each sender landed.
            deadline = time.monotonic() + 120
            while receiver.recorder.requests < 30:
                assert run.poll() is None, run.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the run did not get going within 120 s"
                time.sleep(0.1)
            listening = _listening(cluster_pid)
            status = subprocess.run(
                [*HOOKCAST, "status", "--json", "--address", gcs, *state],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            out, err = run.communicate(timeout=240)
        finally:
            if run.poll() is None:
                run.kill()
        arrivals = receiver.recorder.arrivals
        delivered = receiver.recorder.delivered_ids
        duplicates = receiver.recorder.duplicate_ids
    assert run.returncode == 0, err[-3000:]
    assert listening and all(_loopback(host) for host, _ in listening), listening
    summary = orjson.loads(out)
    assert summary["delivered_batches"] == 100
    assert len(delivered) == 50_000 and duplicates == 0

    assert status.returncode == 0, status.stderr[-3000:]
    shown = orjson.loads(status.stdout)
    assert [r["run_id"] for r in shown["runs"]] == [summary["run_id"]]
    senders = [
        a for a in shown["actors"] if a["run_id"] == summary["run_id"] and a["kind"] == "Sender"
    ]
    assert len(senders) == 3 and all(a["state"] == "ALIVE" for a in senders), senders
    assert len({a["node_id"] for a in senders}) == 3, "the senders did not spread over the nodes"
    assert sum(a["stats"]["delivered_contacts"] for a in senders) > 0

    # Slots are 100 ms apart across the three senders: the k-th request arrives no earlier
    # than k / 10 s after the run began (load only delays; exact windows: unit tests).
    book = Ledger(tmp_path / "state")
    try:
        created_at = book.get_run(summary["run_id"]).created_at
    finally:
        book.close()
    wall_minus_monotonic = time.time() - time.monotonic()
    times = sorted(a.t + wall_minus_monotonic for a in arrivals)
    early = [
        (k, round(t - created_at, 2)) for k, t in enumerate(times) if t < created_at + k / 10 - 0.1
    ]
    assert not early, f"requests ahead of their slot (k, s after the run began): {early[:5]}"
