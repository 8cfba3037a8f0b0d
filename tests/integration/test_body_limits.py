"""Bodies that fit, behind a real reverse proxy: nginx with ``client_max_body_size`` in front
of the built-in receiver, on a real Ray. Every contact arrives exactly once but the ones too
large alone, which are dead-lettered; a job that knows the limit draws no 413 at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import BatchStatus, Ledger, RunStatus
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.sink import Sink
from tests.nginx import Nginx, NginxError

BODY_LIMIT_KB = 16
HUGE = {1234, 2345}  # each alone over the proxy's limit
CONTACTS = 3000


@pytest.fixture
def proxied_sink(tmp_path: Path) -> Iterator[tuple[Sink, Nginx]]:
    with Sink() as sink:
        folder = tmp_path / "nginx"
        folder.mkdir()
        try:
            proxy = Nginx(folder, int(sink.url.split(":")[2].split("/")[0]), BODY_LIMIT_KB)
        except NginxError as exc:
            pytest.fail(str(exc))
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
