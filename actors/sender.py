"""A sender: turns the batches of an Arrow chunk into request bodies and POSTs each once.

Retries are decided by the run's coordinator, which alone sees every sender, so limits hold
across the pool. Rendering is deterministic and ``sendTime`` is fixed per batch by the
coordinator, so a retry sends the same bytes whichever sender makes it.

With ``signing_keys`` every request is signed (Standard Webhooks v1, ``actors.signing``):
``webhook-id`` is the batch's Idempotency-Key, the timestamp and signature are made per
attempt over the uncompressed JSON; with ``compression="gzip"`` the signed bytes are then
gzipped by ISA-L (``isal``), level 1: on a 500-contact body 0.5 ms for 3.6x, where zlib
takes 2.5 ms for 3.5x at level 1 and 5.4 ms for 4.4x at level 6 (measured).
Connections go through the egress guard (``actors.egress``) with the endpoint's TLS trust
(``actors.tls``).

Headers and query values may hold ``#{auth.<id>.<key>}`` wildcards: the sender fills them
from its local copy of the tokens (see ``actors.token``), and never sends a request whose
token it could not get (fail closed). A 401 gets the token refreshed (once per token version
across all senders) and the batch sent again at once with the same key; a second 401 is the
batch's failure, not a loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from isal import isal_zlib

from hookcast.actors.aio_transport import AiohttpTransport, PostAnswer, guarded_aiohttp_transport
from hookcast.actors.auth import AuthorizationConfig, Token, TokenError, parse_template
from hookcast.actors.delivery import AttemptResult, Outcome, Part, classify, parse_retry_after
from hookcast.actors.egress import EgressPolicy, blocked_reason
from hookcast.actors.errors import cause_of
from hookcast.actors.parts import cut_to_fit, halves
from hookcast.actors.redact import redact
from hookcast.actors.render import ELEMENT_COLUMN, assemble_body
from hookcast.actors.signing import signed_headers
from hookcast.actors.tls import TlsConfig, ssl_context
from hookcast.actors.urls import display_url

RESPONSE_EXCERPT_BYTES = 1024
LATE_S = 0.01  # a request this far past its slot is handed back, not sent in a bunch
GZIP_LEVEL = 1


@dataclass(frozen=True, slots=True)
class BatchOrder:
    """One request to make: ledger row ``seq`` (batch ``batch`` of the chunk, or contacts
    ``part`` of it), with its key, as attempt ``attempt``.

    ``sent_at_ms`` is the batch's ``sendTime``, fixed by the coordinator at its first
    attempt: every retry, on any sender, rebuilds exactly the same bytes. A body larger than
    ``max_body_bytes`` is not sent: the result says how to cut it (``Outcome.SPLIT``)."""

    seq: int
    key: str
    attempt: int
    sent_at_ms: int
    send_at: float | None = None  # epoch s: its rate-limit slot; None: send at once
    batch: int | None = None  # the batch in the chunk (None: ``seq`` itself)
    part: tuple[int, int] | None = None  # (lo, hi): only these contacts of the batch
    max_body_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request's line and headers, before its body."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """One endpoint, as every sender of a run sees it."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()  # values may hold #{auth...} wildcards
    query: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 10.0
    max_connections: int = 8
    response_cap_bytes: int = 64 * 1024  # read no more of an answer than this
    secrets: frozenset[str] = field(default=frozenset(), repr=False)  # never echoed
    authorizations: tuple[AuthorizationConfig, ...] = field(default=(), repr=False)
    signing_keys: tuple[bytes, ...] = field(default=(), repr=False)  # decoded secrets
    compression: str = "none"  # or "gzip"
    tls: TlsConfig | None = field(default=None, repr=False)
    egress: EgressPolicy = field(default_factory=EgressPolicy)


