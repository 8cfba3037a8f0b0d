"""The aiohttp transport over real sockets on 127.0.0.1: the guard refuses before any
connection and connects to the addresses it checked; TLS, timeouts, the pool and the
answer's stream behave as the sender needs; errors come out as httpx's."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import orjson
import pytest
import trustme

from hookcast.actors.aio_transport import guarded_aiohttp_transport
from hookcast.actors.egress import EgressBlockedError, EgressPolicy, Resolver, blocked_reason
from hookcast.actors.errors import cause_of
from hookcast.actors.sender import Sender, SenderConfig
from hookcast.actors.tls import TlsConfig, ssl_context
from hookcast.cluster.testbed.sink import OK, Request, Sink, SinkTls

DEFAULT = EgressPolicy()
PUBLIC_ONLY = EgressPolicy(public_only=True)
ALWAYS = "always blocked; list it in egress.allow to reach it"
BY_ENV = "blocked by HOOKCAST_EGRESS=public-only; list it in egress.allow to reach it"
LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8)
WAIT_S = 10.0  # the most any wait for something that must happen may take


def client(
    policy: EgressPolicy = DEFAULT,
    *,
    timeout: httpx.Timeout | float = 5.0,
    limits: httpx.Limits = LIMITS,
    verify: ssl.SSLContext | None = None,
    resolver: Resolver | None = None,
) -> httpx.AsyncClient:
    transport = guarded_aiohttp_transport(
        policy, verify=verify or ssl_context(None), limits=limits, resolver=resolver
    )
    return httpx.AsyncClient(transport=transport, timeout=timeout)


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


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket on 127.0.0.1 that counts the connections made to it (see `accepted`)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


def accepted(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


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
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


# The guard: refused before any connection, with egress.py's messages.


def refusal(policy: EgressPolicy, url: str, resolver: Resolver | None = None) -> str:
    async def get() -> None:
        async with client(policy, resolver=resolver) as http:
            await http.get(url)

    with pytest.raises(httpx.ConnectError) as caught:
        run(get())
    assert isinstance(caught.value.__cause__, EgressBlockedError)
    assert blocked_reason(caught.value) == str(caught.value)
    return str(caught.value)


def test_a_literal_address_is_refused_before_connecting(listener: socket.socket) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    assert refusal(PUBLIC_ONLY, url) == (
        f"127.0.0.1 is a loopback address ({BY_ENV}): no connection was made"
    )
    assert accepted(listener) == 0


def test_a_name_is_refused_for_what_it_resolves_to(listener: socket.socket) -> None:
    message = refusal(PUBLIC_ONLY, f"http://localhost:{listener.getsockname()[1]}/")  # real DNS
    assert message.startswith(("localhost resolves to 127.0.0.1, ", "localhost resolves to ::1, "))
    assert message.endswith(f", a loopback address ({BY_ENV}): no connection was made")
    assert accepted(listener) == 0


def test_a_mixed_answer_is_refused(listener: socket.socket) -> None:
    port = listener.getsockname()[1]

    def resolver(host: str, port_asked: int) -> list[str]:
        assert (host, port_asked) == ("hooks.test", port)
        return ["127.0.0.1", "169.254.169.254"]

    assert refusal(DEFAULT, f"http://hooks.test:{port}/", resolver) == (
        f"hooks.test resolves to 169.254.169.254, a cloud metadata address ({ALWAYS}): "
        "no connection was made"
    )
    assert accepted(listener) == 0


@pytest.mark.parametrize("host", ["2130706433", "127.1", "[::ffff:127.0.0.1]"])
def test_a_host_aiohttp_takes_for_an_address_is_checked_first(
    listener: socket.socket, host: str
) -> None:
    # aiohttp connects to these without asking the resolver.
    message = refusal(PUBLIC_ONLY, f"http://{host}:{listener.getsockname()[1]}/")
    assert "127.0.0.1" in message and "a loopback address" in message
    assert accepted(listener) == 0


def test_a_dotted_number_that_is_no_address_is_refused(listener: socket.socket) -> None:
    async def get() -> None:
        async with client(DEFAULT) as http:
            await http.get(f"http://1.2.3.4.5:{listener.getsockname()[1]}/")

    with pytest.raises(
        httpx.ConnectError, match=r"^1\.2\.3\.4\.5 looks like an address but is not"
    ):
        run(get())
    assert accepted(listener) == 0


def test_a_name_is_resolved_once_and_connected_to_by_its_checked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, int]] = []
    seen_hosts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        assert host not in ("hooks.test", b"hooks.test"), "the name was looked up again"
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.2", "127.0.0.1"]  # nothing listens on 127.0.0.2: refused, then .1

    async def record_host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers, _ = await read_request(reader)
        seen_hosts.extend(v for k, v in headers if k.lower() == "host")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def get() -> tuple[int, str]:
        async with serving(record_host) as served:
            monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
            async with client(DEFAULT, resolver=resolver) as http:
                response = await http.get(f"http://hooks.test:{served.port}/hook")
            return served.accepted, response.text

    assert run(get()) == (1, "ok")
    port = asked[0][1]
    assert asked == [("hooks.test", port)]
    assert seen_hosts == [f"hooks.test:{port}"]


def test_an_unreachable_address_is_a_connect_error_not_a_refusal() -> None:
    async def get() -> None:
        async with client(DEFAULT, resolver=lambda h, p: ["127.0.0.2"]) as http:
            await http.get("http://hooks.test:9/")  # nothing listens on 127.0.0.2:9

    with pytest.raises(httpx.ConnectError) as caught:
        run(get())
    assert blocked_reason(caught.value) is None
    assert not any(isinstance(e, aiohttp.ClientError) for e in chain(caught.value))


def test_a_name_without_addresses_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        assert host in ("unknown.test", b"unknown.test")
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def get(url: str, resolver: Resolver | None) -> None:
        async with client(DEFAULT, resolver=resolver) as http:
            await http.get(url)

    with pytest.raises(httpx.ConnectError, match=r"^hooks\.test resolves to no address$"):
        run(get("http://hooks.test:9/", lambda h, p: []))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # no DNS server is asked
    with pytest.raises(httpx.ConnectError, match="Name or service not known") as caught:
        run(get("http://unknown.test/", None))
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


def test_an_untrusted_certificate_is_a_connect_error_with_the_tls_error(tls_sink: Sink) -> None:
    async def get() -> None:
        async with client(DEFAULT) as http:  # the system's trust store: not the test CA
            await http.get(tls_sink.url)

    with pytest.raises(httpx.ConnectError) as caught:
        run(get())
    cause = cause_of(caught.value, ssl.SSLCertVerificationError)
    assert cause is not None
    assert cause.verify_message == "unable to get local issuer certificate"  # what the sender shows
    assert not any(isinstance(e, aiohttp.ClientError) for e in chain(caught.value))


def test_the_certificate_is_checked_against_the_urls_host_name(ca: trustme.CA) -> None:
    """A certificate for hooks.test only, served on 127.0.0.1: verified as hooks.test (the
    name in the URL, also sent as SNI), refused when the URL names the address."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(server_context)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, context: names.append(name)
    trusted = ssl_context(TlsConfig(ca_pem=ca.cert_pem.bytes().decode()))

    async def get() -> tuple[str, BaseException]:
        server = await asyncio.start_server(answer_ok, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        async with server, client(verify=trusted, resolver=lambda h, p: ["127.0.0.1"]) as http:
            by_name = await http.get(f"https://hooks.test:{port}/")
            try:
                await http.get(f"https://127.0.0.1:{port}/")
            except httpx.ConnectError as exc:
                return by_name.text, exc
        raise AssertionError("a certificate for hooks.test was accepted for 127.0.0.1")

    text, refused = run(get())  # type: ignore[misc]
    assert text == "ok"
    assert names[0] == "hooks.test"
    cause = cause_of(refused, ssl.SSLCertVerificationError)
    assert cause is not None and "127.0.0.1" in str(cause.verify_message)


def test_the_contexts_client_certificate_is_presented(ca: trustme.CA, tmp_path: Path) -> None:
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
        async with client(verify=ssl_context(config)) as http:
            return (await http.post(url, content=b'[{"contact":{"id":1}}]')).status_code

    with Sink(tls=tls) as sink:
        assert run(post(sink.url, with_cert)) == 200
        with pytest.raises(httpx.TransportError):  # mutual TLS: refused without one
            run(post(sink.url, TlsConfig(ca_pem=ca_pem)))
        assert sink.recorder.requests == 1


# Timeouts: httpx's, and a bound on the whole request.


def test_an_answer_that_never_comes_is_a_read_timeout() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.Event().wait()

    async def get() -> tuple[BaseException, float]:
        async with serving(never_answer) as served, client(timeout=0.3) as http:
            started = time.monotonic()
            try:
                await http.post(served.url, content=b"x")
            except httpx.TimeoutException as exc:
                return exc, time.monotonic() - started
        raise AssertionError("no timeout")

    error, waited = run(get())  # type: ignore[misc]
    assert isinstance(error, httpx.ReadTimeout)
    assert 0.25 <= waited < WAIT_S


@pytest.mark.timeout(60)  # without the bound it would hang
@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")
def test_a_stalled_upload_ends_at_the_whole_requests_bound() -> None:
    """aiohttp has no write timeout: a server that never reads is cut off by the bound on
    the whole request (connect + write + read + pool), as a WriteTimeout."""
    body = bytes(48 * 1024 * 1024)  # more than the socket buffers on both sides hold

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()

    async def post() -> tuple[BaseException, float]:
        async with serving(never_read) as served, client(timeout=0.25) as http:
            started = time.monotonic()
            try:
                await http.post(served.url, content=body)
            except httpx.TimeoutException as exc:
                return exc, time.monotonic() - started
        raise AssertionError("no timeout")

    error, waited = run(post())  # type: ignore[misc]
    assert isinstance(error, httpx.WriteTimeout)
    assert 0.9 <= waited < WAIT_S


@pytest.mark.skipif(sys.platform != "linux", reason="Linux drops a SYN to a full accept queue")
def test_a_connect_that_does_not_complete_is_a_connect_timeout() -> None:
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

        async def get() -> BaseException:
            timeout = httpx.Timeout(5.0, connect=0.2)
            async with client(timeout=timeout) as http:
                try:
                    await http.get(f"http://127.0.0.1:{server.getsockname()[1]}/")
                except httpx.TimeoutException as exc:
                    return exc
            raise AssertionError("connected")

        assert isinstance(run(get()), httpx.ConnectTimeout)
    finally:
        for filler in fillers:
            filler.close()
        server.close()


# The pool: a limit, keep-alive, and no connection reused that cannot be.


def test_at_most_max_connections_are_opened_and_reused() -> None:
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
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def post_six() -> tuple[int, list[str]]:
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        async with serving(answer_in_pairs) as served, client(limits=limits) as http:
            answers = await asyncio.gather(*(http.post(served.url, content=b"x") for _ in range(6)))
            return served.accepted, [answer.text for answer in answers]

    assert run(post_six()) == (2, ["ok"] * 6)


def test_an_idle_connection_past_keepalive_expiry_is_not_reused() -> None:
    async def post_twice(expiry: float) -> int:
        limits = httpx.Limits(max_connections=1, keepalive_expiry=expiry)
        async with serving(answer_ok) as served, client(limits=limits) as http:
            await http.post(served.url, content=b"x")
            await asyncio.sleep(0.3)  # a lower bound on time passing, not a race
            await http.post(served.url, content=b"x")
            return served.accepted

    assert run(post_twice(0.05)) == 2
    assert run(post_twice(30.0)) == 1


def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def answer_once_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # no Connection: close
        await writer.drain()

    async def post_twice() -> tuple[int, list[str]]:
        # POSTs: aiohttp retries an idempotent request once on a stale connection, which
        # would hide a reuse.
        async with serving(answer_once_then_close) as served, client() as http:
            first = await http.post(served.url, content=b"x")
            connector = http._transport._session.connector  # type: ignore[attr-defined]
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:  # until the close has reached this side
                await asyncio.sleep(0.01)
                pooled = [p for conns in connector._conns.values() for p, _ in conns]
                if pooled and not any(p.is_connected() for p in pooled):
                    break
            second = await http.post(served.url, content=b"x")
            return served.accepted, [first.text, second.text]

    assert run(post_twice()) == (2, ["ok", "ok"])


def test_an_answer_closed_part_way_does_not_go_back_to_the_pool() -> None:
    """The sender reads at most 64 KiB of an answer: the connection that still carries the
    rest is closed, and the next request opens another."""
    large = b"x" * (16 * 1024 * 1024)
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(large) + large,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ]

    async def large_then_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # the first request of all gets the large answer, any later one "ok"
            await read_request(reader)
            writer.write(answers[0] if len(answers) == 1 else answers.pop(0))
            await writer.drain()

    async def read_a_little_then_again() -> tuple[int, int, str]:
        async with serving(large_then_ok) as served, client() as http:
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


