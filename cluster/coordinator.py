"""The run coordinator: feeds batches from the segment to the senders, decides every retry,
and writes each outcome to the ledger.

It is the only place that sees the whole pool, so the endpoint's limits are kept here:
``max_in_flight`` requests at once and ``requests_per_second`` across all senders, retries
included, and a 429 pauses the pool, not one sender. It talks to the senders only through a
``cluster.pool.SenderPool`` and reads time only from its ``Clock``: everything it decides
can be tested without Ray, on a fake clock. No Ray import here.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

from hookcast.actors.breaker import BreakerSettings, BreakerState, CircuitBreaker
from hookcast.actors.concurrency import AdaptiveConcurrency
from hookcast.actors.delivery import SENT, AttemptResult, Outcome, RetryPolicy
from hookcast.actors.errors import RunAbortedError
from hookcast.actors.parts import part_key
from hookcast.actors.ratelimit import RateLimiter
from hookcast.actors.sender import BatchOrder
from hookcast.cluster.ledger import (
    UNFINISHED,
    BatchStatus,
    BatchUpdate,
    Ledger,
    LiveRun,
    NewPart,
    RunStatus,
)
from hookcast.cluster.pool import (
    Answered,
    Call,
    Chunk,
    ChunkFailed,
    Chunks,
    SenderLost,
    SenderPool,
)

if TYPE_CHECKING:
    from hookcast.cluster.metrics import RunMetrics
    from hookcast.cluster.metrics_relay import RelayedMetrics

logger = logging.getLogger(__name__)

# How often a run tells the others targeting its endpoint that it is there (and learns of
# them): the limits are shared among the live ones.
SHARE_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class Clock:
    """Where the coordinator's time comes from: ``monotonic`` for limits and retries,
    ``wall`` (epoch s) for rate-limit slots handed to senders and ``sendTime``, ``sleep``
    while nothing is in flight."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """How one run delivers: limits, retries, read-ahead."""

    max_in_flight: int = 8
    requests_per_second: float | None = None
    contacts_per_second: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batch_size: int = 500  # a batch's contacts when the run does not say (for the limits)
    max_body_bytes: int | None = None  # a larger body is cut into parts (None: no limit)
    canary_batches: int = 3  # the first batches go alone; all failing for good stops the run
    adaptive: bool = True  # in-flight requests adapt (AIMD) between 1 and max_in_flight
    breaker: BreakerSettings | None = field(default_factory=BreakerSettings)  # None: off
    prefetch_batches: int = 16  # the segment runs this far ahead, or 2 chunks if more
    chunk_batches: int = 8  # batches per sender call when no request rate is set
    # Batches per segment chunk (one object in Ray's store), at least one sender call's:
    # storing an object costs ~1.5 ms whatever its size (measured: 32 sends 1M contacts
    # ~20% faster than 1, with 8 batches a call instead of 4).
    stream_batches: int = 32
    token_wait_s: float = 2.0  # before asking again for a batch that got no token
    # Signed requests: a retry waits for the next wall-clock second, so that its
    # webhook-timestamp (whole seconds), and so its signature, differ from the attempt's.
    signed: bool = False
    slot_lead_s: float = 0.1  # how early a rate-limited request is handed to its sender
    poll_s: float = 0.02


@dataclass(slots=True)
class Progress:
    """Live counts of one run, handed to the progress callback."""

    contacts: int
    batches: int
    delivered_contacts: int = 0
    delivered_batches: int = 0
    failed_batches: int = 0
    skipped_batches: int = 0
    retries: int = 0
    requests: int = 0
    in_flight_limit: int = 0  # the adaptive concurrency limit now (0: not started)
    breaker: str = "closed"  # the circuit breaker: closed, open, half-open (or off)
    split_batches: int = 0  # batches (or parts) cut into parts this session


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The ``--json`` summary of a run."""

    run_id: str
    job: str
    status: str
    contacts: int
    batches: int
    delivered_batches: int
    failed_batches: int
    skipped_batches: int
    delivered_contacts: int
    retries: int
    requests: int
    duration_s: float
    contacts_per_s: float
    requests_per_s: float
    note: str | None = None
    split_batches: int = 0  # cut into parts to fit the endpoint (their parts count as batches)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class _Attempt:
    seq: int
    key: str
    chunk: Chunk  # the segment's chunk holding this batch
    attempt: int
    sender: int  # a chunk goes to one sender, unless that sender is lost
    sent_at_ms: int | None = None  # the batch's sendTime, fixed at its first attempt
    send_at: float | None = None  # epoch s of its rate-limit slot
    left_at: float = 0.0  # monotonic s it was handed to its sender
    probe: bool = False  # the circuit breaker's half-open probe
    batch: int | None = None  # the batch it is (part of) in the segment's chunks; None: seq
    part: tuple[int, int] | None = None  # a part: contacts lo .. hi - 1 of that batch

    @property
    def batch_no(self) -> int:
        return self.seq if self.batch is None else self.batch


