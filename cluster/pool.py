"""The port between the run coordinator and wherever its senders run. Plain Python, no Ray.

The coordinator decides; a ``SenderPool`` only moves work: it hands a list of
``BatchOrder`` for one chunk to sender ``i`` and later reports what became of that call —
its results, the sender lost (outcome unknown), or the chunk that could not be prepared.
The segment's chunks come through the pool too, as a ``Chunks`` stream. The Ray pool is
``cluster/sender_pool.py``; unit tests drive the coordinator with a fake one on a fake clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hookcast.actors.delivery import AttemptResult
from hookcast.actors.frozen import FrozenIds
from hookcast.actors.sender import BatchOrder

Chunk = object  # the pool's handle on one of the segment's chunks (opaque to the coordinator)
Call = Hashable  # the pool's handle on one submitted call


@dataclass(frozen=True, slots=True)
class Answered:
    """The sender answered: one result per order, in the orders' order."""

    results: list[AttemptResult]


@dataclass(frozen=True, slots=True)
class SenderLost:
    """The sender died (or its node did) during the call: the outcome is unknown."""

    error: str


@dataclass(frozen=True, slots=True)
class ChunkFailed:
    """The call raised: the chunk it carried could not be prepared (the segment failed), or
    something the sender needed failed. Sending it again would fail the same way."""

    error: str


CallOutcome = Answered | SenderLost | ChunkFailed


class Chunks(Protocol):
    """The segment's chunks for a run, in order, each holding the next ``per_chunk`` batches."""

    def next_ready(self) -> bool:
        """True when the next chunk can be taken without waiting."""

    def is_finished(self) -> bool:
        """True when every chunk has been taken."""

    def __next__(self) -> Chunk: ...


class SenderPool(Protocol):
    """The senders of one run, numbered ``0 .. size - 1``."""

    @property
    def size(self) -> int: ...

    def chunks(self, seqs: Sequence[int], per_chunk: int, window: int) -> Chunks:
        """Open the stream of chunks holding batches ``seqs`` (sorted), ``per_chunk`` batches
        a chunk, at most ``window`` chunks prepared ahead of the coordinator."""

    def submit(self, sender: int, chunk: Chunk, orders: Sequence[BatchOrder]) -> Call:
        """Hand ``orders`` (batches of ``chunk``) to sender ``sender``; returns at once."""

    def collect(self, calls: Sequence[Call], timeout_s: float) -> list[tuple[Call, CallOutcome]]:
        """Wait up to ``timeout_s`` for one of ``calls`` (not empty) to finish; return every
        finished one with its outcome ([] when none finished in time)."""


class RunPool(SenderPool, Protocol):
    """A sender pool as a run owns it: given the frozen audience once, ready before the
    clock starts, closed at the end. ``batches_per_call``: how many batches a call should
    carry when no rate is set (None: the job's ``chunk_batches``)."""

    batches_per_call: int | None

    def use_audience(self, frozen: FrozenIds) -> None:
        """The run's frozen ids, which the chunks are cut from."""

    def wait_ready(self) -> None:
        """Block until every sender can take a call."""

    def close(self) -> None:
        """Stop the senders and the segment."""
