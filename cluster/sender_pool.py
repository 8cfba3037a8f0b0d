"""The sender pool on Ray: the one place on a run's path that calls ``ray.wait`` / ``ray.get``
and knows Ray's exception types.

A ``RaySenderPool`` owns a run's segment actor and sender actors (started together, so
their worker processes come up in parallel), streams the segment's chunks through the
object store and turns each sender call's fate into a ``cluster.pool.CallOutcome`` for the
coordinator.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from hookcast.actors.errors import last_line
from hookcast.actors.frozen import FrozenIds
from hookcast.actors.remote import start_segment, start_senders, stop_actors
from hookcast.actors.sender import BatchOrder
from hookcast.cluster.compile import RunPlan
from hookcast.cluster.connect import default_senders
from hookcast.cluster.pool import Answered, CallOutcome, ChunkFailed, SenderLost

logger = logging.getLogger(__name__)

_SENDER_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


class ChunkStream:
    """The segment's chunks for a run, pulled one actor call each, ``window`` ahead.

    A pull, not a streaming generator, because Ray Client (``--address ray://``) cannot carry
    streaming generators (measured: same speed here). Calls to one actor run in order, so
    the stream is opened before the first pull; the segment yields exactly one chunk per
    ``per_chunk`` wanted batches, so the number of pulls is known. The chunks stay in the
    object store: this process holds only their references."""

    def __init__(
        self,
        segment: ray.actor.ActorHandle,
        frozen: ray.ObjectRef,
        seqs: Sequence[int],
        per_chunk: int,
        window: int,
    ) -> None:
        self._segment = segment
        self._left = -(-len(seqs) // per_chunk)  # pulls not yet made
        self._pending: collections.deque[ray.ObjectRef] = collections.deque()
        if self._left:
            segment.open_stream.remote(frozen, list(seqs), per_chunk)
        for _ in range(min(window, self._left)):
            self._pull()

    def _pull(self) -> None:
        self._pending.append(self._segment.next_chunk.remote())
        self._left -= 1

    def next_ready(self) -> bool:
        return bool(self._pending) and bool(ray.wait([self._pending[0]], timeout=0)[0])

    def is_finished(self) -> bool:
        return not self._pending and not self._left

    def __next__(self) -> ray.ObjectRef:
        ref = self._pending.popleft()
        if self._left:
            self._pull()
        return ref


class RaySenderPool:
    """A run's segment and senders on Ray; ``close()`` stops them all.

    Calls are Ray object refs. A call whose sender died reports ``SenderLost`` (its batches'
    outcome is unknown); one whose chunk the segment failed to make reports ``ChunkFailed``."""

    batches_per_call = None  # the job's chunk_batches: a Ray call costs ~2.5 ms of CPU

    def __init__(self, plan: RunPlan, run_id: str, *, senders: int | None = None) -> None:
        self.segment = start_segment(plan.segment, name=f"hookcast/{run_id}/segment")
        self.senders = start_senders(
            plan.sender, count=senders or default_senders(), name_prefix=f"hookcast/{run_id}"
        )
        self._frozen: ray.ObjectRef | None = None

    @property
    def size(self) -> int:
        return len(self.senders)

    def use_audience(self, frozen: FrozenIds) -> None:
        """Put the frozen ids in the object store, once, for the segment's streams."""
        self._frozen = ray.put(frozen.to_array())

    def wait_ready(self) -> None:
        """Block until every sender is up: calls queued while they start would all leave at
        once and break the endpoint's rate limit."""
        ray.get([sender.__ray_ready__.remote() for sender in self.senders])

    def chunks(self, seqs: Sequence[int], per_chunk: int, window: int) -> ChunkStream:
        if self._frozen is None:
            raise RuntimeError("use_audience() must come before chunks()")
        return ChunkStream(self.segment, self._frozen, seqs, per_chunk, window)

    def submit(self, sender: int, chunk: ray.ObjectRef, orders: Sequence[BatchOrder]):
        return self.senders[sender].deliver.remote(chunk, list(orders))

    def collect(
        self, calls: Sequence[ray.ObjectRef], timeout_s: float
    ) -> list[tuple[ray.ObjectRef, CallOutcome]]:
        refs = list(calls)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return [(ref, self._outcome(ref)) for ref in ready]

    @staticmethod
    def _outcome(ref: ray.ObjectRef) -> CallOutcome:
        try:
            return Answered(ray.get(ref))
        except RayTaskError as exc:
            # The call raised: the segment failed to make its chunk, or an actor the sender
            # needed died (the error is then also an ActorDiedError, but the sender lives).
            return ChunkFailed(last_line(exc))
        except _SENDER_LOST as exc:
            return SenderLost(type(exc).__name__)

    def close(self) -> None:
        stop_actors([self.segment, *self.senders])
