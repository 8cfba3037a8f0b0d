"""A fake clock and a fake sender pool: the coordinator's world without Ray.

The fake pool plays every sender and the endpoint behind them on one simulated timeline: a
call reaches its sender ``transit_s`` after it is submitted; a rate-limited request is
released at ``max(arrival, send_at)`` as the real sender does (handed back LATE when it
arrives more than ``LATE_S`` after its slot); the endpoint answers each request ``latency_s``
after its release with whatever ``answer`` says; a call finishes with its last answer.
``collect`` moves the clock to the first finished call, or by its timeout.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hookcast.actors.delivery import AttemptResult, Outcome, classify
from hookcast.actors.sender import LATE_S, BatchOrder
from hookcast.cluster.coordinator import Clock
from hookcast.cluster.ledger import BatchRecord, BatchStatus, Ledger, RunRecord, RunStatus
from hookcast.cluster.pool import Answered, CallOutcome, ChunkFailed, SenderLost

EPOCH_OFFSET = 1_700_000_000.0 - 1_000.0  # wall time = monotonic time + this
MIN_WAIT_S = 1e-6  # any real wait takes some time (a float sum may not move otherwise)


class FakeClock:
    """Monotonic and wall time that only move when something sleeps or waits."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t + EPOCH_OFFSET

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += max(MIN_WAIT_S, seconds)

    def advance_to(self, t: float) -> None:
        self.t = max(self.t, t)

    def clock(self) -> Clock:
        return Clock(monotonic=self.monotonic, wall=self.wall, sleep=self.sleep)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the endpoint (or the sender) makes of one request."""

    status: int | None = 200  # None: no answer (connection error, timeout)
    retry_after_s: float | None = None
    outcome: Outcome | None = None  # NO_TOKEN, TOKEN_FATAL, EMPTY: handed back unsent
    error: str | None = None
    excerpt: str | None = None


OK = Answer()


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the simulated endpoint saw it."""

    at: float  # monotonic time of its release
    sender: int
    seq: int
    key: str
    attempt: int
    sent_at_ms: int
    submitted_at: float
    status: int | None


@dataclass(slots=True)
class _Call:
    sender: int
    chunk: int
    orders: list[BatchOrder]
    submitted_at: float
    done_at: float = 0.0
    outcome: CallOutcome | None = None


class FakeChunks:
    """The segment's chunks: ``chunk_ready_s`` apart, at most ``window`` ahead."""

    def __init__(self, clock: FakeClock, total: int, window: int, chunk_ready_s: float) -> None:
        self._clock = clock
        self._total = total
        self._taken = 0
        self._ready_s = chunk_ready_s
        self._opened = clock.t

    def next_ready(self) -> bool:
        ready_at = self._opened + (self._taken + 1) * self._ready_s
        return self._taken < self._total and self._clock.t >= ready_at

    def is_finished(self) -> bool:
        return self._taken >= self._total

    def __next__(self) -> int:
        self._taken += 1
        return self._taken - 1  # the chunk's number


