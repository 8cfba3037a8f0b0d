"""The sender against ``httpx.MockTransport``: what it sends, and what each answer becomes."""

from __future__ import annotations

import asyncio
import math
from email.utils import formatdate

import httpx
import orjson
import pyarrow as pa
import pytest

from hookcast.actors.auth import AuthorizationConfig, Token
from hookcast.actors.delivery import AttemptResult, Outcome
from hookcast.actors.errors import TokenRequestError
from hookcast.actors.render import ELEMENT_COLUMN, SEND_TIME_PLACEHOLDER
from hookcast.actors.sender import BatchOrder, Sender, SenderConfig

WALL = 1_700_000_000.0
API_KEY = "k-secret-api-key-123"
URL = "http://hook.test/hook?src=crm"
SENT_AT_MS = 1_692_774_832_443
CRM = AuthorizationConfig(id="crm", url="http://auth.test/token", fingerprint="f1")


def chunk(batches: dict[int, int]) -> pa.Table:
    """A segment chunk: ``batches`` maps seq -> contacts (ids seq*100 + i)."""
    seqs, elements = [], []
    for seq, contacts in sorted(batches.items()):
        for i in range(contacts):
            seqs.append(seq)
            elements.append(
                f'{{"sendTime":{SEND_TIME_PLACEHOLDER},"contact":{{"id":{seq * 100 + i}}}}}'
            )
    return pa.table({"seq": pa.array(seqs, pa.int64()), ELEMENT_COLUMN: pa.array(elements)})


def order(seq: int = 0, *, send_at: float | None = None, attempt: int = 1) -> BatchOrder:
    return BatchOrder(seq, f"run-1-{seq:06d}", attempt, SENT_AT_MS, send_at)


class FakeWall:
    def __init__(self) -> None:
        self.now = WALL
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeTokens:
    """The async surface of actors.auth.service.TokenClient: ``tokens`` and ``refused``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.version = 1
        self.error = error
        self.refusals: list[tuple[str, int]] = []

    def _token(self) -> Token:
        values = {"access_token": f"tok-secret-{self.version}"}
        return Token("crm", values, fetched_at=WALL, expires_at=math.inf, version=self.version)

    async def tokens(self, auths, keys, now: float) -> dict[str, Token]:
        if self.error:
            raise self.error
        assert [a.id for a in auths] == ["crm"] and keys == {"crm": frozenset({"access_token"})}
        return {"crm": self._token()}

    async def refused(self, auth: AuthorizationConfig, version: int) -> Token:
        self.refusals.append((auth.id, version))
        self.version = version + 1
        return self._token()


def make_sender(handler, *, tokens=None, wall=None, **config) -> tuple[Sender, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request):
        seen.append(request)
        return handler(request)

    headers = [("X-Api-Key", API_KEY)]
    if tokens is not None:
        headers.append(("Authorization", "Bearer #{auth.crm.access_token}"))
        config.setdefault("authorizations", (CRM,))
    config.setdefault("secrets", frozenset({API_KEY}))
    sender = Sender(
        SenderConfig(url=URL, headers=tuple(headers), query=(("campaign", "double11"),), **config),
        tokens,
        transport=httpx.MockTransport(record),
        wall=wall or FakeWall(),
        sleep=(wall or FakeWall()).sleep,
    )
    return sender, seen


def deliver(sender: Sender, table: pa.Table, orders: list[BatchOrder]) -> list[AttemptResult]:
    async def go() -> list[AttemptResult]:
        try:
            return await sender.deliver(table, orders)
        finally:
            await sender.close()

    return asyncio.run(go())


class Body(httpx.AsyncByteStream):
    """An answer body streamed as a real connection streams it (``content=`` bytes would be
    read in full up front, which no network answer is)."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    async def __aiter__(self):
        if self.data:
            yield self.data


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    return httpx.Response(status, headers=headers, stream=Body(body))


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    return lambda request: reply(status, body, headers)


# -- the request ------------------------------------------------------------------------------


