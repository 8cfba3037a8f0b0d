"""The egress guard: which addresses a webhook or token request may connect to.

Checked at connect time on every address the host name resolves to, and the connection is
made to those checked addresses (the name is not resolved twice), so DNS tricks do not get
around it. ``EgressPolicy.blocked`` is the rule; ``url_problem`` is what ``validate`` asks of
a URL whose host is a literal address; ``guarded_transport`` / ``guarded_async_transport``
are httpx transports that apply it (``actors.aio_transport`` applies it over aiohttp).

Always blocked unless listed in ``egress.allow``: unspecified, link-local, cloud metadata,
multicast and broadcast addresses. ``HOOKCAST_EGRESS=public-only`` (an operator's policy for
a node, which a job file loosens only through ``egress.allow``) also blocks loopback,
RFC 1918, CGNAT and unique local addresses. IPv4-mapped, IPv4-compatible and NAT64 IPv6
addresses are checked as the IPv4 address they carry.

Proxies: an ``httpx.Client(transport=...)`` ignores HTTP_PROXY / HTTPS_PROXY / ALL_PROXY
(httpx reads them only when no transport is given), so requests go direct, and are guarded.
A ``proxy=`` or ``mounts=`` given to the client routes through a transport httpx builds
itself: not guarded, and the proxy, not us, resolves the name.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx
from httpcore._utils import is_socket_readable  # httpcore's own check, unchanged

from hookcast.actors.errors import cause_of
from hookcast.actors.urls import display_url

EGRESS_ENV = "HOOKCAST_EGRESS"
_MODES = {"": False, "default": False, "public-only": True}  # value -> public_only
_HINT = "list it in egress.allow to reach it"
_EXAMPLES = "like 10.20.0.0/16, fd00::/8 or 169.254.169.254"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> addresses, for tests


def _rules(why: str, *rules: tuple[str, str]) -> tuple[tuple[Network, str, str], ...]:
    return tuple((ipaddress.ip_network(net), kind, why) for net, kind in rules)


# First match names the rule: metadata addresses before the link-local / CGNAT ranges
# that hold them.
_ALWAYS = _rules(
    "always blocked",
    ("169.254.169.254/32", "a cloud metadata address"),
    ("fd00:ec2::254/128", "a cloud metadata address"),
    ("100.100.100.200/32", "a cloud metadata address"),
    ("0.0.0.0/8", 'an unspecified ("this network") address'),
    ("::/128", "the unspecified address"),
    ("169.254.0.0/16", "a link-local address"),
    ("fe80::/10", "a link-local address"),
    ("224.0.0.0/4", "a multicast address"),
    ("ff00::/8", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
)
_PUBLIC_ONLY = _rules(
    f"blocked by {EGRESS_ENV}=public-only",
    ("127.0.0.0/8", "a loopback address"),
    ("::1/128", "a loopback address"),
    ("10.0.0.0/8", "a private (RFC 1918) address"),
    ("172.16.0.0/12", "a private (RFC 1918) address"),
    ("192.168.0.0/16", "a private (RFC 1918) address"),
    ("100.64.0.0/10", "a shared (CGNAT) address"),
    ("fc00::/7", "a unique local address"),
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Where requests may connect: the node's ``HOOKCAST_EGRESS`` and the job's allow list."""

    public_only: bool = False
    allow: tuple[Network, ...] = ()

    @classmethod
    def from_env(
        cls, allow: Iterable[str] = (), env: Mapping[str, str] | None = None
    ) -> EgressPolicy:
        """The policy of ``env`` (default ``os.environ``) with ``allow`` (``egress.allow``)."""
        value = (os.environ if env is None else env).get(EGRESS_ENV, "")
        if value not in _MODES:
            raise ValueError(
                f"{EGRESS_ENV}={json.dumps(value)} is not an egress policy: use public-only, "
                "or default (or leave it unset)."
            )
        return cls(public_only=_MODES[value], allow=parse_networks(allow))

    @classmethod
    def for_node(cls, job: EgressPolicy) -> EgressPolicy:
        """``job``'s policy made at least as strict as this process's own
        ``HOOKCAST_EGRESS`` (an operator sets it per node; a job cannot loosen it). A value
        this node cannot read fails closed: public-only."""
        try:
            node = cls.from_env()
        except ValueError:
            node = cls(public_only=True)
        return job.stricter(node)

    def stricter(self, other: EgressPolicy) -> EgressPolicy:
        """Public-only if either is; the allow list is this one's (the job's)."""
        return EgressPolicy(public_only=self.public_only or other.public_only, allow=self.allow)

    def blocked(self, address: str | Address) -> str | None:
        """Why a connection to ``address`` is refused, or None. ValueError if not an address."""
        found = self._rule(address)
        return None if found is None else f"{found[0]} is {found[1]}"

    def url_problem(self, url: str) -> str | None:
        """Why ``url`` may not be requested when its host is a literal address, or None
        (a host name is checked when it is connected to; a bad URL is ``urls``' to report)."""
        try:
            host = urlsplit(url).hostname
            ipaddress.ip_address(host or "")
        except ValueError:
            return None
        reason = self.blocked(host)
        return None if reason is None else f"{json.dumps(display_url(url))}: {reason}."

    def _rule(self, address: str | Address) -> tuple[str, str] | None:
        """(the address as shown, ``a link-local address (always blocked; ...)``), or None."""
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        shown, checked = str(address), addr
        carried = _embedded_v4(addr)
        if carried is not None:
            shown, checked = f"{shown} ({carried[0]} {carried[1]})", carried[1]
        if any(addr in net or checked in net for net in self.allow):
            return None
        rules = _ALWAYS + _PUBLIC_ONLY if self.public_only else _ALWAYS
        for net, kind, why in rules:
            if checked in net:
                return shown, f"{kind} ({why}; {_HINT})"
        return None


