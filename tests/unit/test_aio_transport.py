"""The aiohttp transport over real sockets on 127.0.0.1, both ways in: through an httpx
client, and posted to directly (``post``, the sender's hot path). The guard refuses before
any connection and connects to the addresses it checked; TLS, timeouts, the pool and the
answer behave as the sender needs; errors come out as httpx's. Last, a sender over it: the
headers that arrive, and what a 429 becomes."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import orjson
import pyarrow as pa
import pytest
import trustme

from hookcast.actors.aio_transport import AiohttpTransport, PostAnswer, guarded_aiohttp_transport
from hookcast.actors.delivery import AttemptResult, Outcome
from hookcast.actors.egress import EgressBlockedError, EgressPolicy, Resolver, blocked_reason
from hookcast.actors.errors import cause_of
from hookcast.actors.render import ELEMENT_COLUMN, SEND_TIME_PLACEHOLDER
from hookcast.actors.sender import BatchOrder, Sender, SenderConfig
from hookcast.actors.tls import TlsConfig, ssl_context
from hookcast.cluster.testbed.sink import OK, Reply, Request, Sink, SinkTls
from tests.ports import accepted

DEFAULT = EgressPolicy()
PUBLIC_ONLY = EgressPolicy(public_only=True)
ALWAYS = "always blocked; list it in egress.allow to reach it"
BY_ENV = "blocked by HOOKCAST_EGRESS=public-only; list it in egress.allow to reach it"
WAIT_S = 10.0  # the most any wait for something that must happen may take
# Idle connections outlive any wait: a close seen within WAIT_S is not keep-alive's expiry.
LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8, keepalive_expiry=3 * WAIT_S)
CAP = 64 * 1024  # how much of an answer is posted for (the sender's response_cap_bytes)
OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def transport(
    policy: EgressPolicy = DEFAULT,
    *,
    limits: httpx.Limits = LIMITS,
    verify: ssl.SSLContext | None = None,
    resolver: Resolver | None = None,
) -> AiohttpTransport:
    return guarded_aiohttp_transport(
        policy, verify=verify or ssl_context(None), limits=limits, resolver=resolver
    )


def client(policy: EgressPolicy = DEFAULT, *, timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport(policy), timeout=timeout)


@pytest.fixture(params=["client", "posted"], ids=["through-client", "posted-directly"])
def way(request: pytest.FixtureRequest) -> str:
    """The two ways into the transport: an httpx client over it, or its own ``post``."""
    return request.param


class Poster:
    """A fresh transport, and one ``way`` into it: POSTs through an httpx client over it, or
    to its ``post`` as the sender does (the client's timeouts, ``CAP``); either way the
    answer as a `PostAnswer`. The transport is closed when the ``async with`` ends."""

    def __init__(
        self,
        way: str,
        policy: EgressPolicy = DEFAULT,
        *,
        timeout: httpx.Timeout | float = 5.0,
        limits: httpx.Limits = LIMITS,
        verify: ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.transport = transport(policy, limits=limits, verify=verify, resolver=resolver)
        self.timeout = httpx.Timeout(timeout)
        self._client: httpx.AsyncClient | None = None
        if way == "client":
            self._client = httpx.AsyncClient(transport=self.transport, timeout=self.timeout)

    async def post(
        self, url: str, body: bytes = b"x", headers: Sequence[tuple[str, str]] = ()
    ) -> PostAnswer:
        if self._client is None:
            return await self.transport.post(url, headers, body, self.timeout.as_dict(), CAP)
        response = await self._client.post(url, content=body, headers=list(headers))
        return PostAnswer(response.status_code, response.headers, response.content)

    async def __aenter__(self) -> Poster:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await (self._client or self.transport).aclose()


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


# Servers: a listening socket that only counts, and HTTP/1.1 ones in the test's own loop.


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Served:
    port: int = 0
    accepted: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # a connection ended

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Served]:
    """Serve ``handler`` per connection; its connections are cancelled at the end."""
    served = Served()
    tasks: set[asyncio.Task] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.accepted += 1
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            served.closed.set()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    served.port = server.sockets[0].getsockname()[1]
    try:
        yield served
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> tuple[list[tuple[str, str]], bytes]:
    """One request's header lines, in order, and its body (by Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:-2]
    headers = [(name.strip(), value.strip()) for name, value in (ln.split(":", 1) for ln in lines)]
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    return headers, await reader.readexactly(length)


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:  # keep-alive: until the client closes
        await read_request(reader)
        writer.write(OK_ANSWER)
        await writer.drain()


@pytest.fixture(scope="module")
def module_sink() -> Iterator[Sink]:
    with Sink() as sink:
        yield sink


@pytest.fixture
def sink(module_sink: Sink) -> Iterator[Sink]:
    """The project's receiver on 127.0.0.1, shared by the module: each test sets its
    behaviour, and finds nothing received before it."""
    module_sink.recorder.reset()
    yield module_sink
    module_sink.behaviour = None


def recording(arrived: list[list[tuple[str, str]]]) -> Handler:
    """A server like `answer_ok` that keeps each request's header lines in ``arrived``."""

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            headers, _ = await read_request(reader)
            arrived.append(headers)
            writer.write(OK_ANSWER)
            await writer.drain()

    return record


def large_then_ok(large: bytes) -> Handler:
    """A server that answers its first request of all with ``large``, any later one "ok"."""
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(large) + large, OK_ANSWER]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answers[0] if len(answers) == 1 else answers.pop(0))
            await writer.drain()

    return answer


