"""An httpx transport that sends over aiohttp, behind the egress guard.

Per 300 KB POST, 8 in flight, httpx's own transport (httpcore) costs ~1.7x the client CPU
of httpx over this one (measured on 2 cores: 1.1 vs 0.6 ms; through ``Sender.deliver``,
rendering included, 1.7 vs 0.75 ms). So the sender keeps httpx's client API (tests hand it
an ``httpx.MockTransport``) and only the network part is aiohttp's.

The guard is ``actors.egress``'s, with its messages: ``_GuardedResolver`` resolves a name
once and checks every address, and aiohttp connects to those addresses; a host aiohttp takes
for an address never reaches a resolver, so it is checked here first. TLS uses the given
context with the URL's host name (not the address) for SNI and verification.

As the httpcore transport: HTTP/1.1, no proxies (none from the environment either), no
redirects, the answer not decompressed; the request's headers are httpx's, except that
aiohttp frames the body itself (one Content-Length). Unlike it: the body is read whole
before it is sent; ``max_keepalive_connections`` is not applied (a connection that may be
reused is kept); aiohttp's one timer for the wait for a free connection and the connect
gives ``ConnectTimeout`` where httpx would say ``PoolTimeout``; and aiohttp sends an
idempotent request (not a POST) once more when a kept-alive connection turns out closed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import httpcore
import httpx
import yarl  # aiohttp's URL type (one of its own dependencies)
from aiohttp.abc import AbstractResolver, ResolveResult

from hookcast.actors.egress import (
    EgressPolicy,
    Resolver,
    check_addresses,
    distinct_addresses,
    known_addresses,
)

# aiohttp's defaults, and its Content-Type for a body: only httpx's headers go.
_NOT_ADDED = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_FRAMING = (b"content-length", b"transfer-encoding")  # aiohttp computes them from the body
_WRITE_FAILED = "Can not write request body"  # how aiohttp says a body could not be sent
# What aiohttp and the guard raise; anything else is a bug to see, not a network error.
_FOREIGN = (aiohttp.ClientError, httpcore.ConnectError, asyncio.TimeoutError, OSError)


def guarded_aiohttp_transport(
    policy: EgressPolicy,
    *,
    verify: ssl.SSLContext,
    limits: httpx.Limits,
    resolver: Resolver | None = None,
) -> AiohttpTransport:
    """An httpx transport that connects only where ``policy`` allows, over one aiohttp
    session made at its first request (in the running loop) and closed by ``aclose``.
    ``resolver`` (host, port) -> addresses replaces DNS, for tests."""
    return AiohttpTransport(policy, verify, limits, resolver)


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        policy: EgressPolicy,
        verify: ssl.SSLContext,
        limits: httpx.Limits,
        resolver: Resolver | None,
    ) -> None:
        self._policy, self._verify, self._limits = policy, verify, limits
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        # Hosts let through: the verdict on an address is fixed, and checking it costs ~35 us.
        self._passed: set[str] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=_GuardedResolver(self._policy, self._resolver),
                use_dns_cache=False,  # a new connection's name is resolved and checked anew
                ssl=self._verify,
                limit=self._limits.max_connections or 0,  # 0: no limit, as httpx's None
                keepalive_timeout=self._limits.keepalive_expiry,
                happy_eyeballs_delay=None,  # the addresses in order, one at a time
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx's client keeps the cookies
                skip_auto_headers=_NOT_ADDED,
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    def _check_host(self, host: str, port: int | None) -> None:
        if host not in self._passed:
            _check_address_host(self._policy, host, port)
            self._passed.add(host)

    async def post(
        self,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: Mapping[str, float | None],
        cap: int,
    ) -> PostAnswer:
        """One POST of ``body`` to ``url`` with exactly ``headers`` (but the framing ones),
        and the first ``cap`` bytes of the answer: the sender's hot path, without httpx's
        request and response objects (~0.2 ms of CPU less a request, measured). The guard,
        the timeouts (httpx's four, by name) and the errors (httpx's) are
        ``handle_async_request``'s. The URL's user info is not sent (aiohttp would make it
        an Authorization header, and fail beside a given one): credentials go in
        ``headers``."""
        target = yarl.URL(url, encoded=True)
        if target.raw_user is not None or target.raw_password is not None:
            target = target.with_user(None)
        answered = False
        try:
            self._check_host(target.raw_host or "", target.port)
            answer = await self._client().request(
                "POST",
                target,
                data=body or None,
                headers=[(n, v) for n, v in headers if n.lower().encode() not in _FRAMING],
                allow_redirects=False,
                timeout=_timeouts(timeout),
            )
            answered = True
            try:
                head = await _read_head(answer, cap)
            finally:
                answer.release()  # closes the connection unless the answer was read whole
        except _FOREIGN as exc:
            raise _httpx_error(exc, answered=answered) from _original(exc)
        return PostAnswer(answer.status, answer.headers, head)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        try:
            self._check_host(host, url.port)
            body = await request.aread()
            answer = await self._client().request(
                request.method,
                _target(url),
                data=body or None,
                headers=[
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in request.headers.raw
                    if name.lower() not in _FRAMING
                ],
                allow_redirects=False,
                timeout=_timeouts(request.extensions.get("timeout", {})),
            )
        except _FOREIGN as exc:
            raise _httpx_error(exc, answered=False) from _original(exc)
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=_AnswerStream(answer),
            extensions={
                "http_version": f"HTTP/{answer.version.major}.{answer.version.minor}".encode(),
                "reason_phrase": (answer.reason or "").encode("ascii", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class PostAnswer:
    """What ``post`` got: the status, the headers (names in any case) and the first bytes
    of the body."""

    status: int
    headers: Mapping[str, str]
    head: bytes


async def _read_head(answer: aiohttp.ClientResponse, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= cap:
            break
    return b"".join(chunks)[:cap]


class _GuardedResolver(AbstractResolver):
    """Resolves a name once and checks every address before aiohttp connects to them."""

    def __init__(self, policy: EgressPolicy, resolver: Resolver | None) -> None:
        self._policy, self._resolver = policy, resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        addresses = known_addresses(host, port, self._resolver)
        if addresses is None:
            try:
                loop = asyncio.get_running_loop()
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:  # the connect timeout covers the lookup (aiohttp's timer)
                raise httpcore.ConnectError(str(exc)) from exc
            addresses = distinct_addresses(infos)
        check_addresses(self._policy, host, addresses)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


def _check_address_host(policy: EgressPolicy, host: str, port: int | None) -> None:
    """Check a host aiohttp connects to without asking the resolver: one it takes for an
    address (digits and dots, or a colon). That includes legacy forms such as 2130706433
    or 127.1, checked as what the C library reads them as (no DNS is asked); a host that is
    neither an address nor such a form is refused."""
    if not (":" in host or host.replace(".", "").isdigit()):
        return
    addresses = known_addresses(host, port or 0, None)
    if addresses is None:
        try:
            infos = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except OSError:
            raise httpcore.ConnectError(
                f"{host} looks like an address but is not one: no connection was made"
            ) from None
        addresses = distinct_addresses(infos)
    check_addresses(policy, host, addresses)


def _target(url: httpx.URL) -> yarl.URL:
    # From httpx's encoded parts, so the path and query go as httpx has them; the user info
    # is left out (httpx has made it an Authorization header).
    text = f"{url.scheme}://{url.netloc.decode('ascii')}{url.raw_path.decode('ascii')}"
    return yarl.URL(text, encoded=True)


def _timeouts(timeout: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's four timeouts as aiohttp's. aiohttp's ``connect`` covers the wait for a free
    connection, the lookup and the connect: pool + connect. It has no write timeout: the
    four together bound the whole request (``total``), so a stalled upload ends too."""
    connect, read, write, pool = (timeout.get(k) for k in ("connect", "read", "write", "pool"))
    return aiohttp.ClientTimeout(
        total=_sum(connect, read, write, pool),
        connect=_sum(pool, connect),
        sock_connect=connect,
        sock_read=read,
    )