def test_the_request_carries_the_key_the_query_the_headers_and_the_body() -> None:
    sender, seen = make_sender(answer(200))
    [result] = deliver(sender, chunk({0: 3}), [order(0)])

    assert result.outcome is Outcome.DELIVERED and result.contacts == 3
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "http://hook.test/hook?src=crm&campaign=double11"
    assert request.headers["Idempotency-Key"] == "run-1-000000"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Api-Key"] == API_KEY
    body = orjson.loads(request.content)
    assert [e["contact"]["id"] for e in body] == [0, 1, 2]
    assert {e["sendTime"] for e in body} == {SENT_AT_MS}
    prepared = sender.request_for("run-1-000000", {})
    assert (prepared.method, prepared.url) == (request.method, str(request.url))
    assert all(request.headers[name] == value for name, value in prepared.headers)


def test_each_batch_of_a_chunk_is_posted_once_and_results_keep_the_orders_order() -> None:
    sender, seen = make_sender(answer(200))
    results = deliver(sender, chunk({3: 2, 4: 1, 5: 4}), [order(5), order(3), order(4)])

    assert [(r.seq, r.contacts) for r in results] == [(5, 4), (3, 2), (4, 1)]
    assert sorted(r.headers["Idempotency-Key"] for r in seen) == [
        "run-1-000003",
        "run-1-000004",
        "run-1-000005",
    ]


def test_a_batch_with_no_contacts_left_is_empty_and_not_sent() -> None:
    sender, seen = make_sender(answer(200))
    [result] = deliver(sender, chunk({1: 2}), [order(0)])
    assert (result.outcome, seen) == (Outcome.EMPTY, [])


# -- what an answer means -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (299, Outcome.DELIVERED),
        (301, Outcome.RETRY),
        (308, Outcome.RETRY),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
        (410, Outcome.GONE),
        (400, Outcome.DEAD),
        (401, Outcome.DEAD),
        (404, Outcome.DEAD),
        (413, Outcome.DEAD),
        (501, Outcome.DEAD),
        (505, Outcome.DEAD),
        (999, Outcome.DEAD),
    ],
)
def test_each_status_becomes_its_outcome(status: int, outcome: Outcome) -> None:
    headers = {"Location": "http://hook.test/elsewhere"} if 300 <= status < 400 else {}
    sender, seen = make_sender(answer(status, b'{"why":"x"}', headers))
    [result] = deliver(sender, chunk({0: 2}), [order(0)])

    assert (result.outcome, result.status) == (outcome, status)
    assert len(seen) == 1, "a redirect was followed or a request repeated"
    if outcome is Outcome.DELIVERED:
        assert (result.error, result.response_excerpt) == (None, None)
    else:
        assert (result.error, result.response_excerpt) == (f"HTTP {status}", '{"why":"x"}')


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (formatdate(WALL + 120, usegmt=True), 120.0),
        (formatdate(WALL - 30, usegmt=True), 0.0),
        ("abc", None),
        ("-5", None),
    ],
    ids=["seconds", "http-date", "past-date", "garbage", "negative"],
)
def test_retry_after_is_read_in_seconds_or_as_a_date_on_the_senders_clock(header, seconds) -> None:
    sender, _ = make_sender(answer(429, headers={"Retry-After": header}))
    [result] = deliver(sender, chunk({0: 1}), [order(0)])
    assert result.outcome is Outcome.RETRY
    assert result.retry_after_s == (None if seconds is None else pytest.approx(seconds))


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("connection refused"), httpx.ReadTimeout("timed out")],
    ids=["connection-error", "timeout"],
)
def test_no_answer_is_retried_with_the_error_named(error: httpx.HTTPError) -> None:
    def fail(request: httpx.Request):
        raise error

    sender, _ = make_sender(fail)
    [result] = deliver(sender, chunk({0: 1}), [order(0)])
    assert (result.outcome, result.status) == (Outcome.RETRY, None)
    assert result.error == f"{type(error).__name__}: {error}"


def test_a_huge_answer_is_read_only_up_to_the_response_cap() -> None:
    piece = b"x" * 16 * 1024
    produced: list[int] = []

    async def endless():
        for _ in range(10_000):  # 160 MB if read in full
            produced.append(len(piece))
            yield piece

    sender, _ = make_sender(lambda request: httpx.Response(500, content=endless()))
    [result] = deliver(
        sender,
        chunk({0: 1}),
        [order(0)],
    )

    cap = sender.config.response_cap_bytes
    assert sum(produced) <= cap + len(piece)
    assert result.outcome is Outcome.RETRY and len(result.response_excerpt or "") == 1024


