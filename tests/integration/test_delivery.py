"""Delivery guarantees (issue 5), each against a real receiver on 127.0.0.1 whose behaviour the
test scripts, on the session's real local Ray (and, for the signal tests, `hookcast run` in a
process of its own).

Every run ends with the same checks (`assert_receiver_agrees_with_ledger`): each contact id
arrived at least once, each batch (ledger seq) came with exactly one Idempotency-Key, each key
with one set of ids, and the ledger's outcome of every batch is what the receiver answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from email.utils import formatdate
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import ray
from typer.testing import CliRunner

from hookcast.cli.app import app
from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import BatchStatus, Ledger, RunStatus
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.sink import OK, Arrival, Reply, Request, Sink, fail_rate
from hookcast.cluster.testbed.synth import write_audience

NAMESPACE = "hookcast"
HOOKCAST = [sys.executable, "-m", "hookcast.cli.app"]
runner = CliRunner()


@pytest.fixture(scope="module")
def audience_100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audience(tmp_path_factory.mktemp("audience100k") / "contacts.parquet", 100_000)


@pytest.fixture(scope="module")
def audience_3k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audience(tmp_path_factory.mktemp("audience3k") / "contacts.parquet", 3_000)


def ids_of(source: Path) -> set[int]:
    return set(pq.read_table(source, columns=["id"]).column("id").to_pylist())


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def acked(arrival: Arrival) -> bool:
    return 200 <= arrival.status < 300


def assert_receiver_agrees_with_ledger(
    ledger: Ledger,
    run_id: str,
    arrivals: Sequence[Arrival],
    *,
    audience: set[int] | None = None,
    exact_attempts: bool = True,
) -> Counter[str]:
    """The checks every run ends with; returns how often each key arrived.

    ``audience``: every one of these ids (and no other) was acknowledged at least once.
    ``exact_attempts``: the ledger's attempt count of a finished batch is the number of
    requests the receiver saw for it (not so when a request may be lost on the way).
    """
    batches = ledger.batches(run_id)
    by_key = {b.idem_key: b for b in batches}
    seq_of_first_id = {b.first_id: b.seq for b in batches}
    keys_of_seq: defaultdict[int, set[str]] = defaultdict(set)
    ids_of_key: defaultdict[str, set[tuple[int, ...]]] = defaultdict(set)
    statuses_of_key: defaultdict[str, list[int]] = defaultdict(list)
    for arrival in sorted(arrivals, key=lambda a: a.t):
        assert arrival.key in by_key, f"key {arrival.key} is not one the ledger planned"
        assert arrival.ids, f"a request with key {arrival.key} carried no contacts"
        keys_of_seq[seq_of_first_id[arrival.ids[0]]].add(arrival.key)
        ids_of_key[arrival.key].add(arrival.ids)
        statuses_of_key[arrival.key].append(arrival.status)

    two_keys = {seq: keys for seq, keys in keys_of_seq.items() if len(keys) > 1}
    assert not two_keys, f"batches seen with more than one key: {two_keys}"
    assert all(by_key[key].seq == seq for seq, (key,) in keys_of_seq.items())
    two_bodies = [key for key, ids in ids_of_key.items() if len(ids) > 1]
    assert not two_bodies, f"keys seen with more than one set of ids: {two_bodies}"

    for batch in batches:
        seen = statuses_of_key.get(batch.idem_key, [])
        delivered = [s for s in seen if 200 <= s < 300]
        where = f"batch {batch.seq} ({batch.status}, receiver answered {seen})"
        if batch.status == BatchStatus.DELIVERED:
            assert delivered, where
            assert batch.http_status in delivered, where
            [ids] = ids_of_key[batch.idem_key]
            assert (ids[0], ids[-1], len(ids)) == (batch.first_id, batch.last_id, batch.contacts)
        elif batch.status == BatchStatus.DEAD_LETTERED:
            assert not delivered, where
            assert seen and seen[-1] == batch.http_status, where
        elif batch.status == BatchStatus.SKIPPED:
            assert not delivered, where
        else:
            raise AssertionError(f"{where}: the run ended with the batch unfinished")
        if exact_attempts and batch.status != BatchStatus.SKIPPED:
            assert len(seen) == batch.attempts, where

    if audience is not None:
        arrived = {i for a in arrivals if acked(a) for i in a.ids}
        lost = audience - arrived
        assert not lost, f"{len(lost)} contacts never acknowledged, like {sorted(lost)[:3]}"
        assert arrived <= audience
    return Counter(a.key for a in arrivals)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


# -- 1. random 500s ------------------------------------------------------------------------------


def test_500_on_30_percent_of_requests_loses_nothing(
    write_job, ledger: Ledger, audience_100k: Path
) -> None:
    with Sink(behaviour=fail_rate(0.3, status=500, seed=5)) as receiver:
        # 0.3 ** 12: about one batch in two million runs out of attempts.
        job = load_job(write_job(receiver.url, audience_100k, retry__max_attempts=12))
        summary = start_run(job, ledger)
        arrivals = receiver.recorder.arrivals

    assert summary.status == RunStatus.SUCCEEDED
    assert (summary.batches, summary.delivered_batches, summary.failed_batches) == (200, 200, 0)
    statuses = Counter(a.status for a in arrivals)
    assert statuses[500] > 30, statuses
    assert summary.retries == statuses[500]
    seen = assert_receiver_agrees_with_ledger(
        ledger, summary.run_id, arrivals, audience=ids_of(audience_100k)
    )
    assert len(seen) == 200


# -- 2. 429 and Retry-After ----------------------------------------------------------------------

HTTP_DATE = "<an HTTP date about 1 s ahead>"
TOLERANCE_S = 0.01


class RetryAfterReceiver:
    """Answers the 20th and the 60th request 429 with ``Retry-After: retry_after`` (at fixed
    requests, not above a rate: a slow machine would never reach a rate); notes, for every
    429, the earliest time the client may send again."""

    REFUSED = frozenset({20, 60})

    def __init__(self, retry_after: str, min_wait_s: Callable[[int], float]) -> None:
        self.retry_after = retry_after
        self.min_wait_s = min_wait_s  # attempt number -> shortest wait the client may take
        self.attempts: Counter[str | None] = Counter()
        self.waits: list[tuple[str | None, float, float]] = []  # (key, at, not before)

    def __call__(self, request: Request) -> Reply:
        self.attempts[request.key] += 1
        if request.n not in self.REFUSED:
            return OK
        reply = Reply(429)
        now = time.monotonic()
        if self.retry_after == HTTP_DATE:
            wall = time.time()
            when = math.ceil(wall) + 1  # HTTP dates have whole seconds: 1 to 2 s ahead
            value, wait_s = formatdate(when, usegmt=True), when - wall
        else:
            value, wait_s = self.retry_after, self.min_wait_s(self.attempts[request.key])
        self.waits.append((request.key, now, now + wait_s))
        return dataclasses.replace(reply, headers=(("Retry-After", value),))


def _backoff_floor(attempt: int) -> float:
    # RetryPolicy with backoff_base_s 0.5, backoff_max_s 1.0: full jitter in [ceiling/2, ceiling].
    return min(1.0, 0.5 * 2 ** (attempt - 1)) / 2


BACKOFF = {"retry__backoff_base_s": 0.5, "retry__backoff_max_s": 1.0}


@pytest.mark.parametrize(
    ("retry_after", "changes", "min_wait_s"),
    [
        ("1", {}, lambda attempt: 1.0),
        (HTTP_DATE, {}, None),
        ("86400", {"retry__retry_after_max_s": 0.5}, lambda attempt: 0.5),
        ("-5", BACKOFF, _backoff_floor),
        ("abc", BACKOFF, _backoff_floor),
    ],
    ids=["seconds", "http-date", "86400-clamped", "negative-falls-back", "garbage-falls-back"],
)
def test_429_holds_every_request_back_for_the_retry_after_then_delivers(
    write_job, ledger: Ledger, audience_5k: Path, retry_after, changes, min_wait_s
) -> None:
    # One request in flight: none is on its way when the 429 is answered, so nothing at all
    # may arrive before the pause ends, however slow the machine. The pause of requests
    # already in flight, on every sender, is timed exactly in tests/unit/test_coordinator.py.
    behaviour = RetryAfterReceiver(retry_after, min_wait_s)
    with Sink(behaviour=behaviour) as receiver:
        job = load_job(
            write_job(
                receiver.url,
                audience_5k,
                batch_size=50,
                retry__max_attempts=20,
                rate_limit__max_in_flight=1,
                **changes,
            )
        )
        summary = start_run(job, ledger, senders=2)
        arrivals = sorted(receiver.recorder.arrivals, key=lambda a: a.t)

    assert summary.status == RunStatus.SUCCEEDED
    assert behaviour.waits, "the receiver never had to answer 429"
    assert_receiver_agrees_with_ledger(
        ledger, summary.run_id, arrivals, audience=ids_of(audience_5k)
    )
    for key, at, not_before in behaviour.waits:
        # The batch that got the 429 waits the whole (clamped) delay ...
        retry = next(a for a in arrivals if a.key == key and a.t > at)
        assert retry.t >= not_before - TOLERANCE_S, (
            f"{key} came back {retry.t - at:.3f} s after its 429, "
            f"{not_before - at:.3f} s were asked for"
        )
        # ... and so does every other batch, through either sender.
        early = [round(a.t - at, 3) for a in arrivals if at < a.t < not_before - TOLERANCE_S]
        assert not early, f"requests {early} s after a 429 asking for {not_before - at:.3f} s"
    if retry_after == "86400":
        assert summary.duration_s < 30


# -- 3. rate limit and in-flight cap -------------------------------------------------------------

SLOT_LEAD_S = 0.1  # DeliverySettings.slot_lead_s


def assert_no_request_before_its_slot(
    arrivals: Sequence[Arrival], created_at: float, requests_per_second: float
) -> None:
    """Slots are ``1 / rate`` apart from the first, which comes after the run is created:
    the k-th request (from 0) to arrive cannot be earlier than ``k / rate`` after the run's
    ``created_at`` (epoch s). Load only delays requests, so this holds on any machine; that
    no window holds more than ``rate * T + 1`` is checked on a fake clock
    (tests/unit/test_coordinator.py)."""
    wall_minus_monotonic = time.time() - time.monotonic()
    times = sorted(a.t + wall_minus_monotonic for a in arrivals)
    early = [
        (k, round(t - created_at, 3))
        for k, t in enumerate(times)
        if t < created_at + k / requests_per_second - SLOT_LEAD_S
    ]
    assert not early, f"requests ahead of their slot (k, s after the run began): {early[:5]}"


def test_10_requests_per_second_hold_across_4_senders(
    write_job, ledger: Ledger, audience_3k: Path
) -> None:
    with Sink() as receiver:
        job = load_job(
            write_job(
                receiver.url,
                audience_3k,
                batch_size=50,
                rate_limit={"requests_per_second": 10, "max_in_flight": 8},
            )
        )
        summary = start_run(job, ledger, senders=4)
        arrivals = receiver.recorder.arrivals

    assert summary.status == RunStatus.SUCCEEDED and summary.batches == 60
    # Requests handed back unsent (past their slot) are not counted as requests.
    assert summary.requests == len(arrivals) and summary.retries == 0
    assert_receiver_agrees_with_ledger(
        ledger, summary.run_id, arrivals, audience=ids_of(audience_3k)
    )
    assert_no_request_before_its_slot(
        arrivals, ledger.get_run(summary.run_id).created_at, requests_per_second=10
    )


class OpenRequests:
    """Holds every request ``hold_s`` before answering 200, counting how many are open at once."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.open = 0
        self.most_open = 0
        self._lock = threading.Lock()

    async def __call__(self, request: Request) -> Reply:
        with self._lock:
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        try:
            await asyncio.sleep(self.hold_s)
        finally:
            with self._lock:
                self.open -= 1
        return OK


