"""Bodies that fit: the cut to max_body_bytes and the 413 halving, with the real sender and
coordinator, a real ledger, and an endpoint (httpx's MockTransport) that refuses bodies over
a limit. Checked: every contact arrives exactly once, only a contact too large alone is
dead-lettered, the parts and their keys are in the ledger, and resume sends the same parts.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import httpx
import numpy as np
import pyarrow as pa
import pytest

from hookcast.actors.delivery import Outcome
from hookcast.actors.parts import body_bytes, cut_to_fit, halves, part_key
from hookcast.actors.render import ELEMENT_COLUMN, SEND_TIME_PLACEHOLDER, assemble_body
from hookcast.actors.sender import BatchOrder, Sender, SenderConfig
from hookcast.cluster.coordinator import Coordinator, DeliverySettings, Progress
from hookcast.cluster.ledger import (
    RESUMABLE,
    BatchRecord,
    BatchStatus,
    Ledger,
    RunRecord,
    RunStatus,
)
from hookcast.cluster.pool import Answered

BATCH = 50


def element(contact_id: int, filler: int) -> str:
    return json.dumps(
        {"contact": {"id": contact_id, "note": "x" * filler}, "sendTime": SEND_TIME_PLACEHOLDER}
    )


def audience(batches: int, big: set[int] = frozenset(), filler: int = 80) -> pa.Table:
    """``batches`` batches of ``BATCH`` contacts; the ids in ``big`` carry 6 KB each."""
    ids = np.arange(1, batches * BATCH + 1)
    return pa.table(
        {
            "seq": pa.array((ids - 1) // BATCH, pa.int64()),
            "id": pa.array(ids, pa.int64()),
            ELEMENT_COLUMN: [element(int(i), 6000 if i in big else filler) for i in ids],
        }
    )


class Endpoint:
    """Answers 413 to a body over ``limit`` bytes, else 200, and counts every id it took."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ids: Counter[int] = Counter()
        self.statuses: Counter[int] = Counter()
        self.keys: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        status = 413 if len(request.content) > self.limit else 200
        self.statuses[status] += 1
        if status == 200:
            self.keys.append(request.headers["Idempotency-Key"])
            self.ids.update(e["contact"]["id"] for e in json.loads(request.content))
        body = b"too large" if status == 413 else b"ok"
        return httpx.Response(status, stream=httpx.ByteStream(body))


class SenderInLoop:
    """A pool of one real ``Sender``, run inline: each call answers before it returns."""

    size = 1

    def __init__(self, chunks: pa.Table, endpoint: Endpoint) -> None:
        self.table = chunks
        self.sender = Sender(
            SenderConfig(url="http://hooks.test/in"), transport=httpx.MockTransport(endpoint)
        )
        self.loop = asyncio.new_event_loop()
        self.results: dict[int, Answered] = {}

    def chunks(self, seqs, per_chunk, window):
        wanted = [list(seqs)[i : i + per_chunk] for i in range(0, len(seqs), per_chunk)]
        tables = iter(
            self.table.filter(pa.compute.is_in(self.table["seq"], pa.array(w))) for w in wanted
        )
        return _Chunks(tables, len(wanted))

    def submit(self, sender, chunk, orders):
        call = len(self.results)
        self.results[call] = Answered(
            self.loop.run_until_complete(self.sender.deliver(chunk, orders))
        )
        return call

    def collect(self, calls, timeout_s):
        return [(call, self.results.pop(call)) for call in calls]

    def close(self) -> None:
        self.loop.run_until_complete(self.sender.close())
        self.loop.close()


class _Chunks:
    def __init__(self, tables, total: int) -> None:
        self._tables, self._left = tables, total

    def next_ready(self) -> bool:
        return self._left > 0

    def is_finished(self) -> bool:
        return self._left == 0

    def __next__(self):
        self._left -= 1
        return next(self._tables)


def plan(ledger: Ledger, run_id: str, batches: int) -> dict[int, str]:
    plans = [
        BatchRecord(s, None, None, BATCH, f"{run_id}-{s:06d}", BatchStatus.PLANNED)
        for s in range(batches)
    ]
    ledger.create_run(
        RunRecord(run_id, "test", RunStatus.RUNNING, batches * BATCH, batches, BATCH), plans
    )
    return {p.seq: p.idem_key for p in plans}


