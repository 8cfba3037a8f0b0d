"""The benchmark's DuckDB peer (bench/duckdb_route.py) against a real receiver: it delivers
every contact exactly once, and sends the same elements hookcast renders (sendTime aside)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from hookcast.actors.render import PayloadConfig, assemble_body
from hookcast.actors.segment import Segment, SegmentConfig
from hookcast.cluster.testbed import synth
from hookcast.cluster.testbed.sink import OK, Reply, Request, Sink

REPO = Path(__file__).resolve().parents[2]
PEER = str(REPO / "bench" / "duckdb_route.py")
CONTACTS = 5_000
# The CDP export's types (timestamps, a date, string props) once synth has them.
SHAPE = "cdp" if "cdp" in getattr(synth, "SHAPES", {}) else "seed"


@dataclass(frozen=True)
class PeerRun:
    audience: Path
    summary: dict
    bodies: list[bytes]
    keys: list[str | None]
    sink: Sink
    started_ms: int
    ended_ms: int


@pytest.fixture(scope="module")
def audience(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-routes") / f"contacts-{SHAPE}.parquet"
    if SHAPE == "seed":
        return synth.write_audience(path, CONTACTS)
    return synth.write_audience(path, CONTACTS, shape=SHAPE)


@pytest.fixture(scope="module")
def peer_run(audience: Path) -> Iterator[PeerRun]:
    """One run of the peer, as the benchmark starts it, against a receiver keeping bodies."""
    bodies: list[bytes] = []

    def keep_body(request: Request) -> Reply:
        bodies.append(request.body)
        return OK

    with Sink(behaviour=keep_body) as sink:
        started_ms = time.time_ns() // 1_000_000
        done = subprocess.run(
            [sys.executable, PEER, "--source", str(audience), "--url", sink.url, "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        ended_ms = time.time_ns() // 1_000_000
        assert done.returncode == 0, done.stderr
        keys = [arrival.key for arrival in sink.recorder.arrivals]
        yield PeerRun(audience, orjson.loads(done.stdout), bodies, keys, sink, started_ms, ended_ms)


def hookcast_elements(audience: Path) -> dict[int, dict]:
    """Every contact's element as hookcast's segment renders it for the benchmark's job,
    by contact id, without sendTime."""
    job = synth.load_test_job(
        "bench",
        "http://127.0.0.1/",
        audience,
        batch_size=500,
        max_in_flight=8,
        requests_per_second=None,
    )
    payload = PayloadConfig(
        contact=job["payload"]["contact"],
        identities=tuple(job["payload"]["identities"]),
        custom_json=orjson.dumps(job["payload"]["custom"]).decode(),
    )
    segment = Segment(SegmentConfig(str(audience), job["batch_size"], payload))
    try:
        elements = {}
        for chunk in segment.stream(segment.freeze()):
            for element in orjson.loads(assemble_body(chunk.column("element"), 0)):
                del element["sendTime"]
                elements[element["contact"]["id"]] = element
        return elements
    finally:
        segment.close()


def test_duckdb_route_delivers_every_contact_exactly_once(peer_run: PeerRun) -> None:
    ids = set(pq.read_table(peer_run.audience, columns=["id"]).column("id").to_pylist())
    recorder = peer_run.sink.recorder
    assert len(ids) == CONTACTS
    assert recorder.delivered_ids == ids
    assert recorder.contacts == CONTACTS and recorder.duplicate_ids == 0
    assert peer_run.summary["contacts"] == CONTACTS
    assert peer_run.summary["requests"] == CONTACTS // 500
    assert peer_run.summary["failed_requests"] == 0
    assert None not in peer_run.keys and len(set(peer_run.keys)) == len(peer_run.keys)


def test_duckdb_route_sends_the_elements_hookcast_renders(peer_run: PeerRun) -> None:
    sent: dict[int, dict] = {}
    for body in peer_run.bodies:
        elements = orjson.loads(body)
        stamps = {element.pop("sendTime") for element in elements}
        assert len(stamps) == 1  # one stamp per request
        assert peer_run.started_ms <= stamps.pop() <= peer_run.ended_ms
        sent.update((element["contact"]["id"], element) for element in elements)
    expected = hookcast_elements(peer_run.audience)
    assert len(sent) == len(expected) == CONTACTS
    different = [i for i in expected if sent.get(i) != expected[i]]
    assert not different, (
        f"{len(different)} elements differ, e.g. id {different[0]}:\n"
        f"duckdb route: {orjson.dumps(sent.get(different[0])).decode()}\n"
        f"hookcast:     {orjson.dumps(expected[different[0]]).decode()}"
    )
    # Same members in the same order, not only equal dicts.
    first = next(iter(expected))
    assert list(sent[first]) == list(expected[first])
    assert list(sent[first]["contact"]) == list(expected[first]["contact"])