class EndpointShare(Protocol):
    """Where the runs to one endpoint learn of each other (the ledger is one)."""

    def heartbeat(self, live: LiveRun) -> list[LiveRun]: ...

    def leave(self, run_id: str) -> None: ...


class Coordinator:
    """Delivers the wanted batches of one run through ``pool``; call ``run()`` once.

    Without a request rate, batches travel ``chunk_batches`` to a sender call (a Ray call
    costs ~2.5 ms of CPU across driver, segment and sender, more than a batch's own work);
    with a rate, every request is its own call, released by the rate limiter.

    Guarantees: a batch is SENDING in the ledger before its request leaves; a retry keeps
    its key and ``sendTime``; requests handed back unsent (LATE, NO_TOKEN) use no attempt
    and are not counted as requests. ``stop`` sends nothing new and waits for the answers
    in flight; ``stop_now`` returns at once, leaving the batches in flight SENDING (resume
    sends them again with their keys)."""

    def __init__(
        self,
        *,
        run_id: str,
        ledger: Ledger,
        pool: SenderPool,
        seqs: Sequence[int],
        keys: dict[int, str],
        settings: DeliverySettings,
        progress: Progress,
        on_progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
        stop_now: threading.Event | None = None,
        clock: Clock = Clock(),
        metrics: RunMetrics | RelayedMetrics | None = None,
        attempts_before: dict[int, int] | None = None,
        rng: random.Random | None = None,
        sizes: dict[int, int] | None = None,
        contacts_budget: int | None = None,
        parts: dict[int, tuple[int, int, int]] | None = None,
        endpoint: str | None = None,
        share: EndpointShare | None = None,
    ) -> None:
        self.run_id = run_id
        # Attempts a batch had in earlier sessions of this run (resume, replay): the ledger
        # counts on from there, while the retry budget is this session's own.
        self.attempts_before = attempts_before or {}
        self.metrics = metrics
        self.ledger = ledger
        self.pool = pool
        self.seqs = sorted(seqs)
        self.keys = keys
        # Parts of batches cut to fit the endpoint (seq -> (batch, lo, hi)): the segment
        # streams whole batches, each row goes with its batch's chunk.
        self.parts = dict(parts or {})
        self._rows_of: dict[int, list[int]] = {}
        for seq in self.seqs:
            self._rows_of.setdefault(self._batch_of(seq), []).append(seq)
        self.batch_nos = sorted(self._rows_of)
        self.body_limit = settings.max_body_bytes  # lowered by what 413s teach
        self.largest_accepted = 0  # the largest body the endpoint took (bytes)
        self.settings = settings
        self.progress = progress
        self.on_progress = on_progress or (lambda _: None)
        self.stop = stop or threading.Event()
        self.stop_now = stop_now or threading.Event()
        self.clock = clock
        self.limiter = RateLimiter(settings.requests_per_second, clock=clock.monotonic)
        self.contact_limiter = RateLimiter(settings.contacts_per_second, clock=clock.monotonic)
        self.sizes = sizes or {}
        rated = settings.requests_per_second or settings.contacts_per_second
        self.per_call = 1 if rated else settings.chunk_batches
        self.per_call = max(1, min(self.per_call, settings.max_in_flight))
        # A chunk goes to one sender: a small run still makes 4 chunks for each of them.
        spread = -(-len(self.batch_nos) // (4 * pool.size))
        self.per_chunk = max(self.per_call, min(settings.stream_batches, spread))
        # With a rate, requests leave early and wait at their sender for their slot.
        self.lead_s = settings.slot_lead_s if rated else 0.0
        self.rated = bool(rated)
        # The canary: the session's first batches go alone (with their retries); the rest
        # waits until one is delivered. If each fails for good, the run stops: ABORTED.
        self.canary = set(self.seqs[: settings.canary_batches])
        self.canary_failures: dict[int, str] = {}  # seq -> why it failed for good
        self.canary_failed: str | None = None  # why the canary stopped the run
        # The day's quota left (contacts); a batch that would pass it is not sent.
        self.contacts_budget = contacts_budget
        self.budget_used = 0
        self.quota_reached = False
        self.concurrency = AdaptiveConcurrency(
            settings.max_in_flight, adaptive=settings.adaptive, clock=clock.monotonic
        )
        self.breaker = (
            None if settings.breaker is None else CircuitBreaker(settings.breaker, clock.monotonic)
        )
        self.rng = rng or random.Random()
        # Runs that target the same endpoint at once (through this ledger) split its limits:
        # each holds 1/n of the rates and of max_in_flight, and an open breaker holds all.
        self.endpoint = endpoint  # None: not shared
        self.share = share or ledger  # where live runs meet (the ledger, and the cluster's)
        self.peers = 1
        self._shared_at = -math.inf
        self._others_open_until = 0.0  # epoch s: another run's breaker is open until then
        self._hold_until = -math.inf  # a run joining others waits until they have seen it
        self.in_flight: dict[Call, list[_Attempt]] = {}
        self.in_flight_batches = 0
        self.ready: collections.deque[_Attempt] = collections.deque()  # fetched, not sent
        self.retries: list[tuple[float, int, _Attempt]] = []  # (due, seq, attempt) heap
        self.gone: str | None = None  # why sending stopped for good (410)
        self.aborted: str | None = None
        self._upcoming = iter(self.batch_nos)
        self._stream: Chunks | None = None
        self._next_sender = 0
        self._updates: list[BatchUpdate] = []

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> RunStatus:
        """Deliver until every wanted batch has an outcome, or the run is stopped."""
        try:
            self._share(joining=True)
            return self._run()
        finally:
            if self.endpoint is not None:
                self.share.leave(self.run_id)

    def open_stream(self) -> Chunks:
        """Start the segment on the wanted batches (``run`` does, if not done before): opened
        while the senders boot, the first chunk is ready when they are."""
        if self._stream is None:
            window = max(2, -(-self.settings.prefetch_batches // self.per_chunk))
            self._stream = self.pool.chunks(self.batch_nos, self.per_chunk, window)
        return self._stream

    def _run(self) -> RunStatus:
        stream = self.open_stream()
        stream_done = not self.seqs
        while not self.stop_now.is_set():
            self._share()
            stopping = (
                self.stop.is_set()
                or self.gone is not None
                or self.aborted is not None
                or self.canary_failed is not None
                or self.quota_reached
            )
            wait_s = self.settings.poll_s
            to_send: list[_Attempt] = []
            while not stopping:
                free = self._limit() - self.in_flight_batches - len(to_send)
                if free <= 0:
                    break
                permit_wait = self._permit_wait_s() - self.lead_s
                if permit_wait > 0:
                    wait_s = min(wait_s, permit_wait)
                    if self.metrics:
                        self.metrics.waited(wait_s)
                    break
                breaker_wait = self._breaker_wait_s()
                if breaker_wait > 0:
                    wait_s = min(wait_s, breaker_wait)
                    break
                attempt = self._due_retry()
                if attempt is None and not self.ready and not stream_done:
                    if stream.next_ready():
                        self._unpack(next(stream))
                    elif stream.is_finished():
                        stream_done = True
                if attempt is None and self.ready and self._may_start(self.ready[0]):
                    attempt = self.ready.popleft()
                    if not self._within_budget(attempt):
                        self.ready.appendleft(attempt)
                        break
                if attempt is None:
                    break
                if self.breaker is not None and self.breaker.state is not BreakerState.CLOSED:
                    self.breaker.allow()  # hands out the probe: this request
                    attempt.probe = True
                size = self.sizes.get(attempt.seq, self.settings.batch_size)
                slot = max(self.limiter.take(), self.contact_limiter.take(size))
                attempt.send_at = (
                    self.clock.wall() + (slot - self.clock.monotonic()) if self.rated else None
                )
                to_send.append(attempt)
                if attempt.probe:
                    break  # the probe goes alone
            self._send(to_send)
            if self.breaker is not None and self.breaker.outage_too_long():
                self.aborted = (
                    f"the endpoint has failed for {self.breaker.outage_s():.0f} s "
                    f"(circuit_breaker.max_outage_s {self.settings.breaker.max_outage_s:g}): "
                    "stopped; `hookcast resume` sends the rest once it is back"
                )
            idle = not self.ready and not self.retries and stream_done
            if not self.in_flight and (stopping or idle):
                break
            # A retry already due waits on what holds it back (a slot, an answer), not spinning.
            due_in_s = self.retries[0][0] - self.clock.monotonic() if self.retries else 0.0
            if due_in_s > 0:
                wait_s = min(wait_s, due_in_s)
            self._collect(wait_s)
        self._flush()
        if self.aborted is not None:
            raise RunAbortedError(self.aborted)
        if self.canary_failed is not None:
            self._waiting_back_to_planned()
            return RunStatus.ABORTED
        stopped = self.stop.is_set() or self.stop_now.is_set() or self.quota_reached
        if stopped:
            self._waiting_back_to_planned()
        if stopped and self.gone is None and self._unfinished():
            return RunStatus.INTERRUPTED
        if self.gone is not None:
            self._skip_rest(stream_done)
        self._flush()
        return RunStatus.SUCCEEDED if self._all_delivered() else RunStatus.FAILED

    def _share(self, *, joining: bool = False) -> None:
        """Say this run is live (with its limit and breaker) and take its share of the
        endpoint: 1/n of the rates and of max_in_flight among the n runs targeting it."""
        now = self.clock.monotonic()
        if self.endpoint is None or now - self._shared_at < SHARE_EVERY_S:
            return
        self._shared_at = now
        wall = self.clock.wall()
        open_until = None
        if self.breaker is not None and self.breaker.state is BreakerState.OPEN:
            open_until = wall + self.breaker.wait_s()
        live = self.share.heartbeat(
            LiveRun(
                self.run_id,
                self.endpoint,
                seen_at=wall,
                in_flight_limit=self._limit(),
                breaker="off" if self.breaker is None else str(self.breaker.state),
                breaker_open_until=open_until,
            )
        )
        others = [r for r in live if r.run_id != self.run_id]
        self._others_open_until = max((r.breaker_open_until or 0.0 for r in others), default=0.0)
        if joining and others:
            # The others take their smaller share at their next heartbeat: wait for it.
            self._hold_until = now + 1.5 * SHARE_EVERY_S
        peers = 1 + len(others)
        if peers != self.peers:
            self.peers = peers
            rps, cps = self.settings.requests_per_second, self.settings.contacts_per_second
            self.limiter.rate = None if rps is None else rps / peers
            self.contact_limiter.rate = None if cps is None else cps / peers
            logger.info(
                "%d runs share %s: each holds 1/%d of its limits", peers, self.endpoint, peers
            )

    def _limit(self) -> int:
        """Requests that may be in flight now: the adaptive limit (within this run's share
        of max_in_flight), the canary's while it flies."""
        limit = min(self.concurrency.limit, max(1, self.settings.max_in_flight // self.peers))
        if self._canary_flying():
            return min(limit, len(self.canary))
        return limit

    def _breaker_wait_s(self) -> float:
        """How long the breaker holds every request back (0: not at all); while its probe
        is out, until the probe's answer comes."""
        others = self._others_open_until - self.clock.wall()  # another run's open breaker
        if self.breaker is None:
            return max(0.0, others)
        wait = self.breaker.wait_s()
        return max(others, self.settings.poll_s if math.isinf(wait) else wait)

    def _canary_flying(self) -> bool:
        return bool(self.canary) and self.canary_failed is None

    def _may_start(self, attempt: _Attempt) -> bool:
        """While the canary flies, only its batches leave."""
        return not self._canary_flying() or attempt.seq in self.canary

    def _permit_wait_s(self) -> float:
        held = self._hold_until - self.clock.monotonic()
        return max(self.limiter.wait_s(), self.contact_limiter.wait_s(), held)

    def _within_budget(self, attempt: _Attempt) -> bool:
        """Whether a batch's first request fits in the day's quota; if not, nothing new is
        sent (the run ends INTERRUPTED, resumable when the quota resets)."""
        if self.contacts_budget is None:
            return True
        size = self.sizes.get(attempt.seq, self.settings.batch_size)
        if self.budget_used + size > self.contacts_budget:
            self.quota_reached = True
            return False
        self.budget_used += size
        return True

    def _canary_answer(self, attempt: _Attempt, *, failed: bool, reason: str = "") -> None:
        """A canary batch's fate: delivered (or emptied) lets the rest go; when each one
        failed for good, the run stops (its failures are dead letters, as always)."""
        if attempt.seq not in self.canary or not self._canary_flying():
            return
        if not failed:
            self.canary.clear()
            return
        self.canary_failures.setdefault(attempt.seq, reason)
        self._canary_verdict()

    def _canary_inconclusive(self, seq: int) -> None:
        """A 413 is about the body, not the endpoint: that batch gives no verdict."""
        if seq in self.canary and self._canary_flying():
            self.canary.discard(seq)
            self._canary_verdict()

    def _canary_verdict(self) -> None:
        if self.canary and len(self.canary_failures) == len(self.canary):
            first = self.canary_failures[min(self.canary_failures)]
            self.canary_failed = (
                f"the canary stopped the run: each of its first {len(self.canary)} batches "
                f"failed for good (first: {first}); nothing more was sent. Fix the endpoint, "
                f"then `hookcast resume {self.run_id}` sends the rest and `hookcast replay "
                f"{self.run_id}` the canary's"
            )

    def _batch_of(self, seq: int) -> int:
        part = self.parts.get(seq)
        return seq if part is None else part[0]

    def _new_attempt(self, seq: int, chunk: Chunk, sender: int) -> _Attempt:
        part = self.parts.get(seq)
        if part is None:
            return _Attempt(seq, self.keys[seq], chunk, 1, sender)
        batch, lo, hi = part
        return _Attempt(seq, self.keys[seq], chunk, 1, sender, batch=batch, part=(lo, hi))

    def _unpack(self, chunk: Chunk) -> None:
        """A chunk from the segment holds the next ``per_chunk`` wanted batches; they all go
        to one sender, which has the chunk at hand for each of its calls."""
        sender = self._next_sender % self.pool.size
        self._next_sender += 1
        for batch in itertools.islice(self._upcoming, self.per_chunk):
            for seq in self._rows_of[batch]:
                self.ready.append(self._new_attempt(seq, chunk, sender))

    def _due_retry(self) -> _Attempt | None:
        if self.retries and self.retries[0][0] <= self.clock.monotonic():
            return heapq.heappop(self.retries)[2]
        return None

    def _send(self, attempts: list[_Attempt]) -> None:
        if not attempts:
            return
        self._updates.extend(
            BatchUpdate(a.seq, BatchStatus.SENDING, self._in_ledger(a)) for a in attempts
        )
        self._flush()  # the ledger knows a batch is in flight before its request leaves
        calls: dict[tuple[int, int], list[_Attempt]] = {}  # (id of chunk, sender) -> group
        for attempt in attempts:
            where = (id(attempt.chunk), attempt.sender)
            group = calls.setdefault(where, [])
            group.append(attempt)
            if len(group) == self.per_call:
                self._call(calls.pop(where))
        for group in calls.values():
            self._call(group)

    def _call(self, group: list[_Attempt]) -> None:
        now_ms = int(self.clock.wall() * 1000)
        for attempt in group:
            attempt.sent_at_ms = attempt.sent_at_ms or now_ms
        orders = [
            BatchOrder(
                a.seq,
                a.key,
                a.attempt,
                a.sent_at_ms,
                a.send_at,
                batch=a.batch,
                part=a.part,
                max_body_bytes=self._body_limit_for(a),
            )
            for a in group
        ]
        call = self.pool.submit(group[0].sender, group[0].chunk, orders)
        self.in_flight[call] = group
        for attempt in group:
            self.in_flight_batches += 1
            attempt.left_at = self.concurrency.on_send(self.in_flight_batches)

    def _collect(self, timeout_s: float) -> None:
        if not self.in_flight:
            self.clock.sleep(timeout_s)
            return
        for call, outcome in self.pool.collect(list(self.in_flight), timeout_s):
            group = self.in_flight.pop(call)
            self.in_flight_batches -= len(group)
            if isinstance(outcome, SenderLost):
                # The outcome is unknown: send again, same keys, through the next sender
                # (this one may be gone for good, with its node).
                logger.warning(
                    "sender lost during batches %s (%s); sending them again",
                    [a.seq for a in group],
                    outcome.error,
                )
                for attempt in group:
                    if attempt.attempt >= self.settings.retry.max_attempts:
                        self.aborted = (
                            f"the senders were lost {attempt.attempt} times while sending batch "
                            f"{attempt.seq} ({outcome.error}): stopped; `hookcast resume` sends "
                            "the rest once the cluster is healthy"
                        )
                    attempt.sender = (attempt.sender + 1) % self.pool.size
                    self._schedule_retry(attempt, 0.0)
            elif isinstance(outcome, ChunkFailed):
                self.aborted = f"batches {group[0].seq}.. could not be sent: {outcome.error}"
            elif isinstance(outcome, Answered):
                for attempt, result in zip(group, outcome.results, strict=True):
                    self._record(attempt, result)
                    if self.metrics:
                        self.metrics.attempt(result, retry=attempt.attempt > 1)
        self._flush()
        self.progress.in_flight_limit = self.concurrency.limit
        self.progress.breaker = "off" if self.breaker is None else str(self.breaker.state)
        if self.metrics:
            self.metrics.set_queued(len(self.ready))
            self.metrics.set_guards(self.progress.in_flight_limit, self.progress.breaker)
        self.on_progress(self.progress)

    def _record(self, attempt: _Attempt, result: AttemptResult) -> None:
        latency_ms = round(result.latency_s * 1000, 2)
        outcome = result.outcome
        if outcome in SENT:  # requests handed back unsent (late, no token) do not count
            self.progress.requests += 1
            self.progress.retries += attempt.attempt > 1
            if self._endpoint_heard(attempt, result):
                return
        if result.parts:  # too large, for max_body_bytes (not sent) or the endpoint (413)
            self._split(attempt, result)
            return
        if outcome is Outcome.DELIVERED:
            self.largest_accepted = max(self.largest_accepted, result.body_bytes)
        if outcome in (Outcome.DELIVERED, Outcome.EMPTY):
            self._canary_answer(attempt, failed=False)
        if outcome is Outcome.DELIVERED:
            self._final(attempt, BatchStatus.DELIVERED, result, latency_ms, None)
            self.progress.delivered_batches += 1
            self.progress.delivered_contacts += result.contacts
        elif outcome is Outcome.EMPTY:
            self._final(attempt, BatchStatus.SKIPPED, result, None, result.error)
            self.progress.skipped_batches += 1
        elif outcome is Outcome.TOKEN_FATAL:
            self.aborted = result.error or "the authorization gave no token"
            self._schedule_retry(attempt, 0.0, same_attempt=True)
        elif outcome is Outcome.BLOCKED:
            # Every request would meet the same rule: stop, nothing sent, resumable.
            self.aborted = result.error or "the egress guard refused the endpoint's address"
            self._schedule_retry(attempt, 0.0, same_attempt=True)
        elif outcome is Outcome.OVERSIZE:
            # One contact over max_body_bytes: never sent, dead-lettered alone.
            self._canary_inconclusive(attempt.seq)
            self._final(attempt, BatchStatus.DEAD_LETTERED, result, None, result.error, sent=False)
            self.progress.failed_batches += 1
            if self.metrics:
                self.metrics.dead_letter()
        elif outcome is Outcome.LATE:
            self._schedule_retry(attempt, 0.0, same_attempt=True)  # a new slot, no attempt used
        elif outcome is Outcome.NO_TOKEN:
            # Not sent, so no delivery attempt is used up; the token service keeps trying.
            self._schedule_retry(attempt, self.settings.token_wait_s, same_attempt=True)
        elif outcome is Outcome.RETRY and attempt.attempt < self.settings.retry.max_attempts:
            delay = self.settings.retry.delay_s(attempt.attempt, result.retry_after_s, self.rng)
            if self.settings.signed:
                wall = self.clock.wall()
                delay = max(delay, math.floor(wall) + 1 - wall)
            if result.status == 429:
                self.limiter.pause_until(self.clock.monotonic() + delay)
            self._schedule_retry(attempt, delay)
        else:
            if outcome is Outcome.GONE:
                self.gone = f"the endpoint answered 410 Gone at batch {attempt.seq}"
            reason = result.error or "failed"
            if outcome is Outcome.RETRY:
                reason = f"{reason} (gave up after {attempt.attempt} attempts)"
            if result.status == 413 and result.contacts == 1:
                reason = f"{reason} for one contact, its body {result.body_bytes:,} bytes"
            if result.response_excerpt:
                reason = f"{reason}: {result.response_excerpt}"
            if result.status == 413:
                self._canary_inconclusive(attempt.seq)
            elif outcome is not Outcome.GONE:
                self._canary_answer(attempt, failed=True, reason=reason)
            self._final(attempt, BatchStatus.DEAD_LETTERED, result, latency_ms, reason)
            self.progress.failed_batches += 1
            if self.metrics:
                self.metrics.dead_letter()

    def _endpoint_heard(self, attempt: _Attempt, result: AttemptResult) -> bool:
        """Tell the breaker and the concurrency limit what the endpoint answered. True when
        the answer is a failed probe: the batch waits for the next probe, no attempt used."""
        status = result.status
        self.concurrency.on_answer(
            result.latency_s,
            backpressure=status == 503 or result.timed_out,
            throttled=status == 429,
            sent_at=attempt.left_at,
        )
        if self.breaker is None:
            return False
        failed = status is None or status >= 500 or status == 408
        self.breaker.record(ok=not failed, sent_at=attempt.left_at)
        if attempt.probe and failed:
            self._schedule_retry(attempt, 0.0, same_attempt=True)
            return True
        return False

    def _body_limit_for(self, attempt: _Attempt) -> int | None:
        """The body limit a request is cut to: the job's, or lower where a 413 taught us
        the endpoint's. A single contact is held to the job's alone (it cannot be cut, so
        the endpoint decides)."""
        if self.sizes.get(attempt.seq, self.settings.batch_size) <= 1:
            return self.settings.max_body_bytes
        return self.body_limit

    def _split(self, attempt: _Attempt, result: AttemptResult) -> None:
        """Cut a batch (or part) that is too large into the parts its sender chose; they
        go next, as new requests with keys derived from the batch's."""
        answered = result.status == 413
        if answered and result.body_bytes > self.largest_accepted:
            # Bodies this large fail: cut the next ones to half of it (never below one the
            # endpoint took), so a run behind a small limit does not 413 every batch.
            learned = max(self.largest_accepted, result.body_bytes // 2)
            self.body_limit = learned if self.body_limit is None else min(self.body_limit, learned)
        root_key = attempt.key.rsplit(".", 1)[0] if attempt.part else attempt.key
        parts = [
            NewPart(
                attempt.batch_no, p.lo, p.hi, part_key(root_key, p.lo, p.hi), p.first_id, p.last_id
            )
            for p in result.parts
        ]
        why = (
            f"HTTP 413 for {result.body_bytes:,} bytes: halved"
            if answered
            else f"{result.body_bytes:,} bytes, over max_body_bytes: cut in {len(parts)}"
        )
        used = self._in_ledger(attempt) - (0 if answered else 1)
        self._flush()  # the parent's earlier updates first
        seqs = self.ledger.split_batch(
            self.run_id,
            BatchUpdate(attempt.seq, BatchStatus.SPLIT, used, result.status, None, why),
            parts,
        )
        canary = attempt.seq in self.canary and self._canary_flying()
        if canary:
            self.canary.discard(attempt.seq)
        if self.contacts_budget is not None:  # its parts are counted as they leave
            self.budget_used -= self.sizes.get(attempt.seq, self.settings.batch_size)
        for seq, part in zip(seqs, parts, strict=True):
            self.keys[seq] = part.idem_key
            self.sizes[seq] = part.hi - part.lo
            self.parts[seq] = (part.batch, part.lo, part.hi)
        for seq in reversed(seqs):  # next out, in order
            self.ready.appendleft(self._new_attempt(seq, attempt.chunk, attempt.sender))
        if canary:
            self.canary.update(seqs)
        self.progress.split_batches += 1

    def _final(
        self,
        attempt: _Attempt,
        status: BatchStatus,
        result: AttemptResult,
        latency_ms: float | None,
        reason: str | None,
        *,
        sent: bool = True,
    ) -> None:
        """The batch's last outcome; ``sent=False``: this attempt never left (no attempt used)."""
        attempts = self._in_ledger(attempt) - (0 if sent else 1)
        self._updates.append(
            BatchUpdate(attempt.seq, status, attempts, result.status, latency_ms, reason)
        )

    def _in_ledger(self, attempt: _Attempt) -> int:
        return self.attempts_before.get(attempt.seq, 0) + attempt.attempt

    def _schedule_retry(
        self, attempt: _Attempt, delay_s: float, *, same_attempt: bool = False
    ) -> None:
        number = attempt.attempt if same_attempt else attempt.attempt + 1
        retry = _Attempt(
            attempt.seq,
            attempt.key,
            attempt.chunk,
            number,
            attempt.sender,
            attempt.sent_at_ms,
            batch=attempt.batch,
            part=attempt.part,
        )
        heapq.heappush(self.retries, (self.clock.monotonic() + delay_s, attempt.seq, retry))

    def _waiting_back_to_planned(self) -> None:
        """A stopped run's batches that wait for a retry (after an answer, or handed back
        unsent) are not in flight: the ledger shows them planned, with the attempts used."""
        self._updates.extend(
            BatchUpdate(a.seq, BatchStatus.PLANNED, self._in_ledger(a) - 1, None, None, None)
            for _, _, a in self.retries
        )
        self.retries.clear()
        self._flush()

    def _skip_rest(self, stream_done: bool) -> None:
        pending = [a.seq for _, _, a in self.retries] + [a.seq for a in self.ready]
        if not stream_done:
            pending.extend(seq for batch in self._upcoming for seq in self._rows_of[batch])
        self.retries.clear()
        self.ready.clear()
        for seq in pending:
            before = self.attempts_before.get(seq, 0)
            self._updates.append(
                BatchUpdate(seq, BatchStatus.SKIPPED, before, None, None, self.gone)
            )
            self.progress.skipped_batches += 1

    def _unfinished(self) -> bool:
        counts = self.ledger.batch_counts(self.run_id)
        return any(counts.get(status, (0, 0))[0] for status in UNFINISHED)

    def _all_delivered(self) -> bool:
        counts = self.ledger.batch_counts(self.run_id)
        return set(counts) <= {BatchStatus.DELIVERED, BatchStatus.SPLIT}

    def _flush(self) -> None:
        if self._updates:
            self.ledger.update_batches(self.run_id, self._updates)
            self._updates = []