def deliver(
    ledger: Ledger,
    pool: SenderInLoop,
    run_id: str,
    rows: list[BatchRecord] | None = None,
    *,
    stop: threading.Event | None = None,
    on_progress=None,
    **settings,
) -> Coordinator:
    rows = rows if rows is not None else ledger.batches(run_id)
    settings.setdefault("canary_batches", 0)
    settings.setdefault("max_in_flight", 1)
    coordinator = Coordinator(
        run_id=run_id,
        ledger=ledger,
        pool=pool,
        seqs=[b.seq for b in rows],
        keys={b.seq: b.idem_key for b in rows},
        sizes={b.seq: b.contacts for b in rows},
        parts={b.seq: b.part for b in rows if b.part is not None},
        settings=DeliverySettings(batch_size=BATCH, breaker=None, poll_s=0.001, **settings),
        progress=Progress(contacts=0, batches=len(rows)),
        stop=stop,
        on_progress=on_progress,
    )
    coordinator.status = coordinator.run()
    return coordinator


# -- the cut itself -----------------------------------------------------------------------


@pytest.mark.parametrize("limit", [300, 1000, 4999, 10**6])
def test_cut_to_fit_covers_every_element_in_order_each_part_within_the_limit(limit) -> None:
    sizes = [int(s) for s in np.random.default_rng(3).integers(20, 400, 500)]
    ranges = cut_to_fit(sizes, limit)

    assert [lo for lo, _ in ranges] == [0] + [hi for _, hi in ranges[:-1]]
    assert ranges[-1][1] == len(sizes)
    for lo, hi in ranges:
        assert body_bytes(sizes[lo:hi]) <= limit or hi - lo == 1
        if hi < len(sizes):  # greedy: one more element would not have fitted
            assert body_bytes(sizes[lo : hi + 1]) > limit


def test_body_bytes_is_the_assembled_bodys_length() -> None:
    elements = [element(i, i * 7) for i in range(1, 40)]
    body = assemble_body(elements, 1_733_000_000_000)
    assert body_bytes([len(e.encode()) for e in elements]) == len(body)


def test_halves_and_part_keys() -> None:
    assert halves(0, 500) == [(0, 250), (250, 500)]
    assert halves(250, 375) == [(250, 313), (313, 375)]
    assert halves(7, 8) == [(7, 8)]
    assert part_key("job-20261203T101010-ab12-000007", 250, 313) == (
        "job-20261203T101010-ab12-000007.250-313"
    )


# -- the sender ---------------------------------------------------------------------------


def test_the_sender_sends_nothing_over_max_body_bytes_and_says_where_to_cut() -> None:
    endpoint = Endpoint(limit=10**9)
    pool = SenderInLoop(audience(1), endpoint)
    try:
        chunk = pool.table
        [split] = pool.loop.run_until_complete(
            pool.sender.deliver(chunk, [BatchOrder(0, "k", 1, 1, max_body_bytes=2000)])
        )
        [one] = pool.loop.run_until_complete(
            pool.sender.deliver(chunk, [BatchOrder(0, "k", 1, 1, part=(3, 4), max_body_bytes=100)])
        )
    finally:
        pool.close()
    assert endpoint.statuses == Counter()  # nothing was sent
    assert split.outcome is Outcome.SPLIT and split.body_bytes > 2000
    assert split.parts[0].lo == 0 and split.parts[-1].hi == BATCH
    assert (split.parts[0].first_id, split.parts[-1].last_id) == (1, BATCH)
    assert (one.outcome, one.contacts) == (Outcome.OVERSIZE, 1)
    assert "contact 4's body alone is" in one.error and "max_body_bytes 100" in one.error


def test_a_413_comes_back_with_the_two_halves_of_the_part_it_answered() -> None:
    pool = SenderInLoop(audience(1), Endpoint(limit=100))
    try:
        [result] = pool.loop.run_until_complete(
            pool.sender.deliver(pool.table, [BatchOrder(0, "k", 1, 1, part=(10, 30))])
        )
    finally:
        pool.close()
    assert result.status == 413 and result.outcome is Outcome.DEAD
    assert [(p.lo, p.hi, p.first_id, p.last_id) for p in result.parts] == [
        (10, 20, 11, 20),
        (20, 30, 21, 30),
    ]


# -- whole runs ---------------------------------------------------------------------------