@pytest.mark.parametrize("requests_per_second", [10, None], ids=["10-per-s", "no-rate"])
def test_never_more_than_max_in_flight_requests_open_at_the_receiver(
    write_job, ledger: Ledger, audience_5k: Path, requests_per_second: float | None
) -> None:
    behaviour = OpenRequests(hold_s=0.2)
    with Sink(behaviour=behaviour) as receiver:
        limit = {"max_in_flight": 2, "requests_per_second": requests_per_second}
        job = load_job(write_job(receiver.url, audience_5k, rate_limit=limit))
        summary = start_run(job, ledger, senders=4)
        arrivals = receiver.recorder.arrivals

    assert summary.status == RunStatus.SUCCEEDED and summary.batches == 10
    assert_receiver_agrees_with_ledger(
        ledger, summary.run_id, arrivals, audience=ids_of(audience_5k)
    )
    assert behaviour.most_open == 2


# -- 4. a sender dies ----------------------------------------------------------------------------


def _sending(book: Ledger, run_id: str) -> set[str]:
    return {b.idem_key for b in book.batches(run_id, [BatchStatus.SENDING])}


def _pid(handle: ray.actor.ActorHandle) -> int:
    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=60)


def test_sender_killed_three_times_loses_nothing_and_resends_only_what_was_in_flight(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    in_flight_at_kills: list[set[str]] = []
    pids: list[int] = []
    errors: list[BaseException] = []
    finished = threading.Event()
    # Answers wait while a killed sender restarts, so the run cannot end before its three
    # kills however slowly a loaded machine restarts an actor.
    restarted = threading.Event()
    restarted.set()

    async def hold(request: Request) -> Reply:
        while not restarted.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        return OK

    with Sink(behaviour=hold) as receiver:

        def kill_sender_thrice() -> None:
            book = Ledger(ledger.state_dir)  # a reader of its own, beside the running run
            try:
                wait_for(book.list_runs, 60, "the run in the ledger")
                run_id = book.list_runs()[0].run_id
                name = f"{NAMESPACE}/{run_id}/sender-0"
                for threshold in (10, 35, 60):
                    wait_for(
                        lambda t=threshold: receiver.recorder.requests >= t or finished.is_set(),
                        60,
                        f"{threshold} requests",
                    )
                    if finished.is_set():
                        return
                    handle = ray.get_actor(name, namespace=NAMESPACE)
                    pids.append(_pid(handle))
                    restarted.clear()
                    before = _sending(book, run_id)
                    ray.kill(handle, no_restart=False)
                    in_flight_at_kills.append(before | _sending(book, run_id))
                    # Wait for the restarted sender before killing it again.
                    wait_for(lambda h=handle: _alive_pid(h) not in (None, pids[-1]), 120, "restart")
                    restarted.set()
            except BaseException as exc:
                errors.append(exc)
            finally:
                restarted.set()
                book.close()

        killer = threading.Thread(target=kill_sender_thrice, daemon=True)
        killer.start()
        job = load_job(
            write_job(
                receiver.url,
                audience_5k,
                batch_size=50,
                rate_limit__max_in_flight=8,
                webhook__timeout_s=150,  # held answers are late, not lost
            )
        )
        try:
            summary = start_run(job, ledger, senders=2)
        finally:
            finished.set()
            killer.join(60)
        arrivals = receiver.recorder.arrivals

    assert not errors, errors
    assert len(in_flight_at_kills) == 3, "the run ended before the sender was killed 3 times"
    assert summary.status == RunStatus.SUCCEEDED
    seen = assert_receiver_agrees_with_ledger(
        ledger, summary.run_id, arrivals, audience=ids_of(audience_5k), exact_attempts=False
    )
    # A batch may also be handed to the dead sender before Ray reports its death; it is sent
    # again too, but its first request never left, so the receiver sees it once.
    in_flight = set().union(*in_flight_at_kills)
    resent = {key for key, n in seen.items() if n > 1}
    assert resent <= in_flight, f"arrived twice, not in flight at a kill: {resent - in_flight}"
    assert len(resent) <= 3 * 8
    assert all(b.attempts >= seen[b.idem_key] for b in ledger.batches(summary.run_id))


def _alive_pid(handle: ray.actor.ActorHandle) -> int | None:
    try:
        return _pid(handle)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


# -- 5. the `hookcast run` process is killed ---------------------------------------------------


def _start_cli(tmp_path: Path, *args: str | Path) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp_path / "cli.out", tmp_path / "cli.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([*HOOKCAST, *map(str, args)], stdout=stdout, stderr=stderr)
    return proc, out, err


def _signal_at_40_percent(
    proc: subprocess.Popen, receiver: Sink, signum: int, err: Path, batches: int
) -> None:
    def reached() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"hookcast run exited early: {err.read_text()[-2000:]}")
        return receiver.recorder.requests >= 0.4 * batches

    wait_for(reached, 60, "40% of the batches at the receiver")
    proc.send_signal(signum)