@dataclass
class FakePool:
    """Senders ``0 .. size - 1`` and the endpoint behind them, on ``clock``.

    ``answer(request_so_far, n)`` decides each request (``n`` counts requests from 1);
    ``lost`` lists (sender, nth call to it) pairs that fail as SenderLost after reaching the
    endpoint; ``broken_chunks`` are chunk numbers the segment fails to prepare; ``on_submit``
    sees every call as it is handed over."""

    clock: FakeClock
    size: int = 2
    answer: Callable[[Request, int], Answer] = lambda request, n: OK
    transit_s: float = 0.002
    transit: Callable[[int], float] | None = None  # by call number from 1: overrides transit_s
    latency_s: float = 0.01
    chunk_ready_s: float = 0.0
    lost: set[tuple[int, int]] = field(default_factory=set)
    broken_chunks: set[int] = field(default_factory=set)
    on_submit: Callable[[int, Sequence[BatchOrder]], None] | None = None
    requests: list[Request] = field(default_factory=list)  # at the endpoint, in release order
    handed_back: list[tuple[int, Outcome]] = field(default_factory=list)  # (seq, outcome)
    submits: list[tuple[float, int, list[BatchOrder]]] = field(default_factory=list)
    opened: list[tuple[list[int], int, int]] = field(default_factory=list)
    most_in_flight: int = 0  # batches handed over and not yet collected, at most
    collects: int = 0  # calls to collect(): how often the coordinator waited
    _in_flight: int = 0
    _calls: dict[int, _Call] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count)
    _per_sender: dict[int, int] = field(default_factory=dict)

    def chunks(self, seqs: Sequence[int], per_chunk: int, window: int) -> FakeChunks:
        self.opened.append((list(seqs), per_chunk, window))
        total = -(-len(seqs) // per_chunk)
        return FakeChunks(self.clock, total, window, self.chunk_ready_s)

    def submit(self, sender: int, chunk: int, orders: Sequence[BatchOrder]) -> int:
        if self.on_submit:
            self.on_submit(sender, orders)
        now = self.clock.t
        self.submits.append((now, sender, list(orders)))
        self._per_sender[sender] = self._per_sender.get(sender, 0) + 1
        call = _Call(sender, chunk, list(orders), now)
        arrival = now + (self.transit(len(self.submits)) if self.transit else self.transit_s)
        if chunk in self.broken_chunks:
            call.done_at, call.outcome = arrival, ChunkFailed("DuckDB: the file vanished")
            self._in_flight += len(orders)
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        else:
            results = []
            for order in orders:  # one by one, as an endpoint sees them arrive
                self._in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self._in_flight)
                results.append(self._request(call, order, arrival))
            call.done_at = max(done for done, _ in results)
            call.outcome = Answered([result for _, result in results])
            if (sender, self._per_sender[sender]) in self.lost:
                call.outcome = SenderLost("ActorDiedError")
        call_id = next(self._ids)
        self._calls[call_id] = call
        return call_id

    def _request(
        self, call: _Call, order: BatchOrder, arrival: float
    ) -> tuple[float, AttemptResult]:
        release = arrival
        if order.send_at is not None:
            slot = order.send_at - EPOCH_OFFSET
            if arrival > slot + LATE_S:
                self.handed_back.append((order.seq, Outcome.LATE))
                return arrival, _result(order, Outcome.LATE, None)
            release = max(arrival, slot)
        request = Request(
            release,
            call.sender,
            order.seq,
            order.key,
            order.attempt,
            order.sent_at_ms,
            call.submitted_at,
            None,
        )
        answer = self.answer(request, len(self.requests) + 1)
        if answer.outcome is not None:
            self.handed_back.append((order.seq, answer.outcome))
            return release, _result(order, answer.outcome, None, error=answer.error)
        self.requests.append(_with_status(request, answer.status))
        result = _result(
            order,
            classify(answer.status),
            answer.status,
            latency_s=self.latency_s,
            retry_after_s=answer.retry_after_s,
            error=answer.error
            or (None if answer.status and answer.status < 300 else f"HTTP {answer.status}"),
            excerpt=answer.excerpt,
        )
        return release + self.latency_s, result

    def collect(self, calls: Sequence[int], timeout_s: float) -> list[tuple[int, CallOutcome]]:
        self.collects += 1
        first = min(self._calls[c].done_at for c in calls)
        if first > self.clock.t + timeout_s:
            self.clock.advance_to(self.clock.t + max(MIN_WAIT_S, timeout_s))
            return []
        self.clock.advance_to(first)
        done = [c for c in calls if self._calls[c].done_at <= self.clock.t]
        finished = []
        for call_id in done:
            call = self._calls.pop(call_id)
            self._in_flight -= len(call.orders)
            finished.append((call_id, call.outcome))
        return finished

    def released_at(self) -> list[float]:
        return sorted(r.at for r in self.requests)


def _with_status(request: Request, status: int | None) -> Request:
    return Request(
        request.at,
        request.sender,
        request.seq,
        request.key,
        request.attempt,
        request.sent_at_ms,
        request.submitted_at,
        status,
    )


def _result(
    order: BatchOrder,
    outcome: Outcome,
    status: int | None,
    *,
    latency_s: float = 0.0,
    retry_after_s: float | None = None,
    error: str | None = None,
    excerpt: str | None = None,
) -> AttemptResult:
    return AttemptResult(
        seq=order.seq,
        attempt=order.attempt,
        outcome=outcome,
        status=status,
        latency_s=latency_s,
        contacts=CONTACTS_PER_BATCH,
        request_bytes=1000,
        retry_after_s=retry_after_s,
        error=error,
        response_excerpt=excerpt,
    )


CONTACTS_PER_BATCH = 10


def plan_run(ledger: Ledger, run_id: str, batches: int) -> dict[int, str]:
    """A run of ``batches`` batches of ``CONTACTS_PER_BATCH`` in ``ledger``; returns the keys."""
    plans = [
        BatchRecord(
            seq=seq,
            first_id=seq * CONTACTS_PER_BATCH,
            last_id=seq * CONTACTS_PER_BATCH + CONTACTS_PER_BATCH - 1,
            contacts=CONTACTS_PER_BATCH,
            idem_key=f"{run_id}-{seq:06d}",
            status=BatchStatus.PLANNED,
        )
        for seq in range(batches)
    ]
    run = RunRecord(
        run_id=run_id,
        job="test",
        status=RunStatus.RUNNING,
        contacts=batches * CONTACTS_PER_BATCH,
        batches=batches,
        batch_size=CONTACTS_PER_BATCH,
    )
    ledger.create_run(run, plans)
    return {p.seq: p.idem_key for p in plans}
