"""Ray's metrics for a run that sends from a process without Ray: an embedded Ray in a process
of its own, fed with what the run counted.

A run on one machine renders and sends in its own process (``cluster/local_pool.py``) and
needs Ray only for the metrics Ray exports (every 10 s, to the Prometheus the README
describes). A run that ends within seconds would show in them not at all, and Ray costs ~3
CPU-s and ~65 MB of the process that starts it (measured), so the run starts it only once it
is worth it (``worth_starting``), and in a child process, the relay: its ``ray.init`` takes
nothing from the run's GIL or memory, and it shuts its Ray down on the thread that started
it (Ray's driver shutdown from another thread blocks 15 s, measured with Ray 2.60).

The run adds its numbers up (``MetricDeltas``) and hands them to the relay twice a second
as JSON lines on its stdin, from the first request on, whenever the relay came up; the relay
records them into Ray's metrics (``RunMetrics``). At the run's end, or when the run's process
dies, stdin closes and the relay shuts its Ray down by itself (the run does not wait for
it); its watchdog ends Ray if the relay itself is killed.

    python -m hookcast.cluster.metrics_relay --job JOB --endpoint URL   # started by RelayedMetrics
"""

from __future__ import annotations

import argparse
import logging
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import orjson

from hookcast.actors.delivery import AttemptResult
from hookcast.cluster.metrics import MetricDeltas

logger = logging.getLogger(__name__)

# A run starts its Ray once it has sent for this long ...
SENDING_BEFORE_S = 1.0
# ... if it still has this long to go at its pace so far: Ray starts in ~2 s and exports
# every 10 s, so a shorter rest would reach Prometheus barely if at all.
LEFT_AT_LEAST_S = 10.0
HAND_OVER_EVERY_S = 0.5
STOP_WAIT_S = 30.0  # for the last lines to reach the relay's stdin


def worth_starting(sending_s: float, done: int, total: int) -> bool:
    """Whether a run that has sent ``done`` of its ``total`` contacts in ``sending_s``
    seconds will last long enough for its metrics to be worth starting Ray for."""
    if sending_s < SENDING_BEFORE_S or done >= total:
        return False
    if done <= 0:
        return True  # nothing delivered after a second: a slow endpoint, a long run
    return (total - done) * sending_s / done >= LEFT_AT_LEAST_S


class RelayedMetrics:
    """A run's metrics (the coordinator's ``metrics``), recorded by a relay process once the
    run is worth it; ``close()`` at the run's end hands over the rest and waits for the relay.

    ``start_relay(job, endpoint)`` starts the relay and returns a ``Relay`` (injected in tests);
    ``contacts`` is what the run has to send, ``clock`` a monotonic one."""

    def __init__(
        self,
        job: str,
        endpoint: str,
        contacts: int,
        *,
        start_relay: Callable[[str, str], Relay] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._job, self._endpoint, self._contacts = job, endpoint, contacts
        self._start_relay = start_relay or Relay.start
        self._clock = clock
        self._deltas = MetricDeltas()
        self._relay: Relay | None = None
        self._first_answer_at: float | None = None
        self._handed_at = 0.0
        self._delivered = 0

    @property
    def started(self) -> bool:
        return self._relay is not None

    def attempt(self, result: AttemptResult, *, retry: bool) -> None:
        self._deltas.attempt(result, retry=retry)
        now = self._clock()
        if self._first_answer_at is None:
            self._first_answer_at = now
        if result.outcome == "delivered":
            self._delivered += result.contacts
        if self._relay is None:
            sending_s = now - self._first_answer_at
            if worth_starting(sending_s, self._delivered, self._contacts):
                self._relay = self._start_relay(self._job, self._endpoint)
        self._hand_over(now)

    def dead_letter(self) -> None:
        self._deltas.dead_letter()

    def waited(self, seconds: float) -> None:
        self._deltas.waited(seconds)

    def set_queued(self, batches: int) -> None:
        self._deltas.set_queued(batches)

    def set_guards(self, in_flight_limit: int, breaker: str) -> None:
        self._deltas.set_guards(in_flight_limit, breaker)

    def _hand_over(self, now: float) -> None:
        if self._relay is not None and now - self._handed_at >= HAND_OVER_EVERY_S:
            self._handed_at = now
            self._relay.send(self._deltas.take())

    def close(self) -> None:
        """Hand the rest over and let the relay shut its Ray down (it reports whether Ray
        failed to start)."""
        if self._relay is not None:
            self._relay.send(self._deltas.take())
            self._relay.close()


class Relay:
    """The relay process, seen from the run: JSON lines to its stdin, written by a thread of
    their own (a pipe that fills while Ray starts must not hold up the run)."""

    def __init__(self, process: subprocess.Popen, errors) -> None:
        self._process, self._errors = process, errors
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="hookcast-relay", daemon=True)
        self._writer.start()

    @classmethod
    def start(cls, job: str, endpoint: str) -> Relay:
        errors = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by close(), read if it failed
        command = [sys.executable, "-m", __name__, "--job", job, "--endpoint", endpoint]
        if logging.getLogger("hookcast").isEnabledFor(logging.INFO):
            command.append("--verbose")
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,  # a Ctrl-C for the run is the run's: the relay ends with it
        )
        logger.info("the run lasts: Ray for its metrics starts in process %d", process.pid)
        return cls(process, errors)

    def send(self, deltas: dict) -> None:
        self._lines.put(orjson.dumps(deltas) + b"\n")

    def _write(self) -> None:
        stdin = self._process.stdin
        while (line := self._lines.get()) is not None:
            try:
                stdin.write(line)
                stdin.flush()
            except (BrokenPipeError, ValueError):
                return  # the relay is gone: close() says why
        stdin.close()

    def close(self) -> None:
        """Hand over the last line and close the relay's stdin: it records it and shuts its
        Ray down by itself (~0.6 s, measured), which the run does not wait for. A relay
        that has already failed (Ray did not start) is reported."""
        self._lines.put(None)
        self._writer.join(STOP_WAIT_S)
        code = self._process.poll()
        if code not in (None, 0):
            self._errors.seek(0)
            said = self._errors.read().decode("utf-8", "replace").strip().splitlines()
            logger.warning(
                "Ray for this run's metrics ended with exit code %s%s",
                code,
                f": {said[-1]}" if said else "",
            )
        self._errors.close()  # the relay keeps its own handle on the file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--metrics-port", type=int, help="Ray's metrics port (default: any)")
    args = parser.parse_args(argv)
    from hookcast.cluster.connect import connect, disconnect
    from hookcast.cluster.metrics import RunMetrics

    connect(None, verbose=args.verbose, prestart_workers=False, metrics_port=args.metrics_port)
    try:
        metrics = RunMetrics(args.job, args.endpoint)
        for line in sys.stdin.buffer:  # until the run closes it, or its process dies
            metrics.record(MetricDeltas(**orjson.loads(line)))
    finally:
        disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
