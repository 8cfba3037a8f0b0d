"""What an HTTP answer means for a batch, and when to try again. Plain Python, no Ray.

The retry table (also in the README):

    answer                                   outcome
    2xx (200..299)                           DELIVERED
    408, 429, 500, 502, 503, 504             RETRY, after Retry-After (clamped) or backoff
    connection error, timeout                RETRY, after backoff
    410 Gone                                 GONE: stop sending to the endpoint, skip the rest
    413 (more than one contact)              DEAD, with the halves to send instead (a split)
    3xx (redirects are not followed)         RETRY, counted as a failure
    any other 4xx, 501, other 5xx, >= 600    DEAD: dead-lettered at once
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"  # the endpoint acknowledged the batch
    RETRY = "retry"  # worth another attempt with the same key and bytes
    DEAD = "dead"  # retrying cannot help: dead-letter the batch
    GONE = "gone"  # 410: the endpoint is gone for good, stop the run
    EMPTY = "empty"  # nothing to send: the batch's contacts have all left the source
    NO_TOKEN = "no_token"  # not sent: the token endpoint is failing for now; try again later
    TOKEN_FATAL = "token_fatal"  # not sent: the authorization cannot give a token as defined
    LATE = "late"  # not sent: it reached its sender after its rate-limit slot had passed
    BLOCKED = "blocked"  # not sent: the egress guard refuses the address the host resolves to
    # not sent: its body would pass max_body_bytes; the result's ``parts`` say where to cut
    SPLIT = "split"
    OVERSIZE = "oversize"  # not sent: one contact's body alone passes max_body_bytes


# What reached the endpoint; the other outcomes were handed back unsent.
SENT = frozenset({Outcome.DELIVERED, Outcome.RETRY, Outcome.DEAD, Outcome.GONE})


def classify(status: int | None) -> Outcome:
    """Outcome of one attempt; ``None`` means no HTTP answer (connection error, timeout)."""
    if status is None:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.GONE
    if status in RETRYABLE_STATUSES or 300 <= status < 400:
        return Outcome.RETRY
    return Outcome.DEAD


def parse_retry_after(value: str | None, now_epoch_s: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date).

    Garbage, and negative values, give None: the caller falls back to its backoff."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_epoch_s)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a batch gets and how long to wait between them."""

    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Wait before attempt ``attempt + 1``: the server's Retry-After if it gave one
        (clamped to ``retry_after_max_s``), else exponential backoff with full jitter."""
        if retry_after_s is not None:
            return min(retry_after_s, self.retry_after_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One POST of one batch, as a sender reports it (picklable; never an httpx object)."""

    seq: int
    attempt: int
    outcome: Outcome
    status: int | None  # HTTP status, None when no answer came
    latency_s: float
    contacts: int
    request_bytes: int
    retry_after_s: float | None = None
    error: str | None = None  # why it failed, short and redacted
    response_excerpt: str | None = None  # first 1 KB of a failed answer
    timed_out: bool = False  # no answer within webhook.timeout_s
    body_bytes: int = 0  # the JSON body's size, before any compression
    # How to cut the batch (SPLIT, or a 413 of more than one contact): parts in order
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True, slots=True)
class Part:
    """Contacts ``lo .. hi - 1`` of a batch (offsets among its elements, in frozen order),
    the first and last contact's ids for people reading the ledger."""

    lo: int
    hi: int
    first_id: int | None = None
    last_id: int | None = None