# The guard: refused before any connection, with egress.py's messages.


def refusal(way: str, policy: EgressPolicy, url: str, resolver: Resolver | None = None) -> str:
    async def post() -> None:
        async with Poster(way, policy, resolver=resolver) as poster:
            await poster.post(url)

    with pytest.raises(httpx.ConnectError) as caught:
        run(post())
    assert isinstance(caught.value.__cause__, EgressBlockedError)
    assert blocked_reason(caught.value) == str(caught.value)
    return str(caught.value)


def test_a_literal_address_is_refused_before_connecting(listener: socket.socket, way: str) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    assert refusal(way, PUBLIC_ONLY, url) == (
        f"127.0.0.1 is a loopback address ({BY_ENV}): no connection was made"
    )
    assert accepted(listener) == 0


def test_a_name_is_refused_for_what_it_resolves_to(listener: socket.socket, way: str) -> None:
    url = f"http://localhost:{listener.getsockname()[1]}/"  # real DNS
    message = refusal(way, PUBLIC_ONLY, url)
    assert message.startswith(("localhost resolves to 127.0.0.1, ", "localhost resolves to ::1, "))
    assert message.endswith(f", a loopback address ({BY_ENV}): no connection was made")
    assert accepted(listener) == 0


def test_a_mixed_answer_is_refused(listener: socket.socket, way: str) -> None:
    port = listener.getsockname()[1]

    def resolver(host: str, port_asked: int) -> list[str]:
        assert (host, port_asked) == ("hooks.test", port)
        return ["127.0.0.1", "169.254.169.254"]

    assert refusal(way, DEFAULT, f"http://hooks.test:{port}/", resolver) == (
        f"hooks.test resolves to 169.254.169.254, a cloud metadata address ({ALWAYS}): "
        "no connection was made"
    )
    assert accepted(listener) == 0


@pytest.mark.parametrize("host", ["2130706433", "127.1", "[::ffff:127.0.0.1]"])
def test_a_host_aiohttp_takes_for_an_address_is_checked_first(
    listener: socket.socket, way: str, host: str
) -> None:
    # aiohttp connects to these without asking the resolver.
    message = refusal(way, PUBLIC_ONLY, f"http://{host}:{listener.getsockname()[1]}/")
    assert "127.0.0.1" in message and "a loopback address" in message
    assert accepted(listener) == 0


def test_a_dotted_number_that_is_no_address_is_refused(listener: socket.socket, way: str) -> None:
    async def post() -> None:
        async with Poster(way) as poster:
            await poster.post(f"http://1.2.3.4.5:{listener.getsockname()[1]}/")

    with pytest.raises(
        httpx.ConnectError, match=r"^1\.2\.3\.4\.5 looks like an address but is not"
    ):
        run(post())
    assert accepted(listener) == 0


