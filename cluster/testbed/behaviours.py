"""What the receiver (`sink.py`) answers: a *behaviour* decides the reply to each broadcast
request, from always-200 to injected failures, latency and a sliding-window rate limit."""

from __future__ import annotations

import dataclasses
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

_OK_BODY = b'{"ok":true}'


@dataclass(frozen=True, slots=True)
class Reply:
    """How the sink answers one broadcast; the answer is sent after sleeping ``delay_s``."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = _OK_BODY
    delay_s: float = 0.0


OK = Reply()


@dataclass(frozen=True, slots=True)
class Request:
    """What a behaviour sees of a broadcast; ``n`` counts arrivals from 1 since the last reset.

    Only a broadcast the sink accepted is seen: its body decoded (a gzip body decompressed;
    ``headers`` still say how it came), its signature verified when the sink holds secrets.
    """

    path: str
    query: str
    headers: dict[str, str]  # lower-cased names, as received
    key: str | None
    ids: tuple[int, ...]
    body: bytes  # after Content-Encoding: the JSON the sender wrote (and signed)
    n: int


Behaviour = Callable[[Request], Reply | Awaitable[Reply]]


def accept(request: Request) -> Reply:
    """Answer 200 to everything: the default behaviour."""
    return OK


def fail_rate(p: float, status: int = 500, seed: int | None = None) -> Behaviour:
    """Answer ``status`` to a random fraction ``p`` of requests, 200 to the rest."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"fail rate {p} is out of range: give a fraction from 0 to 1.")
    rng = random.Random(seed)
    failure = Reply(status, body=orjson.dumps({"error": f"injected failure {status}"}))

    def behaviour(request: Request) -> Reply:
        return failure if rng.random() < p else OK

    return behaviour


def latency(ms: float) -> Behaviour:
    """Answer 200 after ``ms`` milliseconds."""
    if ms < 0:
        raise ValueError(f"latency {ms} ms is negative: give 0 or more milliseconds.")
    reply = Reply(delay_s=ms / 1000)
    return lambda request: reply


def rate_limited(
    rps: float, retry_after: str = "1", clock: Callable[[], float] = time.monotonic
) -> Behaviour:
    """Answer 200 to at most ``rps`` requests in any sliding 1-second window, 429 above it.

    A 429 carries ``Retry-After: retry_after`` and does not count against the window.
    """
    if rps <= 0:
        raise ValueError(f"rate limit {rps} requests/s is not positive: give more than 0.")
    accepted: deque[float] = deque()
    limited = Reply(429, headers=(("Retry-After", retry_after),), body=b'{"error":"rate limited"}')

    def behaviour(request: Request) -> Reply:
        now = clock()
        while accepted and now - accepted[0] >= 1.0:
            accepted.popleft()
        if len(accepted) >= rps:
            return limited
        accepted.append(now)
        return OK

    return behaviour


def compose(*behaviours: Behaviour) -> Behaviour:
    """Ask each behaviour in order: the first non-2xx reply wins (later ones are not asked),
    otherwise the last reply; delays add up."""

    async def behaviour(request: Request) -> Reply:
        reply, delay_s = OK, 0.0
        for each in behaviours:
            reply = await ask(each, request)
            delay_s += reply.delay_s
            if not 200 <= reply.status < 300:
                break
        return dataclasses.replace(reply, delay_s=delay_s)

    return behaviour


def make_behaviour(
    *,
    failure_rate: float = 0.0,
    latency_ms: float = 0.0,
    rps: float | None = None,
    seed: int | None = None,
) -> Behaviour:
    """The behaviour the command-line options describe: rate limit, then latency, then
    failures; `accept` when no option is set."""
    parts: list[Behaviour] = []
    if rps is not None:
        parts.append(rate_limited(rps))
    if latency_ms:
        parts.append(latency(latency_ms))
    if failure_rate:
        parts.append(fail_rate(failure_rate, seed=seed))
    if not parts:
        return accept
    return parts[0] if len(parts) == 1 else compose(*parts)


async def ask(behaviour: Behaviour, request: Request) -> Reply:
    """The reply of ``behaviour``, awaited when it is a coroutine."""
    reply = behaviour(request)
    return reply if isinstance(reply, Reply) else await reply
