"""The guard and TLS as the sender and the token fetcher meet them, over real sockets on
127.0.0.1: a refused address is never connected to and says which rule; an untrusted
certificate is a retry that says how to fix it; ``for_node`` keeps a node's policy."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pyarrow as pa
import pytest
import trustme

from hookcast.actors.auth import AuthorizationConfig, fetch_token
from hookcast.actors.delivery import Outcome
from hookcast.actors.egress import EGRESS_ENV, EgressPolicy
from hookcast.actors.errors import TokenRequestError
from hookcast.actors.render import ELEMENT_COLUMN, SEND_TIME_PLACEHOLDER
from hookcast.actors.sender import BatchOrder, Sender, SenderConfig
from hookcast.actors.tls import TlsConfig
from hookcast.cluster.testbed.sink import Sink, SinkTls
from tests.ports import accepted

PUBLIC_ONLY = EgressPolicy(public_only=True)


def chunk() -> pa.Table:
    element = f'{{"sendTime":{SEND_TIME_PLACEHOLDER},"contact":{{"id":1}}}}'
    return pa.table({"seq": pa.array([0], pa.int64()), ELEMENT_COLUMN: [element]})


def deliver(config: SenderConfig):
    async def go():
        sender = Sender(config)
        try:
            (result,) = await sender.deliver(chunk(), [BatchOrder(0, "run-000000", 1, 1)])
            return result
        finally:
            await sender.close()

    return asyncio.run(go())


def test_a_sender_refused_by_the_guard_makes_no_connection(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    result = deliver(SenderConfig(url=f"http://localhost:{port}/h", egress=PUBLIC_ONLY))
    assert result.outcome is Outcome.BLOCKED
    assert "localhost resolves to" in (result.error or "")
    assert "loopback" in (result.error or "") and "no connection was made" in (result.error or "")
    assert accepted(listener) == 0


def test_a_token_endpoint_refused_by_the_guard_is_not_retried(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    config = AuthorizationConfig(id="crm", url=f"http://localhost:{port}/t", egress=PUBLIC_ONLY)
    with pytest.raises(TokenRequestError) as caught:
        fetch_token(config, ["access_token"])
    assert caught.value.retryable is False
    assert "loopback" in str(caught.value) and "crm" in str(caught.value)
    assert accepted(listener) == 0


def test_a_nodes_own_policy_is_kept_and_a_bad_one_fails_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(EGRESS_ENV, "public-only")
    assert EgressPolicy.for_node(EgressPolicy()).public_only
    monkeypatch.setenv(EGRESS_ENV, "nonsense")
    assert EgressPolicy.for_node(EgressPolicy()).public_only
    monkeypatch.delenv(EGRESS_ENV)
    assert not EgressPolicy.for_node(EgressPolicy()).public_only


@pytest.fixture(scope="module")
def tls_sink(tmp_path_factory: pytest.TempPathFactory):
    folder: Path = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    server.private_key_pem.write_to_path(str(folder / "key.pem"))
    with Sink(tls=SinkTls(str(folder / "cert.pem"), str(folder / "key.pem"))) as sink:
        yield sink, ca.cert_pem.bytes().decode()


def test_an_untrusted_certificate_is_a_retry_that_says_what_to_do(tls_sink) -> None:
    sink, _ = tls_sink
    result = deliver(SenderConfig(url=sink.url))
    assert result.outcome is Outcome.RETRY
    assert "TLS certificate verification failed" in (result.error or "")
    assert "webhook.tls.ca_bundle" in (result.error or "")


def test_the_jobs_ca_is_trusted(tls_sink) -> None:
    sink, ca_pem = tls_sink
    result = deliver(SenderConfig(url=sink.url, tls=TlsConfig(ca_pem=ca_pem)))
    assert result.outcome is Outcome.DELIVERED, result.error