def test_secrets_never_reach_the_error_or_the_excerpt() -> None:
    tokens = FakeTokens()
    echo = f"bad key {API_KEY}, bad token tok-secret-1".encode()
    sender, _ = make_sender(answer(403, echo), tokens=tokens)
    [result] = deliver(sender, chunk({0: 1}), [order(0)])
    assert result.response_excerpt == "bad key ***, bad token ***"

    def fail(request: httpx.Request):
        raise httpx.ConnectError(f"cannot reach {API_KEY}")

    sender, _ = make_sender(fail)
    [result] = deliver(sender, chunk({0: 1}), [order(0)])
    assert result.error == "ConnectError: cannot reach ***"


# -- rate-limit slots -----------------------------------------------------------------------------


def test_a_request_waits_at_its_sender_for_its_slot() -> None:
    wall = FakeWall()
    sent_at: list[float] = []

    def stamp(request: httpx.Request):
        sent_at.append(wall.now)
        return reply(200)

    sender, _ = make_sender(stamp, wall=wall)
    [result] = deliver(sender, chunk({0: 1}), [order(0, send_at=WALL + 0.08)])
    assert result.outcome is Outcome.DELIVERED
    assert wall.slept == [pytest.approx(0.08)] and sent_at == [pytest.approx(WALL + 0.08)]


def test_a_request_that_reaches_its_sender_after_its_slot_is_handed_back_late() -> None:
    sender, seen = make_sender(answer(200))
    [result] = deliver(sender, chunk({0: 1}), [order(0, send_at=WALL - 0.05)])
    assert (result.outcome, seen) == (Outcome.LATE, [])


# -- tokens ---------------------------------------------------------------------------------------


def _bearer_401(*refused: str):
    def check(request: httpx.Request):
        bearer = request.headers.get("Authorization")
        return reply(401 if bearer in refused else 200)

    return check


def test_a_401_refreshes_the_token_once_and_tries_once_more_with_the_same_key() -> None:
    tokens = FakeTokens()
    sender, seen = make_sender(_bearer_401("Bearer tok-secret-1"), tokens=tokens)
    [result] = deliver(sender, chunk({0: 1}), [order(0)])

    assert (result.outcome, result.status) == (Outcome.DELIVERED, 200)
    assert tokens.refusals == [("crm", 1)]
    assert [r.headers["Authorization"] for r in seen] == [
        "Bearer tok-secret-1",
        "Bearer tok-secret-2",
    ]
    assert {r.headers["Idempotency-Key"] for r in seen} == {"run-1-000000"}
    assert seen[0].content == seen[1].content


def test_a_second_401_is_the_batchs_failure_not_a_loop() -> None:
    tokens = FakeTokens()
    sender, seen = make_sender(
        _bearer_401("Bearer tok-secret-1", "Bearer tok-secret-2"), tokens=tokens
    )
    [result] = deliver(sender, chunk({0: 1}), [order(0)])

    assert (result.outcome, result.status) == (Outcome.DEAD, 401)
    assert tokens.refusals == [("crm", 1)] and len(seen) == 2


def test_a_401_without_tokens_is_not_retried() -> None:
    sender, seen = make_sender(answer(401))
    [result] = deliver(sender, chunk({0: 1}), [order(0)])
    assert (result.outcome, len(seen)) == (Outcome.DEAD, 1)


@pytest.mark.parametrize(
    ("retryable", "outcome"), [(True, Outcome.NO_TOKEN), (False, Outcome.TOKEN_FATAL)]
)
def test_no_token_means_no_request(retryable: bool, outcome: Outcome) -> None:
    error = TokenRequestError("crm", f"crm: the token endpoint refused {API_KEY}", retryable)
    sender, seen = make_sender(answer(200), tokens=FakeTokens(error))
    [result] = deliver(sender, chunk({0: 1}), [order(0)])
    assert (result.outcome, seen) == (outcome, [])
    assert result.error == "crm: the token endpoint refused ***"