def _sum(*seconds: float | None) -> float | None:
    return None if None in seconds else sum(seconds)  # type: ignore[arg-type]


class _AnswerStream(httpx.AsyncByteStream):
    """The answer's body as aiohttp receives it, chunk by chunk."""

    def __init__(self, answer: aiohttp.ClientResponse) -> None:
        self._answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._answer.content.iter_any():
                yield chunk
        except _FOREIGN as exc:
            raise _httpx_error(exc, answered=True) from _original(exc)

    async def aclose(self) -> None:
        # Read to its end, the connection is already back in aiohttp's pool; released
        # part-way, it is closed (what is left of this answer would be read as the next).
        self._answer.release()


def _httpx_error(exc: BaseException, *, answered: bool) -> httpx.TransportError:
    """The httpx error for ``exc``, raised before (``answered`` False) or after the answer's
    head arrived. Messages leave out the URL, as httpcore's do."""
    if isinstance(exc, httpcore.ConnectError):  # the guard's refusal, or no address
        return httpx.ConnectError(str(exc))
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout("timed out connecting (or waiting for a free connection)")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout("timed out waiting for the server to send data")
    if isinstance(exc, asyncio.TimeoutError):
        # The bound on the whole request (connect + write + read + pool). Connecting and the
        # wait for the head have their own shorter timers, so before the head it is the upload.
        if answered:
            return httpx.ReadTimeout("timed out reading the answer")
        return httpx.WriteTimeout("timed out sending the request")
    if isinstance(exc, aiohttp.ClientConnectorError):  # TLS errors included
        return httpx.ConnectError(str(exc.os_error))
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.ConnectError(f"{exc}: no connection was made")
    if isinstance(exc, aiohttp.ClientResponseError):  # an answer that is not HTTP
        return httpx.RemoteProtocolError(exc.message)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(str(exc))
    reason = _reason(exc)
    if not answered and str(exc).startswith(_WRITE_FAILED):
        return httpx.WriteError(reason)
    return httpx.ReadError(reason)


def _original(exc: BaseException) -> BaseException:
    # aiohttp's connect errors wrap the OS or TLS error. Its certificate error is itself an
    # SSLCertVerificationError, without the details (verify_message): the one it wraps is
    # what the sender finds in the chain.
    return exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc


def _reason(exc: BaseException) -> str:
    # aiohttp's wrapper names the URL; the OS error it wraps says what happened.
    return str(exc.__cause__) if isinstance(exc.__cause__, OSError) else str(exc)
