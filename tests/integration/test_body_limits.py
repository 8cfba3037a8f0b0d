"""Bodies that fit, behind a real reverse proxy: nginx with ``client_max_body_size`` in front
of the built-in receiver, on a real Ray. Every contact arrives exactly once but the ones too
large alone, which are dead-lettered; a job that knows the limit draws no 413 at all."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import BatchStatus, Ledger, RunStatus
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.sink import Sink

BODY_LIMIT_KB = 16
HUGE = {1234, 2345}  # each alone over the proxy's limit
CONTACTS = 3000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx on 127.0.0.1 proxying to ``upstream`` with a body limit; its access log gives
    the status of every request it answered."""

    def __init__(self, folder: Path, upstream_port: int) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            pytest.fail("nginx is not installed: `apt-get install nginx-light` (.ci/run does)")
        self.port = free_port()
        self.log = folder / "access.log"
        temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            path.mkdir()
        (folder / "nginx.conf").write_text(
            f"""
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 128; }}
http {{
    log_format statuses '$status $request_length';
    access_log {self.log} statuses;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    client_max_body_size {BODY_LIMIT_KB}k;
    # Bodies in memory: nginx's workers (not root) could not write temp files in here.
    client_body_buffer_size 1m;
    proxy_buffering off;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [binary, "-p", str(folder), "-c", str(folder / "nginx.conf")],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"nginx did not start: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("nginx did not listen within 30 s")
                time.sleep(0.05)

    def statuses(self) -> Counter[int]:
        return Counter(int(line.split()[0]) for line in self.log.read_text().splitlines())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def proxied_sink(tmp_path: Path) -> Iterator[tuple[Sink, Nginx]]:
    with Sink() as sink:
        folder = tmp_path / "nginx"
        folder.mkdir()
        proxy = Nginx(folder, int(sink.url.split(":")[2].split("/")[0]))
        try:
            yield sink, proxy
        finally:
            proxy.stop()


@pytest.fixture(scope="module")
def audience_with_huge_contacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 contacts of ~150 bytes (a batch of 500 is ~75 KB); two of 40 KB each."""
    ids = list(range(1, CONTACTS + 1))
    bios = [("x" * 40_000 if i in HUGE else f"bio of contact {i}, " * 5) for i in ids]
    path = tmp_path_factory.mktemp("huge") / "contacts.parquet"
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "bio": bios}), path)
    return path


def url_of(proxy: Nginx) -> str:
    return f"http://127.0.0.1:{proxy.port}/hook"


def test_behind_nginx_body_limit_every_contact_arrives_once_but_the_too_large_ones(
    proxied_sink, write_job, ledger: Ledger, audience_with_huge_contacts: Path
) -> None:
    sink, proxy = proxied_sink
    path = write_job(
        url_of(proxy), audience_with_huge_contacts, payload={"contact": True}, batch_size=500
    )
    summary = start_run(load_job(path), ledger)

    assert summary.status == RunStatus.FAILED  # the two huge contacts
    assert sink.recorder.delivered_ids == frozenset(range(1, CONTACTS + 1)) - HUGE
    assert sink.recorder.duplicate_ids == 0
    dead = ledger.batches(summary.run_id, [BatchStatus.DEAD_LETTERED])
    assert sorted((d.first_id, d.contacts, d.http_status) for d in dead) == [
        (i, 1, 413) for i in sorted(HUGE)
    ]
    statuses = proxy.statuses()
    assert set(statuses) == {200, 413}
    # 6 batches of ~75 KB behind 16 KB: the first 413s teach the rest to go cut.
    assert statuses[413] <= 30, statuses
    assert summary.split_batches >= 6


def test_a_job_that_knows_the_limit_draws_no_413(
    proxied_sink, write_job, ledger: Ledger, audience_with_huge_contacts: Path
) -> None:
    sink, proxy = proxied_sink
    path = write_job(
        url_of(proxy),
        audience_with_huge_contacts,
        payload={"contact": True},
        max_body_bytes=BODY_LIMIT_KB * 1024,
    )
    summary = start_run(load_job(path), ledger)

    assert sink.recorder.delivered_ids == frozenset(range(1, CONTACTS + 1)) - HUGE
    assert sink.recorder.duplicate_ids == 0
    assert set(proxy.statuses()) == {200}  # nothing too large was sent
    dead = ledger.batches(summary.run_id, [BatchStatus.DEAD_LETTERED])
    assert sorted(d.first_id for d in dead) == sorted(HUGE)
    assert all("over max_body_bytes 16,384: not sent" in d.reason for d in dead)