def _slow_job(write_job, receiver: Sink, source: Path) -> Path:
    """100 batches that take a few seconds: 50 requests/s, 4 in flight."""
    return write_job(
        receiver.url,
        source,
        batch_size=50,
        rate_limit={"requests_per_second": 50, "max_in_flight": 4},
    )


def test_sigkilled_run_shows_interrupted_and_resume_sends_only_what_was_unacknowledged(
    write_job, ledger: Ledger, audience_5k: Path, tmp_path: Path
) -> None:
    state = ledger.state_dir
    hold = Reply(delay_s=0.1)
    with Sink(behaviour=lambda request: hold) as receiver:
        job = _slow_job(write_job, receiver, audience_5k)
        proc, _, err = _start_cli(tmp_path, "run", job, "--json", "--state-dir", state)
        try:
            _signal_at_40_percent(proc, receiver, signal.SIGKILL, err, batches=100)
            assert proc.wait(timeout=30) == -signal.SIGKILL  # and reaped: its pid is gone
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        time.sleep(0.3)  # requests open at the kill are answered (and recorded) by now
        before_resume = receiver.recorder.arrivals

        [run] = ledger.list_runs()
        shown = invoke("runs", "show", run.run_id, "--json", "--state-dir", state)
        assert shown.exit_code == 0, shown.output
        assert orjson.loads(shown.stdout)["status"] == RunStatus.INTERRUPTED
        in_flight = _sending(ledger, run.run_id)
        assert len(in_flight) <= 4

        resumed = invoke("resume", run.run_id, "--json", "--state-dir", state)
        assert resumed.exit_code == 0, resumed.output
        arrivals = receiver.recorder.arrivals

    summary = orjson.loads(resumed.stdout)
    assert summary["status"] == RunStatus.SUCCEEDED
    assert summary["delivered_batches"] == 100
    assert 40 <= len({a.key for a in before_resume}) < 100
    seen = assert_receiver_agrees_with_ledger(
        ledger, run.run_id, arrivals, audience=ids_of(audience_5k), exact_attempts=False
    )
    resent = {key for key, n in seen.items() if n > 1}
    assert resent <= in_flight, f"sent again though acknowledged before: {resent - in_flight}"
    assert len(resent) <= 4