def _embedded_v4(addr: Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address is a way of reaching, with how it is carried."""
    if addr.version == 4:
        return None
    if addr.ipv4_mapped is not None:
        return "IPv4-mapped", addr.ipv4_mapped
    if any(addr in net for net in _NAT64):  # the last 32 bits, as in a /96 prefix
        return "NAT64", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _V4_COMPATIBLE and int(addr) > 1:  # :: and ::1 are not IPv4-compatible
        return "IPv4-compatible", ipaddress.IPv4Address(int(addr))
    return None


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``egress.allow``: networks (``10.20.0.0/16``) or single addresses (``169.254.169.254``)."""
    return tuple(_network(str(entry).strip()) for entry in entries)


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{json.dumps(text)} is not a network or an address: give one {_EXAMPLES}."
        ) from None
    # A typo'd prefix would otherwise silently allow more (or other) addresses than meant.
    raise ValueError(
        f"{json.dumps(text)} has host bits set: give the network, {network}, or the single "
        f"address, {text.partition('/')[0]}."
    )


class EgressBlockedError(httpcore.ConnectError):
    """A connection the egress policy refused before connecting. httpx raises it as an
    ``httpx.ConnectError`` with the same message, with this error as its ``__cause__``."""


def blocked_reason(exc: BaseException) -> str | None:
    """The guard's message when ``exc`` (an httpx error) is its refusal, else None."""
    refusal = cause_of(exc, EgressBlockedError)
    return None if refusal is None else str(refusal)


