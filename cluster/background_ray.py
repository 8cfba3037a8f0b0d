"""Ray started beside a run, and only once the run is worth it.

An embedded run delivers in its own process (``cluster/local_pool.py``) and needs its Ray
only for the metrics Ray exports (every 10 s, to the Prometheus the README describes). A
run that ends within seconds would show in them not at all, and starting Ray costs ~3 CPU-s
and ~2 s of a 2-core machine (measured), so it starts when the run, at its pace so far, has
long enough left (``worth_starting``): ``ray.init`` then runs on a thread of its own while
the run sends, and the same thread shuts Ray down at the end. It must be the same thread:
Ray's driver shutdown called from another thread than its ``init`` blocks for 15 s
(measured, Ray 2.60). ``init`` off the main thread sets no SIGTERM handler, which the CLI's
own handlers make unneeded. This module imports no Ray: the thread does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

# A run starts its Ray once it has sent for this long ...
SENDING_BEFORE_S = 1.0
# ... if it still has this long to go at its pace so far: Ray starts in ~2 s and exports
# every 10 s, so a shorter rest would reach Prometheus barely if at all.
LEFT_AT_LEAST_S = 10.0


def worth_starting(sending_s: float, done: int, total: int) -> bool:
    """Whether a run that has sent ``done`` of its ``total`` contacts in ``sending_s``
    seconds will last long enough for its metrics to be worth starting Ray for."""
    if sending_s < SENDING_BEFORE_S or done >= total:
        return False
    if done <= 0:
        return True  # nothing delivered after a second: a slow endpoint, a long run
    return (total - done) * sending_s / done >= LEFT_AT_LEAST_S


class _NotMainThreadWarning(logging.Filter):
    """Ray's "SIGTERM handler is not set" warning: expected here, not the user's concern."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


class BackgroundRay:
    """``connect()`` on a thread of its own once ``start()`` is called, then ``disconnect()``
    on that thread when ``stop()`` is. Call ``stop()`` before the process exits: a Ray left
    half-started would have no watchdog yet, one left up would be shut down from the main
    thread."""

    def __init__(self, connect: Callable[[], object], disconnect: Callable[[], object]) -> None:
        self._connect, self._disconnect = connect, disconnect
        self.error: BaseException | None = None
        self._up = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start Ray on the thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._life, name="hookcast-ray", daemon=True)
                self._thread.start()

    def _life(self) -> None:
        quiet = _NotMainThreadWarning()
        ray_logger = logging.getLogger("ray._private.worker")
        ray_logger.addFilter(quiet)
        try:
            self._connect()
        except BaseException as exc:  # reported by stop(), on the caller's thread
            self.error = exc
        finally:
            ray_logger.removeFilter(quiet)
            self._up.set()
        self._stopping.wait()
        if self.error is None:
            self._disconnect()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until a started Ray is up or failed to start (``error``); False on timeout
        or when it was never started."""
        return self.started and self._up.wait(timeout_s)

    def stop(self) -> BaseException | None:
        """Shut a started Ray down (after it has finished starting); the error if it failed
        to start. Nothing starts afterwards."""
        with self._lock:
            self._stopping.set()
            thread = self._thread
        if thread is not None:
            thread.join()
        return self.error


def embedded_ray(*, verbose: bool = False) -> BackgroundRay:
    """This process's embedded Ray, to start beside a run that delivers here: no idle
    workers ahead (nothing runs on it), shut down on the thread that started it."""

    def start() -> None:
        from hookcast.cluster.connect import connect

        connect(None, verbose=verbose, prestart_workers=False)

    def stop() -> None:
        from hookcast.cluster.connect import disconnect

        disconnect()

    return BackgroundRay(start, stop)