def test_sigterm_stops_the_run_with_exit_3_and_its_summary_then_resume_completes_it(
    write_job, ledger: Ledger, audience_5k: Path, tmp_path: Path
) -> None:
    state = ledger.state_dir
    hold = Reply(delay_s=0.05)
    with Sink(behaviour=lambda request: hold) as receiver:
        job = _slow_job(write_job, receiver, audience_5k)
        proc, out, err = _start_cli(tmp_path, "run", job, "--json", "--state-dir", state)
        try:
            _signal_at_40_percent(proc, receiver, signal.SIGTERM, err, batches=100)
            assert proc.wait(timeout=60) == 3, err.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stopped = orjson.loads(out.read_bytes())
        assert stopped["status"] == RunStatus.INTERRUPTED
        assert 40 <= stopped["delivered_batches"] < 100
        run_id = stopped["run_id"]
        assert not _sending(ledger, run_id), "requests in flight were not let finish"
        shown = invoke("runs", "show", run_id, "--json", "--state-dir", state)
        assert orjson.loads(shown.stdout)["status"] == RunStatus.INTERRUPTED

        resumed = invoke("resume", run_id, "--json", "--state-dir", state)
        assert resumed.exit_code == 0, resumed.output
        arrivals = receiver.recorder.arrivals

    assert orjson.loads(resumed.stdout)["status"] == RunStatus.SUCCEEDED
    seen = assert_receiver_agrees_with_ledger(
        ledger, run_id, arrivals, audience=ids_of(audience_5k)
    )
    assert set(seen.values()) == {1}, "a batch was sent twice"