def test_a_name_is_resolved_once_and_connected_to_by_its_checked_address(
    monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    asked: list[tuple[str, int]] = []
    arrived: list[list[tuple[str, str]]] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        assert host not in ("hooks.test", b"hooks.test"), "the name was looked up again"
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.2", "127.0.0.1"]  # nothing listens on 127.0.0.2: refused, then .1

    async def post() -> tuple[int, bytes]:
        async with serving(recording(arrived)) as served:
            monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
            async with Poster(way, resolver=resolver) as poster:
                answer = await poster.post(f"http://hooks.test:{served.port}/hook")
            return served.accepted, answer.head

    assert run(post()) == (1, b"ok")
    port = asked[0][1]
    assert asked == [("hooks.test", port)]
    assert [v for headers in arrived for k, v in headers if k.lower() == "host"] == [
        f"hooks.test:{port}"
    ]


def test_an_unreachable_address_is_a_connect_error_not_a_refusal(way: str) -> None:
    async def post() -> None:
        async with Poster(way, resolver=lambda h, p: ["127.0.0.2"]) as poster:
            await poster.post("http://hooks.test:9/")  # nothing listens on 127.0.0.2:9

    with pytest.raises(httpx.ConnectError) as caught:
        run(post())
    assert blocked_reason(caught.value) is None
    assert not any(isinstance(e, aiohttp.ClientError) for e in chain(caught.value))


def test_a_name_without_addresses_is_a_connect_error(
    monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        assert host in ("unknown.test", b"unknown.test")
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def post(url: str, resolver: Resolver | None) -> None:
        async with Poster(way, resolver=resolver) as poster:
            await poster.post(url)

    with pytest.raises(httpx.ConnectError, match=r"^hooks\.test resolves to no address$"):
        run(post("http://hooks.test:9/", lambda h, p: []))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # no DNS server is asked
    with pytest.raises(httpx.ConnectError, match="Name or service not known") as caught:
        run(post("http://unknown.test/", None))
    assert blocked_reason(caught.value) is None


# TLS: the given context, and the URL's host name for SNI and verification.


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_sink(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    folder: Path = tmp_path_factory.mktemp("tls")
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    server.private_key_pem.write_to_path(str(folder / "key.pem"))
    with Sink(tls=SinkTls(str(folder / "cert.pem"), str(folder / "key.pem"))) as sink:
        yield sink


def test_an_untrusted_certificate_is_a_connect_error_with_the_tls_error(
    tls_sink: Sink, way: str
) -> None:
    async def post() -> None:
        async with Poster(way) as poster:  # the system's trust store: not the test CA
            await poster.post(tls_sink.url)

    with pytest.raises(httpx.ConnectError) as caught:
        run(post())
    cause = cause_of(caught.value, ssl.SSLCertVerificationError)
    assert cause is not None
    assert cause.verify_message == "unable to get local issuer certificate"  # what the sender shows
    assert not any(isinstance(e, aiohttp.ClientError) for e in chain(caught.value))


def test_the_certificate_is_checked_against_the_urls_host_name(ca: trustme.CA, way: str) -> None:
    """A certificate for hooks.test only, served on 127.0.0.1: verified as hooks.test (the
    name in the URL, also sent as SNI), refused when the URL names the address."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(server_context)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, context: names.append(name)
    trusted = ssl_context(TlsConfig(ca_pem=ca.cert_pem.bytes().decode()))

    async def post() -> tuple[bytes, BaseException]:
        server = await asyncio.start_server(answer_ok, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        resolver = lambda h, p: ["127.0.0.1"]  # noqa: E731
        async with server, Poster(way, verify=trusted, resolver=resolver) as poster:
            by_name = await poster.post(f"https://hooks.test:{port}/")
            try:
                await poster.post(f"https://127.0.0.1:{port}/")
            except httpx.ConnectError as exc:
                return by_name.head, exc
        raise AssertionError("a certificate for hooks.test was accepted for 127.0.0.1")

    head, refused = run(post())  # type: ignore[misc]
    assert head == b"ok"
    assert names[0] == "hooks.test"
    cause = cause_of(refused, ssl.SSLCertVerificationError)
    assert cause is not None and "127.0.0.1" in str(cause.verify_message)


def test_the_contexts_client_certificate_is_presented(
    ca: trustme.CA, tmp_path: Path, way: str
) -> None:
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    mine = ca.issue_cert("sender.test")
    ca_pem = ca.cert_pem.bytes().decode()
    with_cert = TlsConfig(
        ca_pem=ca_pem,
        client_cert_pem=mine.cert_chain_pems[0].bytes().decode(),
        client_key_pem=mine.private_key_pem.bytes().decode(),
    )
    tls = SinkTls(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), str(tmp_path / "ca.pem"))

    async def post(url: str, config: TlsConfig) -> int:
        async with Poster(way, verify=ssl_context(config)) as poster:
            return (await poster.post(url, b'[{"contact":{"id":1}}]')).status

    with Sink(tls=tls) as sink:
        assert run(post(sink.url, with_cert)) == 200
        with pytest.raises(httpx.TransportError):  # mutual TLS: refused without one
            run(post(sink.url, TlsConfig(ca_pem=ca_pem)))
        assert sink.recorder.requests == 1


# Timeouts: httpx's four by name, and a bound on the whole request. Each timeout under test
# is short and the others long, so a timeout taken by the wrong name is not in time.


async def timed(post: Awaitable[PostAnswer]) -> tuple[BaseException, float]:
    """The timeout ``post`` ends with, and the seconds it took (WAIT_S at most)."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(post, WAIT_S)
    except httpx.TimeoutException as exc:
        return exc, time.monotonic() - started
    raise AssertionError("no timeout")


@pytest.mark.parametrize("stalled", ["head", "body"])
def test_an_answer_that_never_comes_is_a_read_timeout(way: str, stalled: str) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if stalled == "body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            await writer.drain()
        await asyncio.Event().wait()

    async def post() -> tuple[BaseException, float]:
        timeout = httpx.Timeout(WAIT_S * 2, read=0.1)
        async with serving(never_answer) as served, Poster(way, timeout=timeout) as poster:
            return await timed(poster.post(served.url))

    error, waited = run(post())  # type: ignore[misc]
    assert isinstance(error, httpx.ReadTimeout)
    assert 0.08 <= waited < WAIT_S


def test_an_answer_that_trickles_in_ends_at_the_whole_requests_bound(way: str) -> None:
    """A byte of the body every 10 ms keeps the read timeout from firing: the bound on the
    whole request (connect + write + read + pool) ends it, as a ReadTimeout (the answer had
    begun)."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while True:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.01)  # 30 times as often as the read timeout needs

    async def post() -> tuple[BaseException, float]:
        # The whole request: 1.4 s. Connecting gets 1 s of it: on a loaded machine a
        # connect to the test's own loop took over 0.1 s (seen: a ConnectTimeout).
        timeout = httpx.Timeout(0.05, connect=1.0, read=0.3)
        async with serving(trickle) as served, Poster(way, timeout=timeout) as poster:
            return await timed(poster.post(served.url))

    error, waited = run(post())  # type: ignore[misc]
    assert isinstance(error, httpx.ReadTimeout)
    assert 1.35 <= waited < WAIT_S


@pytest.mark.timeout(60)  # without the bound it would hang
@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")
def test_a_stalled_upload_ends_at_the_whole_requests_bound(way: str) -> None:
    """aiohttp has no write timeout: a server that never reads is cut off by the bound on
    the whole request (connect + write + read + pool), as a WriteTimeout."""
    body = bytes(48 * 1024 * 1024)  # more than the socket buffers on both sides hold

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()

    async def post() -> tuple[BaseException, float]:
        timeout = httpx.Timeout(0.1, connect=1.0)  # the whole request: 1.3 s
        async with serving(never_read) as served, Poster(way, timeout=timeout) as poster:
            return await timed(poster.post(served.url, body))

    error, waited = run(post())  # type: ignore[misc]
    assert isinstance(error, httpx.WriteTimeout)
    assert 1.25 <= waited < WAIT_S


@pytest.mark.skipif(sys.platform != "linux", reason="Linux drops a SYN to a full accept queue")
def test_a_connect_that_does_not_complete_is_a_connect_timeout(way: str) -> None:
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):  # fill the accept queue: the next connect then hangs
            filler = socket.socket()
            filler.settimeout(0.2)
            fillers.append(filler)
            try:
                filler.connect(server.getsockname())
            except TimeoutError:
                break
        else:
            pytest.fail("the accept queue never filled")

        async def post() -> tuple[BaseException, float]:
            timeout = httpx.Timeout(WAIT_S * 2, connect=0.2)
            async with Poster(way, timeout=timeout) as poster:
                return await timed(poster.post(f"http://127.0.0.1:{server.getsockname()[1]}/"))

        error, waited = run(post())  # type: ignore[misc]
        assert isinstance(error, httpx.ConnectTimeout)
        assert 0.15 <= waited < WAIT_S
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def test_a_wait_for_a_free_connection_ends_at_pool_plus_connect(way: str) -> None:
    """The one connection is held by a request never answered: the next one waits for it
    as long as the pool and connect timeouts together allow (aiohttp has one timer for
    both: a ConnectTimeout where httpx would say PoolTimeout)."""
    holding = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        holding.set()
        await asyncio.Event().wait()

    async def post_twice() -> tuple[BaseException, float, int]:
        timeout = httpx.Timeout(WAIT_S * 2, pool=0.2, connect=0.05)
        limits = httpx.Limits(max_connections=1)
        async with serving(hold) as served, Poster(way, timeout=timeout, limits=limits) as poster:
            first = asyncio.create_task(poster.post(served.url))
            try:
                await asyncio.wait_for(holding.wait(), WAIT_S)
                error, waited = await timed(poster.post(served.url))
            finally:
                first.cancel()
                await asyncio.gather(first, return_exceptions=True)
            return error, waited, served.accepted

    error, waited, count = run(post_twice())  # type: ignore[misc]
    assert isinstance(error, httpx.ConnectTimeout)
    assert 0.22 <= waited < WAIT_S  # without the pool timeout: 0.05 s
    assert count == 1


# The pool: a limit, keep-alive, and no connection reused that cannot be.


def test_at_most_max_connections_are_opened_and_reused(way: str) -> None:
    """The server answers requests two at a time: six requests over a limit of two go over
    two connections, kept alive (with no limit, six would open)."""
    waiting: list[asyncio.Future[None]] = []

    async def answer_in_pairs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            turn = asyncio.get_running_loop().create_future()
            waiting.append(turn)
            if len(waiting) == 2:
                for each in waiting:
                    each.set_result(None)
                waiting.clear()
            await turn
            writer.write(OK_ANSWER)
            await writer.drain()

    async def post_six() -> tuple[int, list[bytes]]:
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        async with serving(answer_in_pairs) as served, Poster(way, limits=limits) as poster:
            answers = await asyncio.gather(*(poster.post(served.url) for _ in range(6)))
            return served.accepted, [answer.head for answer in answers]

    assert run(post_six()) == (2, [b"ok"] * 6)


def test_an_idle_connection_past_keepalive_expiry_is_not_reused(way: str) -> None:
    async def post_twice(expiry: float) -> int:
        limits = httpx.Limits(max_connections=1, keepalive_expiry=expiry)
        async with serving(answer_ok) as served, Poster(way, limits=limits) as poster:
            await poster.post(served.url)
            await asyncio.sleep(0.15)  # a lower bound on time passing, not a race
            await poster.post(served.url)
            return served.accepted

    assert run(post_twice(0.05)) == 2
    assert run(post_twice(30.0)) == 1


def test_a_connection_the_server_closed_is_not_reused(way: str) -> None:
    async def answer_once_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK_ANSWER)  # no Connection: close
        await writer.drain()

    async def post_twice() -> tuple[int, list[bytes]]:
        # POSTs: aiohttp retries an idempotent request once on a stale connection, which
        # would hide a reuse.
        async with serving(answer_once_then_close) as served, Poster(way) as poster:
            first = await poster.post(served.url)
            connector = poster.transport._session.connector  # type: ignore[union-attr]
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:  # until the close has reached this side
                await asyncio.sleep(0.01)
                pooled = [p for conns in connector._conns.values() for p, _ in conns]
                if pooled and not any(p.is_connected() for p in pooled):
                    break
            second = await poster.post(served.url)
            return served.accepted, [first.head, second.head]

    assert run(post_twice()) == (2, [b"ok", b"ok"])


def test_an_answer_closed_part_way_does_not_go_back_to_the_pool() -> None:
    """The sender reads at most 64 KiB of an answer: the connection that still carries the
    rest is closed, and the next request opens another."""
    large = b"x" * (16 * 1024 * 1024)

    async def read_a_little_then_again() -> tuple[int, int, str]:
        async with serving(large_then_ok(large)) as served, client() as http:
            async with http.stream("POST", served.url, content=b"x") as response:
                async for chunk in response.aiter_raw():
                    first = len(chunk)
                    break
            await asyncio.wait_for(served.closed.wait(), WAIT_S)  # the server saw it closed
            second = await http.post(served.url, content=b"x")
            return served.accepted, first, second.text

    accepted_count, first, text = run(read_a_little_then_again())  # type: ignore[misc]
    assert 0 < first < len(large)
    assert (accepted_count, text) == (2, "ok")


def test_a_posted_answer_longer_than_the_cap_does_not_go_back_to_the_pool() -> None:
    """``post`` reads ``cap`` bytes of a 16 MiB answer: the connection that still carries
    the rest is closed, and the next POST opens another."""
    large = bytes(range(256)) * (64 * 1024)  # not all alike: a wrong cut shows

    async def post_twice() -> tuple[int, PostAnswer, PostAnswer]:
        async with serving(large_then_ok(large)) as served, Poster("posted") as poster:
            first = await poster.post(served.url)
            await asyncio.wait_for(served.closed.wait(), WAIT_S)  # the server saw it closed
            second = await poster.post(served.url)
            return served.accepted, first, second

    count, first, second = run(post_twice())  # type: ignore[misc]
    assert (first.status, first.head) == (200, large[:CAP])
    assert (count, second.head) == (2, b"ok")


@pytest.mark.parametrize("cap", [2, CAP], ids=["cap-of-its-length", "cap-above"])
def test_a_posted_answer_read_to_its_end_keeps_its_connection(cap: int) -> None:
    async def post_three_times() -> tuple[int, list[bytes]]:
        async with serving(answer_ok) as served, Poster("posted") as poster:
            timeout = poster.timeout.as_dict()
            answers = [
                await poster.transport.post(served.url, [], b"x", timeout, cap) for _ in range(3)
            ]
            return served.accepted, [answer.head for answer in answers]

    assert run(post_three_times()) == (1, [b"ok"] * 3)


@pytest.mark.parametrize("length", [0, 1, CAP - 1, CAP, CAP + 1, 4 * CAP])
def test_a_posted_answer_is_read_up_to_the_cap(length: int) -> None:
    body = (bytes(range(256)) * (length // 256 + 1))[:length]  # not all alike

    async def post() -> PostAnswer:
        async with serving(large_then_ok(body)) as served, Poster("posted") as poster:
            return await poster.post(served.url)

    answer = run(post())
    assert isinstance(answer, PostAnswer)
    assert (answer.status, answer.head) == (200, body[:CAP])


def test_closing_the_transport_closes_its_connections(way: str) -> None:
    async def post_then_close() -> tuple[bool, bool]:
        async with serving(answer_ok) as served:
            async with Poster(way) as poster:
                await poster.post(served.url)
                kept_alive = not served.closed.is_set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(served.closed.wait(), WAIT_S)
            return kept_alive, served.closed.is_set()

    assert run(post_then_close()) == (True, True)


# What goes on the wire, and what comes back.


def test_a_body_and_its_headers_arrive_as_sent(sink: Sink, way: str) -> None:
    body = orjson.dumps([{"contact": {"id": i}, "pad": "p" * 600} for i in range(500)])
    assert len(body) > 300_000
    seen: list[Request] = []

    def keep(request: Request) -> object:
        seen.append(request)
        return OK

    async def post(url: str) -> int:
        headers = [("Content-Type", "application/json"), ("Idempotency-Key", "run-1-000007")]
        async with Poster(way) as poster:
            return (await poster.post(url, body, headers)).status

    sink.behaviour = keep
    assert run(post(sink.url)) == 200
    (arrived,) = seen
    assert arrived.body == body
    assert arrived.key == "run-1-000007"
    assert arrived.headers["content-type"] == "application/json"
    assert arrived.headers["content-length"] == str(len(body))


def test_the_path_and_query_go_as_given(way: str) -> None:
    """Percent-escapes are kept as they are, none decoded or added."""
    targets: list[bytes] = []

    async def record_target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        targets.append(head.split(b" ", 2)[1])
        await reader.readexactly(1)  # the body, b"x"
        writer.write(OK_ANSWER)
        await writer.drain()

    async def post() -> None:
        async with serving(record_target) as served, Poster(way) as poster:
            await poster.post(f"{served.url}/a%2Fb%7E?q=a%20b&plus=%2B&t=s3cret")

    run(post())
    assert targets == [b"/hook/a%2Fb%7E?q=a%20b&plus=%2B&t=s3cret"]


def test_only_httpxs_headers_go_with_one_content_length() -> None:
    lines: list[list[tuple[str, str]]] = []

    async def post() -> httpx.Headers:
        async with serving(recording(lines)) as served, client() as http:
            request = http.build_request(
                "POST", served.url, content=b"[1]", headers={"Idempotency-Key": "k"}
            )
            await http.send(request)
            return request.headers

    sent = run(post())
    (received,) = lines
    assert sorted(name.lower() for name, _ in received) == sorted(sent.keys())
    assert [v for k, v in received if k.lower() == "content-length"] == ["3"]
    assert dict((k.lower(), v) for k, v in received) == dict(sent.items())


def test_exactly_the_given_headers_are_posted_with_one_content_length() -> None:
    """Names and values as given, a repeated one kept; the framing ones given are dropped
    for aiohttp's one Content-Length; none of aiohttp's defaults (User-Agent, Accept,
    Content-Type…) is added, only Host. (aiohttp keeps only the last of a name given in two
    cases, as httpx's client does: see the sender's tests below.)"""
    lines: list[list[tuple[str, str]]] = []
    given = [
        ("Idempotency-Key", "run-1-000007"),
        ("X-Tag", "a"),
        ("X-Tag", "b"),
        ("Content-Length", "999"),
        ("transfer-encoding", "chunked"),
    ]

    async def post() -> int:
        async with serving(recording(lines)) as served, Poster("posted") as poster:
            await poster.post(served.url, b"[1]", given)
            return served.port

    port = run(post())
    (received,) = lines
    assert sorted(received) == sorted(
        [
            ("Host", f"127.0.0.1:{port}"),
            ("Idempotency-Key", "run-1-000007"),
            ("X-Tag", "a"),
            ("X-Tag", "b"),
            ("Content-Length", "3"),
        ]
    )


@pytest.mark.parametrize("authorization", [None, "Bearer t"])
def test_a_urls_user_info_is_not_posted(authorization: str | None) -> None:
    """As ``handle_async_request`` (whose URL's user info httpx has made a header), ``post``
    sends no credentials from the URL: only the headers given, and no error for giving an
    Authorization too."""
    lines: list[list[tuple[str, str]]] = []
    given = [] if authorization is None else [("Authorization", authorization)]

    async def post() -> int:
        async with serving(recording(lines)) as served, Poster("posted") as poster:
            url = served.url.replace("http://", "http://user:pw@")
            return (await poster.post(url, headers=given)).status

    assert run(post()) == 200
    (received,) = lines
    assert [v for k, v in received if k.lower() == "authorization"] == [v for _, v in given]


def test_the_answer_comes_back_raw_and_unfollowed() -> None:
    """Status and headers as sent (repeated ones kept), the body not decompressed, and a
    redirect returned, not followed."""
    packed = gzip.compress(b'{"error":"later"}')

    async def redirect_gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\n"
            b"Content-Encoding: gzip\r\nX-Seen: a\r\nX-Seen: b\r\n"
            b"Content-Length: %d\r\n\r\n" % len(packed) + packed
        )
        await writer.drain()

    async def post() -> tuple[int, int, httpx.Response, bytes]:
        async with serving(redirect_gzipped) as served, client() as http:
            async with http.stream("POST", served.url, content=b"x") as response:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            return served.accepted, response.status_code, response, raw

    count, status, response, raw = run(post())  # type: ignore[misc]
    assert (count, status, raw) == (1, 307, packed)
    assert response.headers["location"] == "/elsewhere"
    assert response.headers.get_list("x-seen") == ["a", "b"]
    assert response.reason_phrase == "Temporary Redirect"


def test_a_posted_answer_comes_back_raw_and_unfollowed_its_headers_in_any_case() -> None:
    packed = gzip.compress(b'{"error":"later"}')

    async def redirect_gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nRetry-After: 3\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed
        )
        await writer.drain()

    async def post() -> tuple[int, PostAnswer]:
        async with serving(redirect_gzipped) as served, Poster("posted") as poster:
            answer = await poster.post(served.url)
            return served.accepted, answer

    count, answer = run(post())  # type: ignore[misc]
    assert (count, answer.status, answer.head) == (1, 307, packed)
    assert answer.headers["location"] == "/elsewhere"
    assert [answer.headers.get(name) for name in ("Retry-After", "retry-after", "RETRY-AFTER")] == [
        "3"
    ] * 3


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", httpx.RemoteProtocolError),  # closed without an answer
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", httpx.RemoteProtocolError),
        (b"NOT HTTP\r\n\r\n", httpx.RemoteProtocolError),
    ],
    ids=["no-answer", "short-body", "garbage"],
)
def test_a_broken_answer_is_an_httpx_error(way: str, answer: bytes, error: type[Exception]) -> None:
    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def post() -> None:
        async with serving(answer_then_close) as served, Poster(way) as poster:
            await poster.post(f"{served.url}?token=s3cret")

    with pytest.raises(httpx.TransportError) as caught:
        run(post())
    assert type(caught.value) is error
    assert str(caught.value) and "s3cret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)  # the original, chained


def test_a_reset_connection_is_a_network_error(way: str) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        linger = struct.pack("ii", 1, 0)  # close with a reset, not a FIN
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.transport.abort()

    async def post() -> None:
        async with serving(reset) as served, Poster(way) as poster:
            await poster.post(served.url, bytes(1024 * 1024))

    with pytest.raises(httpx.NetworkError) as caught:
        run(post())
    assert type(caught.value) in (httpx.ReadError, httpx.WriteError)  # as the reset is seen
    assert str(caught.value) and "/hook" not in str(caught.value)  # the OS's reason, no URL
    assert isinstance(caught.value.__cause__, OSError)


# The sender over it: its hot path posts straight to the transport, as its client would.


def test_the_sender_uses_this_transport() -> None:
    sender = Sender(SenderConfig(url="http://hooks.test/hook"))
    transport = sender._http()._transport  # type: ignore[attr-defined]
    assert type(transport).__module__ == "hookcast.actors.aio_transport"


class Relay(httpx.AsyncBaseTransport):
    """The sender's own kind of transport, wrapped so that the sender does not know it: its
    requests go through httpx's client (as an injected transport's do), still over aiohttp."""

    def __init__(self) -> None:
        self._inner = transport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def spy_on_post(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs handed to ``AiohttpTransport.post`` from now on, in order."""
    urls: list[str] = []
    real = AiohttpTransport.post

    async def post(self: AiohttpTransport, url: str, *args: object) -> PostAnswer:
        urls.append(url)
        return await real(self, url, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(AiohttpTransport, "post", post)
    return urls


async def deliver_one(
    config: SenderConfig, transport: httpx.AsyncBaseTransport | None = None
) -> AttemptResult:
    element = f'{{"sendTime":{SEND_TIME_PLACEHOLDER},"contact":{{"id":1}}}}'
    chunk = pa.table({"seq": pa.array([0], pa.int64()), ELEMENT_COLUMN: [element]})
    sender = Sender(config, transport=transport)
    try:
        (result,) = await sender.deliver(chunk, [BatchOrder(0, "run-000000", 1, 1)])
        return result
    finally:
        await sender.close()


def test_the_sender_posts_its_headers_and_those_its_client_would_add(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posted directly, a request carries the sender's headers (webhook.headers included)
    and httpx's defaults, exactly as the same request through httpx's client does."""
    posted = spy_on_post(monkeypatch)
    seen: list[Request] = []

    def keep(request: Request) -> Reply:
        seen.append(request)
        return OK

    sink.behaviour = keep
    config = SenderConfig(url=sink.url, headers=(("X-Tenant", "acme"),))
    direct = run(deliver_one(config))
    through_client = run(deliver_one(config, Relay()))
    assert direct.outcome is through_client.outcome is Outcome.DELIVERED  # type: ignore[union-attr]
    assert posted == [sink.url]  # the first went straight to the transport, the second did not
    arrived, arrived_through_client = (request.headers for request in seen)
    assert arrived["content-type"] == "application/json"
    assert arrived["idempotency-key"] == "run-000000"
    assert arrived["x-tenant"] == "acme"
    assert arrived["user-agent"] == f"python-httpx/{httpx.__version__}"
    assert arrived["accept"] == "*/*"
    assert arrived == arrived_through_client


@pytest.mark.parametrize("relayed", [False, True], ids=["posted-directly", "through-client"])
def test_a_webhook_header_replaces_the_default_of_its_name(
    monkeypatch: pytest.MonkeyPatch, relayed: bool
) -> None:
    """httpx's User-Agent and the sender's Content-Type, each given again by the job in
    another case: one of each goes, the job's."""
    posted = spy_on_post(monkeypatch)
    lines: list[list[tuple[str, str]]] = []
    mine = (("user-agent", "crm-sync/2"), ("content-type", "application/vnd.api+json"))

    async def deliver() -> AttemptResult:
        async with serving(recording(lines)) as served:
            config = SenderConfig(url=served.url, headers=mine)
            return await deliver_one(config, Relay() if relayed else None)

    assert run(deliver()).outcome is Outcome.DELIVERED  # type: ignore[union-attr]
    assert len(posted) == (0 if relayed else 1)
    (received,) = lines
    for name, value in mine:
        assert [v for k, v in received if k.lower() == name] == [value]


@pytest.mark.parametrize("relayed", [False, True], ids=["posted-directly", "through-client"])
def test_a_429s_retry_after_reaches_the_senders_result(
    sink: Sink, monkeypatch: pytest.MonkeyPatch, relayed: bool
) -> None:
    posted = spy_on_post(monkeypatch)
    slow_down = Reply(429, headers=(("Retry-After", "3"),), body=b'{"error":"slow down"}')
    sink.behaviour = lambda request: slow_down
    result = run(deliver_one(SenderConfig(url=sink.url), Relay() if relayed else None))
    assert len(posted) == (0 if relayed else 1)
    assert isinstance(result, AttemptResult)
    assert (result.outcome, result.status, result.retry_after_s) == (Outcome.RETRY, 429, 3.0)
    assert result.response_excerpt == '{"error":"slow down"}'


@pytest.mark.parametrize("relayed", [False, True], ids=["posted-directly", "through-client"])
def test_the_senders_timeout_bounds_its_request(
    monkeypatch: pytest.MonkeyPatch, relayed: bool
) -> None:
    posted = spy_on_post(monkeypatch)

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.Event().wait()

    async def deliver() -> AttemptResult:
        async with serving(never_answer) as served:
            config = SenderConfig(url=served.url, timeout_s=0.1)
            return await asyncio.wait_for(deliver_one(config, Relay() if relayed else None), WAIT_S)

    result = run(deliver())
    assert len(posted) == (0 if relayed else 1)
    assert isinstance(result, AttemptResult)
    assert (result.outcome, result.status, result.timed_out) == (Outcome.RETRY, None, True)
    assert result.error == "ReadTimeout: timed out waiting for the server to send data"