def known_addresses(host: str, port: int, resolver: Resolver | None) -> list[str] | None:
    """The addresses of ``host`` without a DNS lookup (a literal; the injected resolver)."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        return None if resolver is None else list(resolver(host, port))


def distinct_addresses(infos: Iterable[tuple]) -> list[str]:
    """The addresses of a ``getaddrinfo`` answer, in order, once each."""
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_addresses(policy: EgressPolicy, host: str, addresses: Sequence[str]) -> None:
    """Raise ``EgressBlockedError`` for the first of ``host``'s addresses ``policy`` refuses,
    httpcore's ConnectError when it has none."""
    # Every address, not only the one connected to: a mixed answer is a DNS trick.
    if not addresses:
        raise httpcore.ConnectError(f"{host} resolves to no address")
    for address in addresses:
        found = policy._rule(address)
        if found is not None:
            shown, rule = found
            where = f"{shown} is" if address == host else f"{host} resolves to {shown},"
            raise EgressBlockedError(f"{where} {rule}: no connection was made")


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _Guard(httpcore.NetworkBackend):
    def __init__(self, policy: EgressPolicy, resolver: Resolver | None) -> None:
        self._policy, self._resolver, self._backend = policy, resolver, httpcore.SyncBackend()

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, **options: Any
    ) -> httpcore.NetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        addresses = known_addresses(host, port, self._resolver)
        if addresses is None:
            try:
                addresses = distinct_addresses(
                    socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                )
            except OSError as exc:
                raise httpcore.ConnectError(str(exc)) from exc
        check_addresses(self._policy, host, addresses)
        last: Exception | None = None
        for address in addresses:  # the checked addresses: the name is not resolved again
            if last is not None and _left(deadline) == 0.0:
                break  # one connect timeout for all the addresses, as for a name in httpx
            try:
                return self._backend.connect_tcp(address, port, _left(deadline), **options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _AsyncGuard(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: EgressPolicy, resolver: Resolver | None) -> None:
        self._policy, self._resolver, self._backend = policy, resolver, httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, **options: Any
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        addresses = known_addresses(host, port, self._resolver)
        if addresses is None:
            try:
                with anyio.fail_after(timeout):
                    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
            except OSError as exc:
                raise httpcore.ConnectError(str(exc)) from exc
            addresses = distinct_addresses(infos)
        check_addresses(self._policy, host, addresses)
        last: Exception | None = None
        for address in addresses:
            if last is not None and _left(deadline) == 0.0:
                break
            try:
                stream = await self._backend.connect_tcp(address, port, _left(deadline), **options)
                return _KnownSocketStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _KnownSocketStream(httpcore.AsyncNetworkStream):
    """An AnyIO stream that answers httpcore's "is this idle connection still open?" from
    a socket looked up once.

    httpcore asks it of every pooled connection each time it places a request, and anyio
    rebuilds a table of attribute getters on each lookup: ~6% of a sender's CPU at 1M
    contacts (py-spy). The socket stays the same under TLS, so the answer is unchanged."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, sock: socket.socket | None = None):
        self._stream = stream
        self._socket = sock if sock is not None else stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _KnownSocketStream(tls, self._socket)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return is_socket_readable(self._socket)
        if info == "socket":
            return self._socket
        return self._stream.get_extra_info(info)


# httpx's own default (httpx.Limits() alone would mean no limit on connections).
_HTTPX_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def guarded_async_transport(
    policy: EgressPolicy,
    *,
    verify: ssl.SSLContext | bool = True,
    limits: httpx.Limits = _HTTPX_LIMITS,
    resolver: Resolver | None = None,
) -> httpx.AsyncHTTPTransport:
    """An ``httpx.AsyncHTTPTransport`` that connects only where ``policy`` allows."""
    guard = _AsyncGuard(policy, resolver)
    return _guarded(httpx.AsyncHTTPTransport, httpcore.AsyncConnectionPool, guard, verify, limits)


def guarded_transport(
    policy: EgressPolicy,
    *,
    verify: ssl.SSLContext | bool = True,
    limits: httpx.Limits = _HTTPX_LIMITS,
    resolver: Resolver | None = None,
) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` that connects only where ``policy`` allows."""
    guard = _Guard(policy, resolver)
    return _guarded(httpx.HTTPTransport, httpcore.ConnectionPool, guard, verify, limits)


def _guarded(
    transport_class: type,
    pool_class: type,
    backend: object,
    verify: ssl.SSLContext | bool,
    limits: httpx.Limits,
) -> Any:
    # httpx's transports build their pool in __init__ and take no network backend, so the
    # pool is replaced by one built with the arguments httpx gives it (0.28, 0.29: http/1.1,
    # no retries) and the guarded backend. The rest (request and response mapping, httpcore
    # errors -> httpx errors, and so TLS: httpcore gives start_tls the URL's host name as
    # server_hostname, not the address connected to) stays httpx's own.
    ssl_context = httpx.create_ssl_context(verify=verify)
    transport = transport_class(verify=ssl_context, limits=limits)
    transport._pool = pool_class(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        retries=0,
        network_backend=backend,
    )
    return transport
