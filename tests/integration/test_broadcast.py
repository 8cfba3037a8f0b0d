"""The broadcast path end to end: job file -> segment actor -> senders -> a real receiver."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import BatchStatus, Ledger, RunStatus
from hookcast.cluster.runs import replay_run, resume_run, start_run
from hookcast.cluster.testbed.sink import OK, Reply, Sink
from hookcast.cluster.testbed.synth import write_audience, write_ids


@pytest.fixture(scope="module")
def audience_58233(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audience(tmp_path_factory.mktemp("big") / "contacts.parquet", 58_233)


def test_58233_contacts_arrive_as_116_full_batches_and_one_of_233(
    sink: Sink, write_job, ledger: Ledger, audience_58233: Path
) -> None:
    job = load_job(write_job(sink.url, audience_58233))
    summary = start_run(job, ledger)

    arrivals = sink.recorder.arrivals
    sizes = Counter(len(a.ids) for a in arrivals)
    assert sizes == {500: 116, 233: 1}
    every_id = [i for a in arrivals for i in a.ids]
    expected = pq.read_table(audience_58233, columns=["id"]).column("id").to_pylist()
    assert sorted(every_id) == sorted(expected)
    assert len(set(every_id)) == 58_233
    keys = [a.key for a in arrivals]
    assert None not in keys and len(set(keys)) == 117
    assert all(a.headers["content-type"] == "application/json" for a in arrivals)
    assert summary.status == "succeeded"
    assert (summary.contacts, summary.batches, summary.delivered_batches) == (58_233, 117, 117)

    # The ledger agrees with what arrived, batch by batch.
    by_key = {a.key: a.ids for a in arrivals}
    batches = ledger.batches(summary.run_id)
    assert all(b.status == BatchStatus.DELIVERED for b in batches)
    for batch in batches:
        ids = by_key[batch.idem_key]
        assert (ids[0], ids[-1], len(ids)) == (batch.first_id, batch.last_id, batch.contacts)
    # Batch k holds positions k*500 .. k*500+499 of the frozen audience: the source's order.
    in_seq_order = sorted(batches, key=lambda b: b.seq)
    assert [i for b in in_seq_order for i in by_key[b.idem_key]] == expected


def test_where_segment_sends_only_matching_contacts(
    sink: Sink, write_job, ledger: Ledger, audience_5k: Path
) -> None:
    where = "gender = 'male' AND props.testNum > 100"
    job = load_job(write_job(sink.url, audience_5k, audience__where=where))
    start_run(job, ledger)

    import duckdb

    expected = {
        row[0]
        for row in duckdb.sql(
            f"SELECT id FROM read_parquet('{audience_5k}') WHERE {where}"
        ).fetchall()
    }
    assert 0 < len(expected) < 5000
    assert sink.recorder.delivered_ids == expected
    assert sink.recorder.duplicate_ids == 0


def test_static_ids_segment_sends_those_contacts(
    sink: Sink, write_job, ledger: Ledger, audience_5k: Path, tmp_path: Path
) -> None:
    ids = pq.read_table(audience_5k, columns=["id"]).column("id").to_pylist()[::7]
    ids_file = write_ids(tmp_path / "vip.parquet", [*ids, 1, 2])  # 1, 2: not in the source
    job = load_job(write_job(sink.url, audience_5k, audience__ids=str(ids_file)))
    summary = start_run(job, ledger)
    assert sink.recorder.delivered_ids == set(ids)
    assert summary.contacts == len(ids)


def test_elements_follow_the_payload_rules(write_job, ledger: Ledger, audience_5k: Path) -> None:
    bodies: list[bytes] = []

    def keep(request):
        bodies.append(request.body)
        return OK

    with Sink(behaviour=keep) as receiver:
        job = load_job(write_job(receiver.url, audience_5k, payload__identities=["wechat.openId"]))
        start_run(job, ledger)

    import orjson

    elements = [e for body in bodies for e in orjson.loads(body)]
    assert len(elements) == 5000
    for element in elements:
        assert set(element) == {"sendTime", "contact", "_custom"}
        assert element["_custom"] == {"a1": "1", "a2": "2"}
        contact = element["contact"]
        assert None not in contact.values()
        assert isinstance(contact["props"], dict)
        assert all(i["type"] == "wechat.openId" for i in contact.get("identities", []))
        assert isinstance(element["sendTime"], int)
    assert any("vipLevel" in e["contact"]["props"] for e in elements)


def test_retries_503_then_delivers(write_job, ledger: Ledger, audience_5k: Path) -> None:
    seen: Counter[str] = Counter()

    def flaky(request):
        seen[request.key] += 1
        return Reply(status=503) if seen[request.key] == 1 else OK

    with Sink(behaviour=flaky) as receiver:
        # Every first attempt failing looks like an outage to the breaker (its own tests are
        # in test_pushback.py): here only the retries are looked at.
        job = write_job(receiver.url, audience_5k, circuit_breaker__enabled=False)
        summary = start_run(load_job(job), ledger)
        assert receiver.recorder.delivered_ids and len(receiver.recorder.delivered_ids) == 5000
        bodies_by_key: dict[str, set] = {}
        for arrival in receiver.recorder.arrivals:
            bodies_by_key.setdefault(arrival.key, set()).add(arrival.ids)
    assert summary.status == "succeeded"
    assert summary.retries == 10
    assert all(count == 2 for count in seen.values())
    # A retry carries the same key and the same contacts.
    assert all(len(ids) == 1 for ids in bodies_by_key.values())


def test_interrupted_run_resumes_only_unacknowledged_batches(
    write_job, ledger: Ledger, audience_58233: Path
) -> None:
    stop = threading.Event()

    def stop_early(progress) -> None:
        if progress.delivered_batches >= 40:
            stop.set()

    with Sink() as receiver:
        job = load_job(write_job(receiver.url, audience_58233))
        first = start_run(job, ledger, on_progress=stop_early, stop=stop)
        assert first.status == RunStatus.INTERRUPTED
        delivered_first = {a.key for a in receiver.recorder.arrivals}
        assert 40 <= len(delivered_first) < 117
        assert ledger.get_run(first.run_id).status == RunStatus.INTERRUPTED

        second = resume_run(ledger, first.run_id)
        arrivals = receiver.recorder.arrivals
    assert second.status == RunStatus.SUCCEEDED
    keys = Counter(a.key for a in arrivals)
    assert len(keys) == 117
    assert all(count == 1 for count in keys.values()), "a delivered batch was sent again"
    assert len(receiver.recorder.delivered_ids) == 58_233


def test_dead_letters_are_replayed_and_nothing_else(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    poisoned = pq.read_table(audience_5k, columns=["id"]).column("id").to_pylist()[1234]
    fixed = threading.Event()

    def reject_poisoned(request):
        if poisoned in request.ids and not fixed.is_set():
            return Reply(status=400, body=b'{"error": "bad contact"}')
        return OK

    with Sink(behaviour=reject_poisoned) as receiver:
        job = load_job(write_job(receiver.url, audience_5k))
        first = start_run(job, ledger)
        assert first.status == RunStatus.FAILED
        assert first.failed_batches == 1
        [dead] = ledger.batches(first.run_id, [BatchStatus.DEAD_LETTERED])
        assert dead.http_status == 400 and "bad contact" in (dead.reason or "")
        before = len(receiver.recorder.arrivals)

        fixed.set()
        second = replay_run(ledger, first.run_id)
        replayed = receiver.recorder.arrivals[before:]
    assert second.status == RunStatus.SUCCEEDED
    assert [a.key for a in replayed] == [dead.idem_key]
    assert poisoned in replayed[0].ids
    assert len(receiver.recorder.delivered_ids) == 5000
    # The ledger counts the batch's attempts across the run's sessions: 1 before, 1 now.
    [again] = [b for b in ledger.batches(first.run_id) if b.seq == dead.seq]
    assert again.status == BatchStatus.DELIVERED and again.attempts == dead.attempts + 1 == 2


def test_replay_to_another_url_sends_only_the_dead_letters_there(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    def reject_first_batch(request):
        return Reply(status=422) if request.n == 1 else OK

    with Sink(behaviour=reject_first_batch) as production:
        first = start_run(load_job(write_job(production.url, audience_5k)), ledger)
        [dead] = ledger.batches(first.run_id, [BatchStatus.DEAD_LETTERED])
    with Sink() as staging:
        second = replay_run(ledger, first.run_id, url=staging.url)
        keys = [a.key for a in staging.recorder.arrivals]
    assert second.status == RunStatus.SUCCEEDED
    assert keys == [dead.idem_key]
    assert production.recorder.requests == 10
