"""The sender pool in this process: an embedded run renders and sends where it was started.

On one machine a Ray actor per sender and one for the segment cost more than they give: every
chunk is pickled into the object store and out again, every call crosses three processes
(~0.6 ms of driver CPU a batch, ~1 ms of sender CPU a request, measured), and none of it can
start before Ray has. Here the segment renders on a thread of its own (DuckDB releases the
GIL while it works) a few chunks ahead, and one ``Sender`` posts on an asyncio loop in
another thread, so the first request leaves as soon as the audience is frozen; Ray, if the
run lasts, only records its metrics, in a process of its own (``cluster/metrics_relay.py``).
The coordinator is the same: it sees a ``SenderPool`` of one.

A cluster run (``--address``), or one that asks for ``--senders``, uses the Ray pool
(``cluster/sender_pool.py``) instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import queue
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from hookcast.actors.auth.service import InProcessTokenClient
from hookcast.actors.errors import last_line
from hookcast.actors.frozen import FrozenIds
from hookcast.actors.segment import Segment
from hookcast.actors.sender import BatchOrder, Sender
from hookcast.cluster.compile import RunPlan
from hookcast.cluster.pool import Answered, CallOutcome, ChunkFailed


@dataclass(frozen=True, slots=True)
class LocalChunk:
    """A chunk the segment rendered here, or why it could not be."""

    table: pa.Table | None
    error: BaseException | None = None


class LocalChunks:
    """The segment's chunks, rendered by a thread at most ``window`` chunks ahead."""

    def __init__(self, chunks: Generator[pa.Table, None, None], window: int) -> None:
        self._ready: queue.Queue[LocalChunk | None] = queue.Queue(maxsize=max(1, window))
        self._next: LocalChunk | None = None
        self._finished = False
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._render, args=(chunks,), name="hookcast-render", daemon=True
        )
        self._thread.start()

    def _render(self, chunks: Generator[pa.Table, None, None]) -> None:
        try:
            for table in chunks:
                if not self._put(LocalChunk(table)):
                    return
        except Exception as exc:  # the coordinator learns it from the call that carries it
            self._put(LocalChunk(None, exc))
        finally:
            chunks.close()  # on this thread: the scan's DuckDB cursor is closed here
        self._put(None)

    def _put(self, item: LocalChunk | None) -> bool:
        while not self._closing.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _peek(self) -> bool:
        if self._next is None and not self._finished:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                self._finished = True
            self._next = item
        return self._next is not None

    def next_ready(self) -> bool:
        return self._peek()

    def is_finished(self) -> bool:
        self._peek()
        return self._finished and self._next is None

    def __next__(self) -> LocalChunk:
        if not self._peek():
            raise StopIteration
        chunk, self._next = self._next, None
        return chunk

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=10)


class _EventLoopThread:
    """An asyncio loop running in a thread of its own, for the sender's coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="hookcast-send", daemon=True
        )
        self._thread.start()

    def submit(self, coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class LocalSenderPool:
    """One sender and the segment, in this process; ``close()`` stops both.

    Calls are ``concurrent.futures.Future``s. A sender here cannot be lost apart from this
    process; a call whose chunk failed to render reports ``ChunkFailed``."""

    size = 1
    # A call here costs microseconds, not Ray's milliseconds: each batch goes on its own, so
    # every answer frees a place in flight at once (8 a call waited for the slowest of 8;
    # measured on 1M contacts: sending 1.00x -> 1.04x the DuckDB route's rate).
    batches_per_call = 1

    def __init__(self, plan: RunPlan) -> None:
        # One DuckDB thread fewer than the cores: the sender and the coordinator need one.
        # On 2 cores, one renders ~400k contacts a second, ahead of the requests, for ~15%
        # less CPU than two (measured).
        threads = min(plan.segment.threads, max(1, (os.cpu_count() or 2) - 1))
        self.segment = Segment(dataclasses.replace(plan.segment, threads=threads))
        self._frozen: FrozenIds | None = None
        self._streams: list[LocalChunks] = []
        self._loop = _EventLoopThread()
        self._tokens = InProcessTokenClient() if plan.sender.authorizations else None
        self.sender = Sender(plan.sender, self._tokens)

    def use_audience(self, frozen: FrozenIds) -> None:
        self._frozen = frozen

    def wait_ready(self) -> None:
        """Nothing to wait for: the sender is this process."""

    def chunks(self, seqs: Sequence[int], per_chunk: int, window: int) -> LocalChunks:
        if self._frozen is None:
            raise RuntimeError("use_audience() must come before chunks()")
        stream = LocalChunks(self.segment.stream(self._frozen, seqs, per_chunk), window)
        self._streams.append(stream)
        return stream

    def submit(
        self, sender: int, chunk: LocalChunk, orders: Sequence[BatchOrder]
    ) -> concurrent.futures.Future:
        return self._loop.submit(self._deliver(chunk, list(orders)))

    async def _deliver(self, chunk: LocalChunk, orders: list[BatchOrder]):
        if chunk.error is not None:
            raise chunk.error
        return await self.sender.deliver(chunk.table, orders)

    async def _close_connections(self) -> None:
        await self.sender.close()
        if self._tokens is not None:
            await self._tokens.close()

    def collect(
        self, calls: Sequence[concurrent.futures.Future], timeout_s: float
    ) -> list[tuple[concurrent.futures.Future, CallOutcome]]:
        done, _ = concurrent.futures.wait(
            calls, timeout=timeout_s, return_when=concurrent.futures.FIRST_COMPLETED
        )
        return [(call, _outcome(call)) for call in calls if call in done]

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
        # A loop stuck or gone leaves its connections to the process's end.
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self._loop.submit(self._close_connections()).result(timeout=10)
        self._loop.close()
        self.segment.close()


def _outcome(call: concurrent.futures.Future) -> CallOutcome:
    try:
        return Answered(call.result())
    except Exception as exc:
        # The chunk could not be rendered, or something the sender needed failed:
        # sending it again would fail the same way.
        return ChunkFailed(last_line(exc))