# -- 6. 410 Gone ---------------------------------------------------------------------------------


def test_410_at_the_third_request_stops_sending_and_skips_the_rest_with_exit_1(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    gone = Reply(410, body=b'{"error":"this hook was deleted"}')

    def gone_at_third(request: Request) -> Reply:
        return gone if request.n == 3 else OK

    with Sink(behaviour=gone_at_third) as receiver:
        job = write_job(receiver.url, audience_5k, batch_size=50)
        result = invoke("run", job, "--json", "--state-dir", ledger.state_dir)
        arrivals = receiver.recorder.arrivals

    assert result.exit_code == 1, result.output
    summary = orjson.loads(result.stdout)
    assert summary["status"] == RunStatus.FAILED
    assert summary["skipped_batches"] > 0
    assert summary["failed_batches"] == 1
    assert "410" in (summary["note"] or "")
    in_flight = 8  # the default max_in_flight
    assert len(arrivals) <= 3 + 2 * in_flight, "sending went on after the 410"
    assert_receiver_agrees_with_ledger(ledger, summary["run_id"], arrivals)

    batches = ledger.batches(summary["run_id"])
    by_status = Counter(b.status for b in batches)
    assert by_status[BatchStatus.SKIPPED] == summary["skipped_batches"]
    assert by_status[BatchStatus.DELIVERED] + 1 + by_status[BatchStatus.SKIPPED] == 100
    [dead] = [b for b in batches if b.status == BatchStatus.DEAD_LETTERED]
    assert dead.http_status == 410
    arrived = {a.key for a in arrivals}
    assert not [b.seq for b in batches if b.status == BatchStatus.SKIPPED and b.idem_key in arrived]


# -- 7. redirects are not followed ---------------------------------------------------------------


def test_308_redirect_is_not_followed_and_the_batch_is_dead_lettered(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    with Sink() as receiver:
        moved = Reply(308, headers=(("Location", receiver.url.replace("/hook", "/moved")),))
        receiver.behaviour = lambda request: moved if request.path == "/hook" else OK
        # No canary: every batch is to meet the redirect (with it, the run stops after 3).
        path = write_job(receiver.url, audience_5k, retry__max_attempts=3, canary__batches=0)
        summary = start_run(load_job(path), ledger)
        arrivals = receiver.recorder.arrivals

    assert summary.status == RunStatus.FAILED
    assert (summary.delivered_batches, summary.failed_batches) == (0, 10)
    assert {a.path for a in arrivals} == {"/hook"}, "the redirect was followed"
    seen = assert_receiver_agrees_with_ledger(ledger, summary.run_id, arrivals)
    assert set(seen.values()) == {3}
    for batch in ledger.batches(summary.run_id):
        assert batch.status == BatchStatus.DEAD_LETTERED
        assert batch.http_status == 308
        assert "HTTP 308" in (batch.reason or "")


# -- 8. odd answers ------------------------------------------------------------------------------

FIVE_MB = b'{"ok":true,"pad":"' + b"x" * (5 * 1024 * 1024) + b'"}'


def test_answers_with_5_mb_bodies_neither_stall_nor_crash_the_run(
    write_job, ledger: Ledger, audience_5k: Path
) -> None:
    attempts: Counter[str | None] = Counter()

    def huge(request: Request) -> Reply:
        attempts[request.key] += 1
        # The first attempt fails with a 5 MB error page, the second succeeds with 5 MB.
        return Reply(500 if attempts[request.key] == 1 else 200, body=FIVE_MB)

    with Sink(behaviour=huge) as receiver:
        # Every first attempt fails: the breaker would (rightly) pause for it; not tested here.
        job = load_job(write_job(receiver.url, audience_5k, circuit_breaker__enabled=False))
        started = time.monotonic()
        summary = start_run(job, ledger)
        elapsed = time.monotonic() - started
        arrivals = receiver.recorder.arrivals

    assert summary.status == RunStatus.SUCCEEDED
    assert elapsed < 30
    seen = assert_receiver_agrees_with_ledger(
        ledger, summary.run_id, arrivals, audience=ids_of(audience_5k)
    )
    assert set(seen.values()) == {2}


def test_status_299_counts_as_delivered(write_job, ledger: Ledger, audience_5k: Path) -> None:
    odd = Reply(299)
    with Sink(behaviour=lambda request: odd) as receiver:
        summary = start_run(load_job(write_job(receiver.url, audience_5k)), ledger)
        arrivals = receiver.recorder.arrivals

    assert summary.status == RunStatus.SUCCEEDED
    assert_receiver_agrees_with_ledger(
        ledger, summary.run_id, arrivals, audience=ids_of(audience_5k)
    )
    assert {b.http_status for b in ledger.batches(summary.run_id)} == {299}


class Answer999Receiver:
    """A receiver on 127.0.0.1 that answers every POST with status 999 and keeps what arrived.

    The standard library's server, because uvicorn cannot send 999: it drops the connection
    instead (a KeyError in its status line table)."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._Handler)
        self._server.receiver = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __enter__(self) -> Answer999Receiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    class _Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ids = tuple(element["contact"]["id"] for element in orjson.loads(body))
            headers = {k.lower(): v for k, v in self.headers.items()}
            key = headers.get("idempotency-key")
            arrival = Arrival(time.monotonic(), key, ids, 999, headers, self.path, "")
            self.server.receiver.arrivals.append(arrival)
            answer = b'{"error":"odd"}'
            self.send_response(999)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass


def test_status_999_is_dead_lettered_at_once(write_job, ledger: Ledger, audience_5k: Path) -> None:
    with Answer999Receiver() as receiver:
        path = write_job(receiver.url, audience_5k, canary__batches=0)
        summary = start_run(load_job(path), ledger)
        arrivals = list(receiver.arrivals)

    assert summary.status == RunStatus.FAILED
    assert (summary.delivered_batches, summary.failed_batches) == (0, 10)
    seen = assert_receiver_agrees_with_ledger(ledger, summary.run_id, arrivals)
    assert set(seen.values()) == {1}, "a 999 was retried"
    for batch in ledger.batches(summary.run_id):
        assert (batch.status, batch.http_status) == (BatchStatus.DEAD_LETTERED, 999)
        assert "HTTP 999" in (batch.reason or "")


# -- the same bytes on every retry ---------------------------------------------------------------


class FirstAttemptFails:
    """Answers ``first`` to the first request of each key and 200 after; keeps every body."""

    def __init__(self, first: Reply) -> None:
        self.first = first
        self.bodies: defaultdict[str | None, list[bytes]] = defaultdict(list)

    def __call__(self, request: Request) -> Reply:
        self.bodies[request.key].append(request.body)
        return self.first if len(self.bodies[request.key]) == 1 else OK


@pytest.mark.parametrize(
    "first",
    [Reply(503), Reply(503, headers=(("Retry-After", "1"),))],
    ids=["503-backoff", "503-retry-after-1s"],
)
def test_a_retry_carries_exactly_the_bytes_of_the_first_attempt(
    write_job, ledger: Ledger, audience_5k: Path, first: Reply
) -> None:
    behaviour = FirstAttemptFails(first)
    with Sink(behaviour=behaviour) as receiver:
        # Every first attempt fails: the breaker would (rightly) pause for it; not tested here.
        path = write_job(receiver.url, audience_5k, batch_size=50, circuit_breaker__enabled=False)
        job = load_job(path)
        summary = start_run(job, ledger, senders=1)
        arrivals = receiver.recorder.arrivals

    assert summary.status == RunStatus.SUCCEEDED
    assert summary.retries == 100
    assert_receiver_agrees_with_ledger(
        ledger, summary.run_id, arrivals, audience=ids_of(audience_5k)
    )
    assert all(len(bodies) == 2 for bodies in behaviour.bodies.values())
    changed = sorted(key for key, (one, two) in behaviour.bodies.items() if one != two)
    if changed:
        one, two = behaviour.bodies[changed[0]]
        what = "only sendTime" if _without_send_time(one) == _without_send_time(two) else "more"
        raise AssertionError(
            f"{len(changed)} of 100 retries carried other bytes than their first attempt "
            f"({what} differs), like {changed[0]}"
        )


def _without_send_time(body: bytes) -> list:
    elements = orjson.loads(body)
    for element in elements:
        element.pop("sendTime")
    return elements
