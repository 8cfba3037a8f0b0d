"""The run coordinator's decisions, on a fake clock and a fake sender pool, with a real ledger.

Every row of the delivery table (README "What an answer means"), the 429 pool pause, the
hand-backs (LATE, NO_TOKEN) and the abort (TOKEN_FATAL, a chunk that cannot be prepared),
a lost sender, the ledger before each request, the limits, and the two-level stop.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections import Counter

import pytest

from hookcast.actors.delivery import Outcome, RetryPolicy
from hookcast.actors.errors import RunAbortedError
from hookcast.cluster.coordinator import Coordinator, DeliverySettings, Progress
from hookcast.cluster.ledger import BatchStatus, BatchUpdate, Ledger, RunStatus

from .fakes import CONTACTS_PER_BATCH, OK, Answer, FakeClock, FakePool, Request, plan_run

RUN = "run-1"
EPS = 1e-6


def coordinator(
    ledger: Ledger,
    clock: FakeClock,
    pool: FakePool,
    *,
    batches: int = 20,
    attempts_before: dict[int, int] | None = None,
    stop: threading.Event | None = None,
    stop_now: threading.Event | None = None,
    on_progress=None,
    planned: bool = False,
    sizes: dict[int, int] | None = None,
    contacts_budget: int | None = None,
    endpoint: str | None = None,
    **settings,
) -> Coordinator:
    keys = (
        {b.seq: b.idem_key for b in ledger.batches(RUN)}
        if planned
        else plan_run(ledger, RUN, batches)
    )
    settings.setdefault("retry", RetryPolicy(max_attempts=4, backoff_base_s=0.5, backoff_max_s=4))
    # The guards' own tests are in test_coordinator_guards.py.
    settings.setdefault("canary_batches", 0)
    settings.setdefault("adaptive", False)
    settings.setdefault("breaker", None)
    settings.setdefault("batch_size", CONTACTS_PER_BATCH)
    return Coordinator(
        run_id=RUN,
        ledger=ledger,
        pool=pool,
        seqs=list(keys),
        keys=keys,
        settings=DeliverySettings(**settings),
        progress=Progress(contacts=len(keys) * CONTACTS_PER_BATCH, batches=len(keys)),
        on_progress=on_progress,
        stop=stop,
        stop_now=stop_now,
        clock=clock.clock(),
        attempts_before=attempts_before,
        rng=random.Random(7),
        sizes=sizes,
        contacts_budget=contacts_budget,
        endpoint=endpoint,
    )


def by_seq(ledger: Ledger):
    return {b.seq: b for b in ledger.batches(RUN)}


def first_answer_then_ok(answer: Answer, seqs=None):
    """``answer`` to the first request of each batch (of ``seqs``, default all), then 200."""
    seen: Counter[int] = Counter()

    def reply(request: Request, n: int) -> Answer:
        seen[request.seq] += 1
        if seen[request.seq] == 1 and (seqs is None or request.seq in seqs):
            return answer
        return OK

    return reply


def requests_of(pool: FakePool, seq: int) -> list[Request]:
    return [r for r in pool.requests if r.seq == seq]


# -- 2xx ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 204, 299])
def test_2xx_delivers_every_batch_once_with_its_key(ledger, clock, status) -> None:
    pool = FakePool(clock, size=3, answer=lambda r, n: Answer(status))
    run = coordinator(ledger, clock, pool)

    assert run.run() is RunStatus.SUCCEEDED
    keys = {b.seq: b.idem_key for b in ledger.batches(RUN)}
    assert sorted((r.seq, r.key) for r in pool.requests) == sorted(keys.items())
    assert {(b.status, b.attempts, b.http_status) for b in ledger.batches(RUN)} == {
        (BatchStatus.DELIVERED, 1, status)
    }
    progress = run.progress
    assert (progress.delivered_batches, progress.delivered_contacts) == (20, 20 * 10)
    assert (progress.requests, progress.retries, progress.failed_batches) == (20, 0, 0)


# -- 408, 429, 5xx, no answer: retried -------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_status_is_retried_after_its_retry_after_with_the_same_key_and_bytes(
    ledger, clock, status
) -> None:
    pool = FakePool(clock, answer=first_answer_then_ok(Answer(status, retry_after_s=3.0), {0}))
    run = coordinator(ledger, clock, pool)

    assert run.run() is RunStatus.SUCCEEDED
    first, retry = requests_of(pool, 0)
    learned = first.at + pool.latency_s
    assert learned + 3.0 - EPS <= retry.at <= learned + 3.0 + 0.05
    assert (retry.key, retry.attempt, retry.sent_at_ms) == (first.key, 2, first.sent_at_ms)
    assert first.sent_at_ms == int((first.submitted_at + 1_700_000_000.0 - 1_000.0) * 1000)
    batch = by_seq(ledger)[0]
    assert (batch.status, batch.attempts, batch.http_status) == (BatchStatus.DELIVERED, 2, 200)
    assert (run.progress.requests, run.progress.retries) == (21, 1)


@pytest.mark.parametrize("status", [None, 503], ids=["connection-error", "503"])
def test_without_retry_after_the_wait_is_jittered_exponential_backoff(
    ledger, clock, status
) -> None:
    seen: Counter[int] = Counter()

    def fail_twice(request: Request, n: int) -> Answer:
        seen[request.seq] += 1
        return Answer(status, error="ConnectError") if seen[request.seq] <= 2 else OK

    pool = FakePool(clock, answer=fail_twice)
    assert coordinator(ledger, clock, pool, batches=4).run() is RunStatus.SUCCEEDED
    for seq in range(4):
        one, two, three = requests_of(pool, seq)
        # backoff_base_s 0.5: attempt 1 waits within [0.25, 0.5], attempt 2 within [0.5, 1].
        assert 0.25 - EPS <= two.at - (one.at + pool.latency_s) <= 0.5 + 0.05
        assert 0.5 - EPS <= three.at - (two.at + pool.latency_s) <= 1.0 + 0.05
        assert by_seq(ledger)[seq].attempts == 3


def test_a_signed_retry_goes_in_a_later_second_so_its_timestamp_differs(ledger, clock) -> None:
    # The fake wall clock starts at a whole second; 0.05 s of backoff would stay in it.
    pool = FakePool(clock, answer=first_answer_then_ok(Answer(503, retry_after_s=0.05)))
    retry = RetryPolicy(max_attempts=3, backoff_base_s=0.05, backoff_max_s=0.05)
    run = coordinator(ledger, clock, pool, batches=6, retry=retry, signed=True)

    assert run.run() is RunStatus.SUCCEEDED
    offset = clock.wall() - clock.monotonic()
    for seq in range(6):
        first, second = requests_of(pool, seq)
        assert int(second.at + offset) > int(first.at + pool.latency_s + offset)


def test_retry_after_is_clamped_to_retry_after_max_s(ledger, clock) -> None:
    pool = FakePool(clock, answer=first_answer_then_ok(Answer(503, retry_after_s=86400), {0}))
    retry = RetryPolicy(max_attempts=3, retry_after_max_s=2.0)
    assert coordinator(ledger, clock, pool, retry=retry).run() is RunStatus.SUCCEEDED
    first, again = requests_of(pool, 0)
    assert 2.0 - EPS <= again.at - (first.at + pool.latency_s) <= 2.05


def test_retries_exhausted_dead_letter_the_batch_with_the_reason(ledger, clock) -> None:
    pool = FakePool(clock, answer=lambda r, n: Answer(503, excerpt='{"busy":true}'))
    run = coordinator(ledger, clock, pool, batches=3, retry=RetryPolicy(max_attempts=3))

    assert run.run() is RunStatus.FAILED
    assert Counter(r.seq for r in pool.requests) == {0: 3, 1: 3, 2: 3}
    for batch in ledger.batches(RUN):
        assert (batch.status, batch.attempts, batch.http_status) == (
            BatchStatus.DEAD_LETTERED,
            3,
            503,
        )
        assert batch.reason == 'HTTP 503 (gave up after 3 attempts): {"busy":true}'
    assert (run.progress.failed_batches, run.progress.retries, run.progress.requests) == (3, 6, 9)


# -- 3xx, 410, other 4xx / 5xx ----------------------------------------------------------------


def test_3xx_is_retried_as_a_failure_then_dead_lettered(ledger, clock) -> None:
    pool = FakePool(clock, answer=lambda r, n: Answer(308))
    run = coordinator(ledger, clock, pool, batches=2, retry=RetryPolicy(max_attempts=3))

    assert run.run() is RunStatus.FAILED
    assert Counter(r.seq for r in pool.requests) == {0: 3, 1: 3}
    assert {(b.status, b.http_status) for b in ledger.batches(RUN)} == {
        (BatchStatus.DEAD_LETTERED, 308)
    }
    assert all("HTTP 308" in (b.reason or "") for b in ledger.batches(RUN))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 501, 505, 999])
def test_other_4xx_and_5xx_are_dead_lettered_at_once(ledger, clock, status) -> None:
    pool = FakePool(clock, answer=lambda r, n: Answer(status, excerpt="no such hook"))
    run = coordinator(ledger, clock, pool, batches=5)

    assert run.run() is RunStatus.FAILED
    assert Counter(r.seq for r in pool.requests) == dict.fromkeys(range(5), 1)
    for batch in ledger.batches(RUN):
        assert (batch.status, batch.attempts, batch.http_status) == (
            BatchStatus.DEAD_LETTERED,
            1,
            status,
        )
        assert batch.reason == f"HTTP {status}: no such hook"
    assert (run.progress.failed_batches, run.progress.retries) == (5, 0)


def test_410_stops_sending_and_skips_the_rest(ledger, clock) -> None:
    pool = FakePool(clock, answer=lambda r, n: Answer(410) if n == 3 else OK)
    run = coordinator(ledger, clock, pool, batches=40, max_in_flight=4, chunk_batches=2)

    assert run.run() is RunStatus.FAILED
    gone_request = next(r for r in pool.requests if r.status == 410)
    learned = gone_request.at + pool.latency_s
    assert all(at <= learned for at, _, _ in pool.submits), "sending went on after the 410"
    assert "410" in (run.gone or "")
    batches = ledger.batches(RUN)
    statuses = Counter(b.status for b in batches)
    assert statuses[BatchStatus.DEAD_LETTERED] == 1
    assert by_seq(ledger)[gone_request.seq].http_status == 410
    assert statuses[BatchStatus.SKIPPED] == 40 - statuses[BatchStatus.DELIVERED] - 1 > 0
    sent = {r.seq for r in pool.requests}
    assert not [b.seq for b in batches if b.status == BatchStatus.SKIPPED and b.seq in sent]
    assert all(b.reason == run.gone for b in batches if b.status == BatchStatus.SKIPPED)
    assert run.progress.skipped_batches == statuses[BatchStatus.SKIPPED]


# -- the 429 pool pause -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [None, 20.0], ids=["no-rate", "20-per-s"])
def test_a_429_pauses_every_sender_until_its_retry_after(ledger, clock, rate) -> None:
    pool = FakePool(
        clock, size=4, answer=lambda r, n: Answer(429, retry_after_s=2.0) if n == 9 else OK
    )
    run = coordinator(ledger, clock, pool, batches=60, requests_per_second=rate)

    assert run.run() is RunStatus.SUCCEEDED
    limited = next(r for r in pool.requests if r.status == 429)
    learned = limited.at + pool.latency_s
    after = [r for r in pool.requests if r.submitted_at >= learned]
    assert after, "nothing was sent after the 429"
    early = [(r.seq, round(r.at - learned, 3)) for r in after if r.at < learned + 2.0 - EPS]
    assert not early, f"requests sent before the pause ended: {early}"
    assert {r.sender for r in after} == {0, 1, 2, 3}
    retry = requests_of(pool, limited.seq)[1]
    assert retry.at >= learned + 2.0 - EPS


# -- hand-backs: LATE, NO_TOKEN -----------------------------------------------------------------


def test_late_requests_are_handed_back_and_cost_no_attempt(ledger, clock) -> None:
    # The first 5 calls take 0.3 s to reach their sender, past a 0.1 s slot lead.
    pool = FakePool(clock, size=2, transit=lambda n: 0.3 if n <= 5 else 0.002)
    run = coordinator(ledger, clock, pool, batches=20, requests_per_second=10)

    assert run.run() is RunStatus.SUCCEEDED
    late = [seq for seq, outcome in pool.handed_back if outcome is Outcome.LATE]
    assert late
    assert Counter(r.seq for r in pool.requests) == dict.fromkeys(range(20), 1)
    assert {(b.status, b.attempts) for b in ledger.batches(RUN)} == {(BatchStatus.DELIVERED, 1)}
    assert (run.progress.requests, run.progress.retries) == (20, 0)


def test_a_due_retry_held_back_by_the_limits_waits_instead_of_spinning(ledger, clock) -> None:
    # A LATE hand-back is due again at once, while the rate limit holds it back.
    pool = FakePool(clock, size=2, transit=lambda n: 0.3 if n <= 5 else 0.002)
    run = coordinator(ledger, clock, pool, batches=20, requests_per_second=10)
    started = clock.t

    assert run.run() is RunStatus.SUCCEEDED
    polls = (clock.t - started) / run.settings.poll_s
    assert pool.collects + len(clock.slept) <= 2 * polls + 4 * len(pool.submits)


def test_no_token_is_asked_again_after_token_wait_s_and_costs_no_attempt(ledger, clock) -> None:
    tries: Counter[int] = Counter()

    def no_token_twice(request: Request, n: int) -> Answer:
        tries[request.seq] += 1
        if request.seq == 0 and tries[0] <= 2:
            return Answer(outcome=Outcome.NO_TOKEN, error="crm: token endpoint refused")
        return OK

    pool = FakePool(clock, answer=no_token_twice)
    run = coordinator(ledger, clock, pool, batches=5, token_wait_s=2.0)
    started = clock.t

    assert run.run() is RunStatus.SUCCEEDED
    [sent] = requests_of(pool, 0)
    assert sent.at >= started + 2 * 2.0
    assert sent.attempt == 1
    assert by_seq(ledger)[0].attempts == 1
    assert (run.progress.requests, run.progress.retries) == (5, 0)


def test_token_fatal_aborts_the_run_with_its_reason(ledger, clock) -> None:
    fatal = Answer(outcome=Outcome.TOKEN_FATAL, error="crm: the token endpoint answered 400")
    pool = FakePool(clock, answer=lambda r, n: fatal if n == 1 else OK)
    run = coordinator(ledger, clock, pool, batches=30, max_in_flight=2, chunk_batches=1)

    with pytest.raises(RunAbortedError, match="crm: the token endpoint answered 400"):
        run.run()
    learned = min(at for at, _, _ in pool.submits) + pool.transit_s
    assert all(at <= learned for at, _, _ in pool.submits), "sending went on after the abort"
    statuses = Counter(b.status for b in ledger.batches(RUN))
    assert statuses[BatchStatus.PLANNED] >= 27  # resumable: never sent


# -- a lost sender, a chunk that cannot be prepared ---------------------------------------------


def test_a_lost_senders_batches_go_again_through_the_next_sender_with_their_keys(
    ledger, clock
) -> None:
    pool = FakePool(clock, size=3, lost={(0, 1)})
    run = coordinator(ledger, clock, pool, batches=24, chunk_batches=4)

    assert run.run() is RunStatus.SUCCEEDED
    first_call = next(orders for _, sender, orders in pool.submits if sender == 0)
    assert len(first_call) == 4
    for order in first_call:
        lost, again = requests_of(pool, order.seq)
        assert (lost.sender, again.sender) == (0, 1)
        assert again.key == lost.key == order.key
        assert (again.attempt, again.sent_at_ms) == (2, lost.sent_at_ms)
    assert {b.status for b in ledger.batches(RUN)} == {BatchStatus.DELIVERED}


def test_senders_lost_again_and_again_stop_the_run_instead_of_looping(ledger, clock) -> None:
    # Every call to every sender is lost: each batch goes again, but not for ever.
    pool = FakePool(clock, size=2, lost={(s, n) for s in range(2) for n in range(1, 100)})
    run = coordinator(ledger, clock, pool, batches=6)

    with pytest.raises(RunAbortedError) as raised:
        run.run()
    assert "the senders were lost 4 times while sending batch" in raised.value.reason
    assert len(pool.submits) < 40
    assert BatchStatus.DELIVERED not in {b.status for b in ledger.batches(RUN)}


@pytest.mark.parametrize(
    ("batches", "senders", "per_chunk"),
    [(2_000, 1, 32), (2_000, 3, 32), (100, 3, 9), (60, 4, 4), (3, 1, 4)],
)
def test_a_chunk_holds_stream_batches_but_each_sender_gets_4_chunks_of_a_small_run(
    ledger, clock, batches, senders, per_chunk
) -> None:
    pool = FakePool(clock, size=senders)
    run = coordinator(ledger, clock, pool, batches=batches, chunk_batches=4, stream_batches=32)

    assert run.run() is RunStatus.SUCCEEDED
    [(_, opened_per_chunk, window)] = pool.opened
    assert (opened_per_chunk, window) == (per_chunk, 2 if per_chunk >= 8 else 4)
    assert len({sender for _, sender, _ in pool.submits}) == senders
    assert all(len(orders) <= 4 for _, _, orders in pool.submits)


def test_a_chunk_that_cannot_be_prepared_aborts_the_run(ledger, clock) -> None:
    pool = FakePool(clock, broken_chunks={1})
    run = coordinator(ledger, clock, pool, batches=20, chunk_batches=4, stream_batches=4)

    with pytest.raises(RunAbortedError) as raised:
        run.run()
    assert raised.value.reason == "batches 4.. could not be sent: DuckDB: the file vanished"
    assert {r.seq for r in pool.requests}.isdisjoint({4, 5, 6, 7})


# -- the ledger ---------------------------------------------------------------------------------


def test_the_ledger_records_sending_before_each_request_leaves(ledger, clock) -> None:
    checked: list[int] = []

    def check(sender: int, orders) -> None:
        batches = by_seq(ledger)
        for order in orders:
            batch = batches[order.seq]
            assert (batch.status, batch.attempts) == (BatchStatus.SENDING, order.attempt)
            checked.append(order.seq)

    pool = FakePool(clock, answer=first_answer_then_ok(Answer(500)), on_submit=check)
    assert coordinator(ledger, clock, pool, batches=10).run() is RunStatus.SUCCEEDED
    assert Counter(checked) == dict.fromkeys(range(10), 2)


def test_resume_counts_attempts_on_from_the_ledger_with_a_fresh_retry_budget(ledger, clock) -> None:
    plan_run(ledger, RUN, 4)
    ledger.update_batches(RUN, [BatchUpdate(seq, BatchStatus.SENDING, 3) for seq in range(4)])
    pool = FakePool(clock, answer=lambda r, n: Answer(503) if r.seq >= 2 else OK)
    run = coordinator(
        ledger,
        clock,
        pool,
        planned=True,
        attempts_before=dict.fromkeys(range(4), 3),
        retry=RetryPolicy(max_attempts=2),
    )

    assert run.run() is RunStatus.FAILED
    batches = by_seq(ledger)
    assert [(batches[s].status, batches[s].attempts) for s in range(4)] == [
        (BatchStatus.DELIVERED, 4),
        (BatchStatus.DELIVERED, 4),
        (BatchStatus.DEAD_LETTERED, 5),
        (BatchStatus.DEAD_LETTERED, 5),
    ]
    assert [r.attempt for r in requests_of(pool, 2)] == [1, 2]
    assert "gave up after 2 attempts" in (batches[2].reason or "")


# -- limits -------------------------------------------------------------------------------------


def busiest(times: list[float], window_s: float) -> int:
    """The most of ``times`` (sorted) in any half-open window of ``window_s``."""
    return max(bisect.bisect_left(times, t + window_s) - i for i, t in enumerate(times))


def test_the_rate_limit_holds_at_the_endpoint_over_10000_requests(ledger, clock) -> None:
    rate = 50.0

    def answer(request: Request, n: int) -> Answer:
        if n == 4000:
            return Answer(429, retry_after_s=1.5)
        return Answer(503) if n % 25 == 0 else OK

    pool = FakePool(clock, size=4, answer=answer, latency_s=0.03)
    run = coordinator(ledger, clock, pool, batches=9700, requests_per_second=rate)
    started = clock.t

    assert run.run() is RunStatus.SUCCEEDED
    times = pool.released_at()
    assert len(times) >= 10_000
    for window_s in (0.02, 0.1, 0.25, 1.0, 3.0, 10.0):
        most = busiest(times, window_s)
        assert most <= rate * window_s + 1, f"{most} requests within {window_s} s"
    assert busiest(times, 10.0) >= rate * 10.0 * 0.95  # and the limit is used, not undershot
    assert clock.t - started <= len(times) / rate + 1.5 + 5


@pytest.mark.parametrize(
    ("rate", "max_in_flight"), [(None, 5), (100.0, 3)], ids=["no-rate", "100-per-s"]
)
def test_max_in_flight_is_never_exceeded_and_is_used(ledger, clock, rate, max_in_flight) -> None:
    pool = FakePool(clock, size=3, latency_s=0.5)
    run = coordinator(
        ledger, clock, pool, batches=40, requests_per_second=rate, max_in_flight=max_in_flight
    )

    assert run.run() is RunStatus.SUCCEEDED
    assert pool.most_in_flight == max_in_flight


def test_without_a_rate_a_call_carries_chunk_batches_and_with_one_a_single_request(
    ledger, clock
) -> None:
    pool = FakePool(clock)
    run = coordinator(ledger, clock, pool, batches=20, chunk_batches=4, stream_batches=4)
    assert run.run() is RunStatus.SUCCEEDED
    assert [len(orders) for _, _, orders in pool.submits] == [4] * 5
    assert all(o.send_at is None for _, _, orders in pool.submits for o in orders)
    assert pool.opened == [(list(range(20)), 4, 4)]  # 16 batches prefetched, 4 a chunk

    plan_ledger = Ledger(ledger.state_dir.parent / "other")
    try:
        timed = FakePool(clock)
        run = coordinator(
            plan_ledger, clock, timed, batches=20, requests_per_second=10, stream_batches=4
        )
        assert run.run() is RunStatus.SUCCEEDED
    finally:
        plan_ledger.close()
    assert [len(orders) for _, _, orders in timed.submits] == [1] * 20
    # A chunk still holds several batches: 20 make 4 chunks for each of the 2 senders.
    assert timed.opened == [(list(range(20)), 3, 6)]
    for at, _, [order] in timed.submits:
        slot = order.send_at - (1_700_000_000.0 - 1_000.0)
        assert slot - 0.1 - EPS <= at <= slot  # handed over at most the slot lead early


# -- stopping -----------------------------------------------------------------------------------


def test_stop_sends_nothing_new_and_waits_for_the_answers_in_flight(ledger, clock) -> None:
    stop = threading.Event()

    def stop_after_5(progress: Progress) -> None:
        if progress.delivered_batches >= 5:
            stop.set()

    def not_after_stop(sender: int, orders) -> None:
        assert not stop.is_set(), "a request was sent after stop"

    pool = FakePool(clock, latency_s=0.5, on_submit=not_after_stop)
    run = coordinator(
        ledger, clock, pool, batches=40, stop=stop, on_progress=stop_after_5, max_in_flight=4
    )

    assert run.run() is RunStatus.INTERRUPTED
    statuses = Counter(b.status for b in ledger.batches(RUN))
    assert statuses[BatchStatus.SENDING] == 0, "requests in flight were not let finish"
    assert statuses[BatchStatus.DELIVERED] == len(pool.requests) >= 5
    assert statuses[BatchStatus.PLANNED] == 40 - len(pool.requests) > 0


def test_after_stop_a_batch_waiting_to_retry_is_planned_with_the_attempts_it_used(
    ledger, clock
) -> None:
    stop = threading.Event()

    def answer(request: Request, n: int) -> Answer:
        if request.seq in (0, 1):
            return Answer(status=503)
        if request.seq == 2:
            return Answer(outcome=Outcome.NO_TOKEN, error="crm: token endpoint refused")
        if n >= 6:
            stop.set()
        return OK

    pool = FakePool(clock, answer=answer)
    run = coordinator(
        ledger,
        clock,
        pool,
        batches=40,
        stop=stop,
        max_in_flight=1,
        token_wait_s=60.0,
        retry=RetryPolicy(max_attempts=4, backoff_base_s=30, backoff_max_s=60),
    )

    assert run.run() is RunStatus.INTERRUPTED
    by_seq = {b.seq: b for b in ledger.batches(RUN)}
    assert not [b for b in by_seq.values() if b.status == BatchStatus.SENDING]
    assert (by_seq[0].status, by_seq[0].attempts) == (BatchStatus.PLANNED, 1)
    assert (by_seq[1].status, by_seq[1].attempts) == (BatchStatus.PLANNED, 1)
    assert (by_seq[2].status, by_seq[2].attempts) == (BatchStatus.PLANNED, 0)
    assert by_seq[3].status == BatchStatus.DELIVERED


def test_stop_now_returns_at_once_leaving_the_batches_in_flight_sending(ledger, clock) -> None:
    stop_now = threading.Event()
    started = clock.t

    def stop_now_after_1s(progress: Progress) -> None:
        if clock.t >= started + 1.0:
            stop_now.set()

    pool = FakePool(clock, latency_s=10.0)
    run = coordinator(
        ledger,
        clock,
        pool,
        batches=40,
        stop_now=stop_now,
        on_progress=stop_now_after_1s,
        max_in_flight=4,
    )

    assert run.run() is RunStatus.INTERRUPTED
    assert clock.t < started + 2.0, "it waited for the answers in flight"
    statuses = Counter(b.status for b in ledger.batches(RUN))
    assert statuses[BatchStatus.SENDING] == 4
    assert statuses[BatchStatus.PLANNED] == 36