def test_closing_the_client_closes_its_connections() -> None:
    async def post_then_close() -> tuple[bool, bool]:
        async with serving(answer_ok) as served:
            async with client() as http:
                await http.post(served.url, content=b"x")
                kept_alive = not served.closed.is_set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(served.closed.wait(), WAIT_S)
            return kept_alive, served.closed.is_set()

    assert run(post_then_close()) == (True, True)


# What goes on the wire, and what comes back.


def test_a_body_and_its_headers_arrive_as_sent() -> None:
    body = orjson.dumps([{"contact": {"id": i}, "pad": "p" * 600} for i in range(500)])
    assert len(body) > 300_000
    seen: list[Request] = []

    def keep(request: Request) -> object:
        seen.append(request)
        return OK

    async def post(url: str) -> int:
        headers = {"Content-Type": "application/json", "Idempotency-Key": "run-1-000007"}
        async with client() as http:
            return (await http.post(url, content=body, headers=headers)).status_code

    with Sink(behaviour=keep) as sink:
        assert run(post(sink.url)) == 200
    (arrived,) = seen
    assert arrived.body == body
    assert arrived.key == "run-1-000007"
    assert arrived.headers["content-type"] == "application/json"
    assert arrived.headers["content-length"] == str(len(body))


def test_only_httpxs_headers_go_with_one_content_length() -> None:
    lines: list[list[tuple[str, str]]] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers, _ = await read_request(reader)
        lines.append(headers)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def post() -> httpx.Headers:
        async with serving(record) as served, client() as http:
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


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", httpx.RemoteProtocolError),  # closed without an answer
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", httpx.RemoteProtocolError),
        (b"NOT HTTP\r\n\r\n", httpx.RemoteProtocolError),
    ],
    ids=["no-answer", "short-body", "garbage"],
)
def test_a_broken_answer_is_an_httpx_error(answer: bytes, error: type[Exception]) -> None:
    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def post() -> None:
        async with serving(answer_then_close) as served, client() as http:
            await http.post(f"{served.url}?token=s3cret", content=b"x")

    with pytest.raises(httpx.TransportError) as caught:
        run(post())
    assert type(caught.value) is error
    assert str(caught.value) and "s3cret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)  # the original, chained


def test_a_reset_connection_is_a_network_error() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        linger = struct.pack("ii", 1, 0)  # close with a reset, not a FIN
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.transport.abort()

    async def post() -> None:
        async with serving(reset) as served, client() as http:
            await http.post(served.url, content=bytes(1024 * 1024))

    with pytest.raises(httpx.NetworkError) as caught:
        run(post())
    assert type(caught.value) in (httpx.ReadError, httpx.WriteError)  # as the reset is seen
    assert str(caught.value) and "/hook" not in str(caught.value)  # the OS's reason, no URL
    assert isinstance(caught.value.__cause__, OSError)


def test_the_sender_uses_this_transport() -> None:
    sender = Sender(SenderConfig(url="http://hooks.test/hook"))
    transport = sender._http()._transport  # type: ignore[attr-defined]
    assert type(transport).__module__ == "hookcast.actors.aio_transport"