def test_behind_a_body_limit_every_contact_arrives_once_and_only_the_too_large_one_is_dead(
    ledger,
) -> None:
    big = {77, 333}  # alone over the endpoint's limit
    endpoint = Endpoint(limit=2500)
    keys = plan(ledger, "run-a", 10)
    pool = SenderInLoop(audience(10, big), endpoint)
    try:
        run = deliver(ledger, pool, "run-a")
    finally:
        pool.close()

    assert run.status is RunStatus.FAILED  # two dead letters
    assert set(endpoint.ids) == set(range(1, 501)) - big
    assert max(endpoint.ids.values()) == 1
    dead = ledger.batches("run-a", [BatchStatus.DEAD_LETTERED])
    assert sorted((d.first_id, d.contacts, d.http_status) for d in dead) == [
        (77, 1, 413),
        (333, 1, 413),
    ]
    assert all("for one contact, its body" in d.reason for d in dead)
    rows = ledger.batches("run-a")
    parts = [r for r in rows if r.parent is not None]
    assert {r.seq for r in rows if r.status == BatchStatus.SPLIT} >= set(range(10))
    for p in parts:
        assert p.idem_key == part_key(keys[p.parent], p.part_lo, p.part_hi)
    assert len(endpoint.keys) == len(set(endpoint.keys))  # every request its own key
    # What the first 413s taught cuts the later batches before they go: few 413s in all.
    assert endpoint.statuses[413] <= 14
    assert run.progress.split_batches >= 10


def test_max_body_bytes_cuts_before_sending_so_a_limit_the_job_knows_draws_no_413(ledger) -> None:
    endpoint = Endpoint(limit=3000)
    plan(ledger, "run-b", 6)
    pool = SenderInLoop(audience(6, {101}), endpoint)
    try:
        run = deliver(ledger, pool, "run-b", max_body_bytes=3000)
    finally:
        pool.close()

    assert endpoint.statuses[413] == 0
    assert set(endpoint.ids) == set(range(1, 301)) - {101} and max(endpoint.ids.values()) == 1
    [dead] = ledger.batches("run-b", [BatchStatus.DEAD_LETTERED])
    assert (dead.first_id, dead.http_status, dead.attempts) == (101, None, 0)
    assert "over max_body_bytes 3,000: not sent" in dead.reason
    assert run.progress.requests == len(endpoint.keys)


def test_the_same_audience_is_cut_the_same_way_in_every_run(ledger) -> None:
    cuts = []
    for run_id in ("run-c", "run-d"):
        plan(ledger, run_id, 4)
        pool = SenderInLoop(audience(4), Endpoint(limit=10**9))
        try:
            deliver(ledger, pool, run_id, max_body_bytes=2000)
        finally:
            pool.close()
        cuts.append(
            [
                (r.parent, r.part_lo, r.part_hi)
                for r in ledger.batches(run_id)
                if r.parent is not None
            ]
        )
        ledger.finish_run(run_id, RunStatus.SUCCEEDED, duration_s=1.0, retries=0)
    assert cuts[0] == cuts[1] and len(cuts[0]) > 4


def test_resume_sends_the_unsent_parts_with_their_keys(ledger) -> None:
    endpoint = Endpoint(limit=2500)
    plan(ledger, "run-e", 8)
    stop = threading.Event()

    def stop_after_a_few(progress: Progress) -> None:
        if progress.delivered_batches >= 5:
            stop.set()

    pool = SenderInLoop(audience(8), endpoint)
    try:
        first = deliver(ledger, pool, "run-e", stop=stop, on_progress=stop_after_a_few)
    finally:
        pool.close()
    assert first.status is RunStatus.INTERRUPTED
    ledger.finish_run("run-e", RunStatus.INTERRUPTED, duration_s=1.0, retries=0)
    todo = ledger.batches("run-e", RESUMABLE)
    planned_parts = {r.seq: r.idem_key for r in todo if r.parent is not None}
    assert planned_parts  # parts cut in the first session, not sent yet
    sent_before = len(endpoint.keys)

    pool = SenderInLoop(audience(8), endpoint)
    try:
        ledger.claim_run("run-e")
        second = deliver(ledger, pool, "run-e", todo)
    finally:
        pool.close()

    assert second.status is RunStatus.SUCCEEDED
    assert set(endpoint.ids) == set(range(1, 401)) and max(endpoint.ids.values()) == 1
    by_seq = {r.seq: r for r in ledger.batches("run-e")}
    for seq, key in planned_parts.items():  # sent with its key, or cut again (a new 413)
        assert by_seq[seq].status in (BatchStatus.DELIVERED, BatchStatus.SPLIT)
        assert (key in endpoint.keys[sent_before:]) == (by_seq[seq].status == "delivered")
    assert any(by_seq[seq].status == "delivered" for seq in planned_parts)
