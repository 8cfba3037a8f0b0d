"""Joining a cluster (cluster/connect.py): a Ray Client server that dies starting up gets one
more try, then a ClusterError (exit 4) that says where the head logs why."""

from __future__ import annotations

import socket

import pytest

from hookcast.actors.errors import ClusterError
from hookcast.cluster import connect

DIED = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback ...\nRuntimeError: Starting Ray client "
    "server failed. See ray_client_server_23000.err for detailed logs.\n"
)


@pytest.fixture
def listening_address():
    """A loopback port that accepts connections, so the reachability check passes."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"ray://127.0.0.1:{server.getsockname()[1]}"


def _ray_init_answering(monkeypatch: pytest.MonkeyPatch, *answers: object) -> list[str]:
    calls: list[str] = []

    def init(address: str, **options: object) -> object:
        calls.append(address)
        answer = answers[len(calls) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(connect.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(connect.ray, "init", init)
    monkeypatch.setattr(connect.ray, "shutdown", lambda: None)
    monkeypatch.setattr(connect.time, "sleep", lambda s: None)
    return calls


class _Context:
    dashboard_url = None


def test_a_client_server_that_died_starting_gets_one_more_try(monkeypatch, listening_address):
    calls = _ray_init_answering(monkeypatch, DIED, _Context())

    assert connect.connect(listening_address) == f"Ray cluster at {listening_address}"
    assert calls == [listening_address] * 2


def test_a_client_server_that_dies_twice_is_a_cluster_error_naming_its_log(
    monkeypatch, listening_address
):
    calls = _ray_init_answering(monkeypatch, DIED, DIED)

    with pytest.raises(ClusterError) as caught:
        connect.connect(listening_address)

    assert len(calls) == 2
    assert f"--address {listening_address}" in str(caught.value)
    assert "ray_client_server_<port>.err" in str(caught.value)


def test_any_other_refusal_is_not_retried(monkeypatch, listening_address):
    calls = _ray_init_answering(monkeypatch, ConnectionAbortedError("version mismatch"))

    with pytest.raises(ConnectionAbortedError):
        connect.connect(listening_address)
    assert len(calls) == 1