class Sender:
    """Delivers batches to one endpoint over one keep-alive connection pool.

    ``tokens`` is an ``actors.auth.service.TokenClient`` (anything with its async
    ``tokens`` and ``refused``) when wildcards are used; ``transport`` replaces httpx's
    network transport (``httpx.MockTransport`` in tests); ``wall`` (epoch s) and ``sleep``
    are the clock a rate-limit slot is waited for on."""

    def __init__(
        self,
        config: SenderConfig,
        tokens=None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._tokens = tokens
        self._transport = transport
        self._wall = wall
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None
        self._direct: AiohttpTransport | None = None  # our own transport, posted to directly
        self._defaults: list[tuple[str, str]] = []
        self._timeouts: dict[str, float | None] = {}
        self._headers = [(n, parse_template(v, f"webhook.headers.{n}")) for n, v in config.headers]
        self._query = [(n, parse_template(v, f"webhook.query.{n}")) for n, v in config.query]
        needed: dict[str, set[str]] = {}
        for _, template in self._headers + self._query:
            for auth_id, key in template.references:
                needed.setdefault(auth_id, set()).add(key)
        self._keys = {auth_id: frozenset(keys) for auth_id, keys in needed.items()}
        self._auths = [a for a in config.authorizations if a.id in needed]
        self._outcomes: Counter[str] = Counter()  # attempts by outcome, for stats()
        self._contacts = 0  # contacts in requests answered 2xx
        self._in_flight = 0  # batches handed to this sender and not yet answered

    def _http(self) -> httpx.AsyncClient:
        # Created lazily: the client binds to the running event loop.
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self.config.max_connections,
                max_keepalive_connections=self.config.max_connections,
            )
            transport = self._transport or guarded_aiohttp_transport(
                EgressPolicy.for_node(self.config.egress),
                verify=ssl_context(self.config.tls),
                limits=limits,
            )
            self._client = httpx.AsyncClient(
                timeout=self.config.timeout_s,
                limits=limits,
                follow_redirects=False,
                transport=transport,
            )
            if isinstance(transport, AiohttpTransport):
                self._direct = transport
                # What the client would add to each request, and its timeouts by name.
                self._defaults = list(self._client.headers.items())
                self._timeouts = self._client.timeout.as_dict()
        return self._client

    async def _exchange(self, request: PreparedRequest, wire: bytes) -> PostAnswer:
        """POST ``wire``; the answer's status, headers and first ``response_cap_bytes``.
        Through our own aiohttp transport it goes straight to it, with the headers the
        client would add (~0.2 ms of CPU less a request); a given transport (a test's) gets
        it through the client."""
        client = self._http()
        cap = self.config.response_cap_bytes
        if self._direct is not None:
            given = {name.lower() for name, _ in request.headers}
            headers = [(n, v) for n, v in self._defaults if n not in given]
            headers.extend(request.headers)
            return await self._direct.post(request.url, headers, wire, self._timeouts, cap)
        async with client.stream(
            request.method, request.url, content=wire, headers=dict(request.headers)
        ) as response:
            head = await _read_capped(response, cap)
            return PostAnswer(response.status_code, response.headers, head)

    async def _current_tokens(self) -> dict[str, Token]:
        if not self._auths:
            return {}
        return await self._tokens.tokens(self._auths, self._keys, self._wall())

    def request_for(
        self,
        key: str,
        tokens: Mapping[str, Token],
        *,
        body: bytes | None = None,
        timestamp: int | None = None,
    ) -> PreparedRequest:
        """The method, URL (the webhook's own query kept, ``webhook.query`` merged in) and
        headers of a request carrying Idempotency-Key ``key``, wildcards filled from
        ``tokens``: exactly what a POST sends, and what ``hookcast preview`` shows. A signed
        request's signature is over ``body`` (the uncompressed JSON) at ``timestamp`` (Unix
        s, default now); without a body it shows ``v1,<redacted>``."""
        values: dict[tuple[str, str], str] = {}
        for token in tokens.values():
            values.update(token.wildcard_values())
        headers = {"Content-Type": "application/json"}
        if self.config.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        headers.update((name, template.render(values)) for name, template in self._headers)
        headers["Idempotency-Key"] = key
        if self.config.signing_keys:
            when = int(self._wall()) if timestamp is None else timestamp
            headers.update(signed_headers(self.config.signing_keys, key, when, body))
        url = httpx.URL(self.config.url)
        query = [(name, template.render(values)) for name, template in self._query]
        if query:
            url = url.copy_merge_params(query)  # keeps a query already in the URL
        return PreparedRequest("POST", str(url), tuple(headers.items()))

    async def deliver(self, chunk: pa.Table, orders: Sequence[BatchOrder]) -> list[AttemptResult]:
        """POST each ordered batch of ``chunk`` once, concurrently; never raises for HTTP
        trouble. Results come in ``orders`` order."""
        seqs = chunk.column("seq").to_numpy()
        elements = chunk.column(ELEMENT_COLUMN)
        # The ids name a part's first and last contact in the ledger (a chunk has them).
        ids = chunk.column("id") if "id" in chunk.column_names else pa.nulls(len(seqs), pa.int64())
        posts = []
        for order in orders:
            batch = order.seq if order.batch is None else order.batch
            start, end = np.searchsorted(seqs, [batch, batch + 1])
            lo, hi = order.part or (0, end - start)
            start, end = start + min(lo, end - start), start + min(hi, end - start)
            rows = slice(start, end)
            posts.append(self._post(order, elements[rows], ids[rows]))
        self._in_flight += len(posts)
        try:
            results = await asyncio.gather(*posts)
        finally:
            self._in_flight -= len(posts)
        for result in results:
            self._outcomes[result.outcome.value] += 1
            if result.outcome is Outcome.DELIVERED:
                self._contacts += result.contacts
        return results

    async def stats(self) -> dict[str, object]:
        """What this sender has done so far (for `hookcast status`)."""
        return {
            "in_flight": self._in_flight,
            "delivered_contacts": self._contacts,
            "attempts": dict(self._outcomes),
        }

    async def _post(
        self, order: BatchOrder, elements: pa.ChunkedArray, ids: pa.ChunkedArray
    ) -> AttemptResult:
        contacts = len(elements)
        if contacts == 0:
            return AttemptResult(
                order.seq,
                order.attempt,
                Outcome.EMPTY,
                None,
                0.0,
                0,
                0,
                error="none of its contacts are in the source any more",
            )
        if order.send_at is not None:
            wait = order.send_at - self._wall()
            if wait < -LATE_S:
                return AttemptResult(
                    order.seq,
                    order.attempt,
                    Outcome.LATE,
                    None,
                    0.0,
                    contacts,
                    0,
                    error="reached its sender after its slot",
                )
            await self._sleep(max(0.0, wait))
        body = assemble_body(elements, order.sent_at_ms)
        if order.max_body_bytes is not None and len(body) > order.max_body_bytes:
            return _too_large(order, elements, ids, len(body))
        wire = body
        if self.config.compression == "gzip":
            # Inline: ~0.5 ms, less than a hand-off to a thread costs (measured).
            wire = gzip_body(body)
        try:
            tokens = await self._current_tokens()
            result = await self._send(order, body, wire, contacts, tokens)
            if result.status == 401 and tokens:
                # The token was refused: one refresh (shared by all senders), one more try.
                for auth in self._auths:
                    tokens[auth.id] = await self._tokens.refused(auth, tokens[auth.id].version)
                if self.config.signing_keys:
                    await self._next_second()  # a new webhook-timestamp, a new signature
                result = await self._send(order, body, wire, contacts, tokens)
            if result.status == 413 and contacts > 1:
                # The body was too large for the endpoint: halves are tried next.
                base = order.part[0] if order.part else 0
                result = dataclasses.replace(result, parts=_parts(halves(0, contacts), ids, base))
        except TokenError as exc:
            outcome = Outcome.NO_TOKEN if exc.retryable else Outcome.TOKEN_FATAL
            return AttemptResult(
                order.seq,
                order.attempt,
                outcome,
                None,
                0.0,
                contacts,
                len(body),
                error=redact(str(exc), self.config.secrets)[:500],
            )
        return result

    async def _next_second(self) -> None:
        now = self._wall()
        await self._sleep(math.floor(now) + 1 - now)

    async def _send(
        self, order: BatchOrder, body: bytes, wire: bytes, contacts: int, tokens: dict[str, Token]
    ) -> AttemptResult:
        request = self.request_for(order.key, tokens, body=body)
        secrets = self.config.secrets | {
            value for token in tokens.values() for value in token.values.values()
        }
        started = time.perf_counter()
        status: int | None = None
        retry_after: float | None = None
        excerpt: str | None = None
        error: str | None = None
        timed_out = False
        try:
            answer = await self._exchange(request, wire)
            status = answer.status
            if not 200 <= status < 300:
                excerpt = answer.head[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace")
                retry_after = parse_retry_after(answer.headers.get("retry-after"), self._wall())
        except httpx.HTTPError as exc:
            error = _transport_error(exc, request.url)
            timed_out = isinstance(exc, httpx.TimeoutException)
            blocked = blocked_reason(exc)
            if blocked is not None:
                return AttemptResult(
                    order.seq, order.attempt, Outcome.BLOCKED, None, 0.0, contacts, 0, error=blocked
                )
        latency = time.perf_counter() - started
        outcome = classify(status)
        if error is None and outcome is not Outcome.DELIVERED:
            error = f"HTTP {status}"
        return AttemptResult(
            seq=order.seq,
            attempt=order.attempt,
            outcome=outcome,
            status=status,
            latency_s=latency,
            contacts=contacts,
            request_bytes=len(wire),
            retry_after_s=retry_after,
            error=None if error is None else redact(error, secrets)[:300],
            response_excerpt=None if excerpt is None else redact(excerpt, secrets),
            timed_out=timed_out,
            body_bytes=len(body),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = self._direct = None


def _parts(ranges: list[tuple[int, int]], ids: pa.ChunkedArray, base: int) -> tuple[Part, ...]:
    """``ranges`` (offsets in this request's contacts) as parts of the whole batch."""
    return tuple(
        Part(base + lo, base + hi, ids[lo].as_py(), ids[hi - 1].as_py()) for lo, hi in ranges
    )


def _too_large(
    order: BatchOrder, elements: pa.ChunkedArray, ids: pa.ChunkedArray, size: int
) -> AttemptResult:
    """A body over ``max_body_bytes``, not sent: how to cut it, or, for one contact, why
    it cannot be (it is dead-lettered alone)."""
    limit = order.max_body_bytes
    contacts = len(elements)
    if contacts == 1:
        return AttemptResult(
            order.seq,
            order.attempt,
            Outcome.OVERSIZE,
            None,
            0.0,
            1,
            0,
            error=(
                f"contact {ids[0].as_py()}'s body alone is {size:,} bytes, over "
                f"max_body_bytes {limit:,}: not sent"
            ),
            body_bytes=size,
        )
    sizes = pc.binary_length(elements).to_numpy(zero_copy_only=False)
    base = order.part[0] if order.part else 0
    return AttemptResult(
        order.seq,
        order.attempt,
        Outcome.SPLIT,
        None,
        0.0,
        contacts,
        0,
        body_bytes=size,
        parts=_parts(cut_to_fit(sizes, limit), ids, base),
    )


def gzip_body(body: bytes) -> bytes:
    compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)  # 31: gzip framing
    return compressor.compress(body) + compressor.flush()


def _transport_error(exc: httpx.HTTPError, url: str) -> str:
    """What went wrong without an answer; a certificate that fails verification says how
    to fix it (it fails the same way on every retry)."""
    cause = cause_of(exc, ssl.SSLCertVerificationError)
    if cause is not None:
        reason = cause.verify_message or cause.reason or str(cause)
        return (
            f"TLS certificate verification failed for {display_url(url)}: {reason}; trust its "
            "CA with webhook.tls.ca_bundle (or fix the endpoint's certificate)"
        )
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    """Up to ``cap`` bytes of the answer; the rest is dropped with the connection."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= cap:
            break
    return b"".join(chunks)[:cap]
