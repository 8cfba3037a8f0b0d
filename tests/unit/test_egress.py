"""The egress guard: the policy table, ``url_problem``, and real connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from hookcast.actors.egress import (
    EGRESS_ENV,
    EgressBlockedError,
    EgressPolicy,
    Resolver,
    guarded_async_transport,
    guarded_transport,
    parse_networks,
)

DEFAULT = EgressPolicy()
PUBLIC_ONLY = EgressPolicy(public_only=True)
ALWAYS = "always blocked; list it in egress.allow to reach it"
BY_ENV = "blocked by HOOKCAST_EGRESS=public-only; list it in egress.allow to reach it"

ALWAYS_BLOCKED = [
    ("0.0.0.0", 'an unspecified ("this network") address'),
    ("0.1.2.3", 'an unspecified ("this network") address'),
    ("::", "the unspecified address"),
    ("169.254.0.1", "a link-local address"),
    ("169.254.255.254", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("febf::1", "a link-local address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("224.0.0.1", "a multicast address"),
    ("239.255.255.250", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("255.255.255.255", "the broadcast address"),
]
PUBLIC_ONLY_BLOCKED = [
    ("127.0.0.1", "a loopback address"),
    ("127.255.0.9", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.1.2.3", "a private (RFC 1918) address"),
    ("172.16.0.1", "a private (RFC 1918) address"),
    ("172.31.255.255", "a private (RFC 1918) address"),
    ("192.168.1.1", "a private (RFC 1918) address"),
    ("100.64.0.1", "a shared (CGNAT) address"),
    ("100.127.255.255", "a shared (CGNAT) address"),
    ("fc00::1", "a unique local address"),
    ("fd12:3456::1", "a unique local address"),
]
PUBLIC = ["8.8.8.8", "2606:4700::1", "172.32.0.1", "100.128.0.1", "169.255.0.1", "fec0::1"]


@pytest.mark.parametrize(("address", "kind"), ALWAYS_BLOCKED)
def test_always_blocked_under_both_policies(address: str, kind: str) -> None:
    for policy in (DEFAULT, PUBLIC_ONLY):
        assert policy.blocked(address) == f"{address} is {kind} ({ALWAYS})"


@pytest.mark.parametrize(("address", "kind"), PUBLIC_ONLY_BLOCKED)
def test_public_only_adds_local_ranges(address: str, kind: str) -> None:
    assert DEFAULT.blocked(address) is None
    assert PUBLIC_ONLY.blocked(address) == f"{address} is {kind} ({BY_ENV})"


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert DEFAULT.blocked(address) is None
    assert PUBLIC_ONLY.blocked(address) is None


def test_address_objects_are_accepted() -> None:
    assert DEFAULT.blocked(ipaddress.ip_address("169.254.169.254")) == (
        f"169.254.169.254 is a cloud metadata address ({ALWAYS})"
    )
    assert DEFAULT.blocked(ipaddress.ip_address("8.8.8.8")) is None


@pytest.mark.parametrize(
    ("address", "carried", "policy", "kind"),
    [
        ("::ffff:169.254.169.254", "IPv4-mapped 169.254.169.254", DEFAULT, "a cloud metadata"),
        ("::ffff:a9fe:101", "IPv4-mapped 169.254.1.1", DEFAULT, "a link-local"),
        ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1", PUBLIC_ONLY, "a loopback"),
        ("::169.254.169.254", "IPv4-compatible 169.254.169.254", DEFAULT, "a cloud metadata"),
        ("::10.0.0.1", "IPv4-compatible 10.0.0.1", PUBLIC_ONLY, "a private (RFC 1918)"),
        ("64:ff9b::a9fe:a9fe", "NAT64 169.254.169.254", DEFAULT, "a cloud metadata"),
        ("64:ff9b::e000:1", "NAT64 224.0.0.1", DEFAULT, "a multicast"),
        ("64:ff9b:1::7f00:1", "NAT64 127.0.0.1", PUBLIC_ONLY, "a loopback"),
    ],
)
def test_embedded_ipv4_is_checked_as_ipv4(
    address: str, carried: str, policy: EgressPolicy, kind: str
) -> None:
    reason = policy.blocked(address)
    assert reason is not None
    assert reason.startswith(f"{address} ({carried}) is {kind} address (")


def test_embedded_public_ipv4_is_allowed() -> None:
    for address in ("::ffff:8.8.8.8", "64:ff9b::808:808", "::8.8.8.8"):
        assert PUBLIC_ONLY.blocked(address) is None, address
    # An embedded private address is only blocked where the IPv4 one would be.
    assert DEFAULT.blocked("::ffff:127.0.0.1") is None


def test_unspecified_and_loopback_v6_are_not_read_as_ipv4_compatible() -> None:
    assert DEFAULT.blocked("::") == f":: is the unspecified address ({ALWAYS})"
    assert PUBLIC_ONLY.blocked("::1") == f"::1 is a loopback address ({BY_ENV})"


def test_allow_lifts_a_block_for_a_network_only() -> None:
    policy = EgressPolicy.from_env(["10.20.0.0/16", "fd00::/8"], env={EGRESS_ENV: "public-only"})
    assert policy.blocked("10.20.3.4") is None
    assert policy.blocked("fd00::1") is None
    assert policy.blocked("10.21.0.1") == f"10.21.0.1 is a private (RFC 1918) address ({BY_ENV})"
    assert policy.blocked("127.0.0.1") is not None


def test_allow_a_single_address() -> None:
    policy = EgressPolicy(allow=parse_networks(["169.254.169.254"]))
    assert policy.blocked("169.254.169.254") is None
    assert policy.blocked("::ffff:169.254.169.254") is None  # its embedded form too
    assert (
        policy.blocked("169.254.169.253") == f"169.254.169.253 is a link-local address ({ALWAYS})"
    )


def test_allow_matches_the_address_as_given() -> None:
    policy = EgressPolicy(allow=parse_networks(["64:ff9b::/96"]))
    assert policy.blocked("64:ff9b::a9fe:a9fe") is None
    assert DEFAULT.blocked("64:ff9b::a9fe:a9fe") is not None


def test_parse_networks_reads_networks_and_addresses() -> None:
    assert parse_networks(["10.20.0.0/16", " 169.254.169.254 ", "fd00::/8"]) == (
        ipaddress.ip_network("10.20.0.0/16"),
        ipaddress.ip_network("169.254.169.254/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert parse_networks([]) == ()


def test_parse_networks_refuses_host_bits() -> None:
    with pytest.raises(ValueError) as caught:
        parse_networks(["10.20.0.1/16"])
    assert str(caught.value) == (
        '"10.20.0.1/16" has host bits set: give the network, 10.20.0.0/16, or the single '
        "address, 10.20.0.1."
    )


@pytest.mark.parametrize("entry", ["hooks.example.com", "", "10.0.0.0/33", "10.0.0", "::g"])
def test_parse_networks_names_a_bad_entry(entry: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_networks(["10.0.0.0/8", entry])
    message = str(caught.value)
    assert message.startswith(f'"{entry}" is not a network or an address: give one like ')
    assert "10.20.0.0/16" in message


@pytest.mark.parametrize(
    ("value", "public_only"),
    [(None, False), ("", False), ("default", False), ("public-only", True)],
)
def test_from_env_values(value: str | None, public_only: bool) -> None:
    env = {} if value is None else {EGRESS_ENV: value}
    assert EgressPolicy.from_env(env=env) == EgressPolicy(public_only=public_only)


@pytest.mark.parametrize("value", ["public_only", "PUBLIC-ONLY", "strict", "public-only "])
def test_from_env_refuses_other_values(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        EgressPolicy.from_env(env={EGRESS_ENV: value})
    message = str(caught.value)
    assert message.startswith(f'HOOKCAST_EGRESS="{value}" is not an egress policy: use ')
    assert "public-only" in message and "default" in message


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EGRESS_ENV, "public-only")
    assert EgressPolicy.from_env().public_only
    monkeypatch.delenv(EGRESS_ENV)
    assert not EgressPolicy.from_env().public_only


def test_from_env_parses_allow() -> None:
    with pytest.raises(ValueError, match="host bits"):
        EgressPolicy.from_env(["10.20.0.1/16"], env={})


def test_stricter_keeps_public_only_and_own_allow() -> None:
    job = EgressPolicy(allow=parse_networks(["10.20.0.0/16"]))
    node = EgressPolicy(public_only=True, allow=parse_networks(["10.0.0.0/8"]))
    assert job.stricter(node) == EgressPolicy(public_only=True, allow=job.allow)
    assert job.stricter(DEFAULT) == job
    assert node.stricter(job) == node
    assert DEFAULT.stricter(DEFAULT) == DEFAULT


def test_url_problem_literal_addresses() -> None:
    assert DEFAULT.url_problem("http://169.254.169.254/latest/meta-data?token=s3cret") == (
        '"http://169.254.169.254/latest/meta-data": 169.254.169.254 is a cloud metadata address '
        f"({ALWAYS})."
    )
    assert DEFAULT.url_problem("https://[fe80::1]:8443/hook") == (
        f'"https://[fe80::1]:8443/hook": fe80::1 is a link-local address ({ALWAYS}).'
    )
    assert DEFAULT.url_problem("http://127.0.0.1:9000/hook") is None
    assert PUBLIC_ONLY.url_problem("http://127.0.0.1:9000/hook") == (
        f'"http://127.0.0.1:9000/hook": 127.0.0.1 is a loopback address ({BY_ENV}).'
    )
    assert PUBLIC_ONLY.url_problem("https://[2606:4700::1]/hook") is None


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/x", "http://169.254.169.254.nip.io/", "http://2130706433/", "::"],
)
def test_url_problem_leaves_names_to_connect_time(url: str) -> None:
    assert PUBLIC_ONLY.url_problem(url) is None


# Real connections: a server on 127.0.0.1 that counts the connections it accepts.


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hosts.append(self.headers["Host"])  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.accepted = 0
        self.hosts: list[str] = []

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        self.accepted += 1  # on accept, before a byte is read: before any answer is sent
        super().process_request(request, client_address)


@pytest.fixture(scope="module")
def _running() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(_running: _Server) -> _Server:
    _running.accepted = 0
    _running.hosts.clear()
    return _running


def assert_no_connection(server: _Server) -> None:
    """Nothing reached the server: a probe made now is the first connection it accepts
    (the listen queue is first in, first out, so an earlier connection would count first)."""
    probe = httpx.get(f"http://127.0.0.1:{server.server_port}/", trust_env=False)
    assert probe.status_code == 200
    assert server.accepted == 1


Get = Callable[..., httpx.Response]


def _get_sync(policy: EgressPolicy, url: str, resolver: Resolver | None = None) -> httpx.Response:
    transport = guarded_transport(policy, resolver=resolver)
    with httpx.Client(transport=transport, timeout=5) as client:
        return client.get(url)


def _get_async(policy: EgressPolicy, url: str, resolver: Resolver | None = None) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = guarded_async_transport(policy, resolver=resolver)
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            return await client.get(url)

    return asyncio.run(get())


@pytest.fixture(params=[_get_sync, _get_async], ids=["sync", "async"])
def get(request: pytest.FixtureRequest) -> Get:
    return request.param


def blocked_error(get: Get, *args: object) -> httpx.ConnectError:
    with pytest.raises(httpx.ConnectError) as caught:
        get(*args)
    assert isinstance(caught.value.__cause__, EgressBlockedError)
    assert str(caught.value) == str(caught.value.__cause__)
    return caught.value


def test_default_policy_reaches_localhost(get: Get, server: _Server) -> None:
    response = get(DEFAULT, f"http://localhost:{server.server_port}/")  # real getaddrinfo
    assert response.text == "ok"
    assert server.accepted == 1


def test_public_only_refuses_localhost_before_connecting(get: Get, server: _Server) -> None:
    error = blocked_error(get, PUBLIC_ONLY, f"http://localhost:{server.server_port}/")
    message = str(error)
    assert message.startswith(("localhost resolves to 127.0.0.1, ", "localhost resolves to ::1, "))
    assert message.endswith(f", a loopback address ({BY_ENV}): no connection was made")
    assert_no_connection(server)


def test_a_literal_address_is_checked_without_resolving(get: Get, server: _Server) -> None:
    error = blocked_error(get, PUBLIC_ONLY, f"http://127.0.0.1:{server.server_port}/")
    assert str(error) == f"127.0.0.1 is a loopback address ({BY_ENV}): no connection was made"
    assert_no_connection(server)


def test_a_numeric_name_is_checked_as_what_it_resolves_to(get: Get, server: _Server) -> None:
    # 2130706433 is not an address to httpx or urlsplit, but getaddrinfo reads it as 127.0.0.1.
    error = blocked_error(get, PUBLIC_ONLY, f"http://2130706433:{server.server_port}/")
    assert str(error).startswith("2130706433 resolves to 127.0.0.1, a loopback address")
    assert_no_connection(server)


def test_a_mixed_answer_is_refused(get: Get, server: _Server) -> None:
    def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.test", server.server_port)
        return ["127.0.0.1", "169.254.169.254"]

    error = blocked_error(get, DEFAULT, f"http://hooks.test:{server.server_port}/", resolver)
    assert str(error) == (
        f"hooks.test resolves to 169.254.169.254, a cloud metadata address ({ALWAYS}): "
        "no connection was made"
    )
    assert_no_connection(server)


def test_a_resolved_name_is_connected_to_by_address(get: Get, server: _Server) -> None:
    response = get(DEFAULT, f"http://hooks.test:{server.server_port}/", lambda h, p: ["127.0.0.1"])
    assert response.status_code == 200
    assert server.hosts == [f"hooks.test:{server.server_port}"]
    assert server.accepted == 1


def test_the_addresses_are_tried_in_order(get: Get, server: _Server) -> None:
    # Nothing listens on 127.0.0.2: refused, then 127.0.0.1 answers.
    url = f"http://hooks.test:{server.server_port}/"
    response = get(DEFAULT, url, lambda h, p: ["127.0.0.2", "127.0.0.1"])
    assert response.status_code == 200
    assert server.accepted == 1
    with pytest.raises(httpx.ConnectError) as caught:
        get(DEFAULT, url, lambda h, p: ["127.0.0.2"])
    assert not isinstance(caught.value.__cause__, EgressBlockedError)  # the connect's own error
    assert server.accepted == 1


def test_no_address_is_a_connect_error(get: Get, server: _Server) -> None:
    with pytest.raises(httpx.ConnectError, match=r"^hooks\.test resolves to no address$"):
        get(DEFAULT, f"http://hooks.test:{server.server_port}/", lambda h, p: [])


def test_an_unknown_name_is_a_connect_error(get: Get, monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list:
        assert host in ("hooks.test", b"hooks.test")
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # no DNS server is asked
    with pytest.raises(httpx.ConnectError, match="Name or service not known") as caught:
        get(DEFAULT, "http://hooks.test/")
    assert not isinstance(caught.value.__cause__, EgressBlockedError)


def test_env_proxies_are_not_used_with_the_transport(
    get: Get, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx reads HTTP(S)_PROXY only for a client built without a transport: with the guarded
    # transport the request goes direct (and is guarded), not to the (dead) proxy.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert get(DEFAULT, f"http://127.0.0.1:{server.server_port}/").status_code == 200
    blocked_error(get, PUBLIC_ONLY, f"http://127.0.0.1:{server.server_port}/")


def test_a_connection_the_server_closed_is_not_reused() -> None:
    """httpcore asks each pooled connection whether its socket turned readable (the server
    closed it) before reusing it; the guarded stream answers from the socket it kept.
    Reusing a closed connection would fail the second request."""
    accepted = 0

    async def answer_once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # no Connection: close
        await writer.drain()
        writer.close()

    async def two_requests() -> list[str]:
        server = await asyncio.start_server(answer_once_then_close, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with server, httpx.AsyncClient(transport=guarded_async_transport(DEFAULT)) as client:
            first = await client.get(url)
            for _ in range(100):  # until the close has reached this side
                await asyncio.sleep(0.01)
                pooled = client._transport._pool.connections  # type: ignore[attr-defined]
                if pooled and pooled[0]._connection._network_stream.get_extra_info("is_readable"):
                    break
            second = await client.get(url)
        return [first.text, second.text]

    assert asyncio.run(two_requests()) == ["ok", "ok"]
    assert accepted == 2
