import asyncio
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from hookcast.cluster.testbed.sink import (
    Reply,
    Request,
    Sink,
    compose,
    fail_rate,
    latency,
    parse_contact_ids,
    rate_limited,
)

ROOT = Path(__file__).resolve().parents[2]


def element(contact_id: int) -> dict:
    return {
        "sendTime": 1692774832443,
        "contact": {
            "dateCreated": "2022-12-20 09:22:17",
            "lastUpdated": "2023-08-23 01:10:23",
            "ver": 193,
            "id": contact_id,
            "name": "树",
            "gender": "male",
            "utm": {"source": "企业微信", "medium": "名片分享"},
            "props": {"haha": 3, "tier": "gold", "score": 0.75},
            "isAnonymous": False,
            "identities": [
                {"id": "ov7GewyvTj93CtHYJujyfqoe0XFY", "type": "wechat.openId"},
                {"id": "o6_bmasdasdsad6_2sgVt7hMZOPfL", "type": "wechat.unionId"},
            ],
        },
        "_custom": {"a1": "1", "a2": "2", "campaign": "autumn-sale"},
    }


def body_of(*ids: int) -> bytes:
    return orjson.dumps([element(i) for i in ids])


@pytest.fixture(scope="module")
def running_sink():
    with Sink() as sink:
        yield sink


@pytest.fixture
def sink(running_sink: Sink) -> Sink:
    running_sink.behaviour = None
    running_sink.recorder.reset()
    running_sink.recorder.keep_arrivals = True
    return running_sink


@pytest.fixture
def client():
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def post(client: httpx.Client, url: str, body: bytes, key: str = "k") -> httpx.Response:
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    return client.post(url, content=body, headers=headers)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def request(n: int = 1) -> Request:
    return Request("/hook", "", {}, None, (1,), b"", n)


def test_valid_body_is_recorded_with_ids_key_and_200(sink: Sink, client: httpx.Client):
    response = post(client, sink.url + "?a=1", body_of(7, 8, 9), key="batch-1")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    (arrival,) = sink.recorder.arrivals
    assert (arrival.ids, arrival.key, arrival.status) == ((7, 8, 9), "batch-1", 200)
    assert (arrival.path, arrival.query) == ("/hook", "a=1")
    assert arrival.headers["idempotency-key"] == "batch-1"
    assert sink.recorder.contacts == 3
    assert sink.recorder.delivered_ids == {7, 8, 9}


@pytest.mark.parametrize(
    "body", [b"not json", b'{"contact": {"id": 1}}', b"[1, 2]", b'[{"contact": {}}]']
)
def test_garbage_body_answers_400_and_delivers_nothing(
    sink: Sink, client: httpx.Client, body: bytes
):
    response = post(client, sink.url, body)

    assert response.status_code == 400
    assert "contact.id" in response.json()["error"]
    (arrival,) = sink.recorder.arrivals
    assert (arrival.ids, arrival.status) == ((), 400)
    assert sink.recorder.delivered_ids == frozenset()
    assert sink.recorder.snapshot()["statuses"] == {"400": 1}


def test_fail_rate_one_answers_500_and_delivers_nothing(sink: Sink, client: httpx.Client):
    sink.behaviour = fail_rate(1.0)

    assert post(client, sink.url, body_of(1, 2)).status_code == 500
    assert sink.recorder.delivered_ids == frozenset()
    assert sink.recorder.contacts == 0
    assert sink.recorder.statuses == {500: 1}


def test_behaviour_switched_mid_run_applies_to_the_next_request(sink: Sink, client: httpx.Client):
    assert post(client, sink.url, body_of(1)).status_code == 200
    sink.behaviour = fail_rate(1.0, status=503)
    assert post(client, sink.url, body_of(2)).status_code == 503

    assert sink.recorder.delivered_ids == {1}


def test_rate_limited_answers_429_with_retry_after_above_the_rate(sink: Sink, client: httpx.Client):
    sink.behaviour = rate_limited(5, retry_after="2")

    responses = [post(client, sink.url, body_of(i)) for i in range(7)]

    assert [r.status_code for r in responses] == [200] * 5 + [429] * 2
    assert responses[-1].headers["retry-after"] == "2"
    assert sink.recorder.contacts == 5


def test_rate_limited_window_slides_with_the_clock():
    clock = Clock()
    behaviour = rate_limited(2, clock=clock)

    assert [behaviour(request()).status for _ in range(3)] == [200, 200, 429]
    clock.now += 0.5
    assert behaviour(request()).status == 429
    clock.now += 0.5
    assert [behaviour(request()).status for _ in range(3)] == [200, 200, 429]


def test_latency_delays_the_answer(sink: Sink, client: httpx.Client):
    sink.behaviour = latency(60)

    started = time.monotonic()
    assert post(client, sink.url, body_of(1)).status_code == 200
    assert time.monotonic() - started >= 0.06


def test_compose_first_failure_wins_and_delays_add_up():
    behaviour = compose(latency(10), fail_rate(1.0, status=502), latency(1000))

    reply = asyncio.run(behaviour(request()))

    assert (reply.status, reply.delay_s) == (502, 0.01)


def test_async_behaviour_sees_request_and_is_awaited(sink: Sink, client: httpx.Client):
    seen = []

    async def behaviour(request: Request) -> Reply:
        seen.append((request.n, request.key, request.ids, request.headers["x-tenant"]))
        return Reply(202, headers=(("X-Seen", "yes"),))

    sink.behaviour = behaviour
    response = client.post(
        sink.url, content=body_of(4, 5), headers={"Idempotency-Key": "b", "X-Tenant": "t1"}
    )

    assert (response.status_code, response.headers["x-seen"]) == (202, "yes")
    assert seen == [(1, "b", (4, 5), "t1")]
    assert sink.recorder.delivered_ids == {4, 5}


def test_failing_behaviour_answers_500(sink: Sink, client: httpx.Client):
    sink.behaviour = lambda request: 1 / 0

    assert post(client, sink.url, body_of(1)).status_code == 500
    assert sink.recorder.delivered_ids == frozenset()


def test_stats_and_reset_over_http(sink: Sink, client: httpx.Client):
    body = body_of(1, 2)
    post(client, sink.url, body)
    base = sink.url.removesuffix("/hook")

    stats = client.get(base + "/_stats").json()

    assert stats.pop("first_request_at") == stats.pop("last_request_at") > 0
    assert stats == {
        "requests": 1,
        "contacts": 2,
        "unique_ids": 2,
        "duplicate_ids": 0,
        "bytes": len(body),
        "bytes_received": len(body),
        "bytes_decoded": len(body),
        "gzip_requests": 0,
        "signatures_verified": 0,
        "signatures_rejected": 0,
        "statuses": {"200": 1},
    }
    assert client.get(base + "/").json().items() >= stats.items()
    assert client.post(base + "/_reset").status_code == 200
    assert client.get(base + "/_stats").json()["requests"] == 0
    assert sink.recorder.arrivals == []


def test_id_delivered_by_two_2xx_requests_counts_as_duplicate(sink: Sink, client: httpx.Client):
    post(client, sink.url, body_of(1, 2), key="a")
    sink.behaviour = fail_rate(1.0)
    post(client, sink.url, body_of(2, 3), key="b")
    sink.behaviour = None
    post(client, sink.url, body_of(2, 4), key="c")

    snapshot = sink.recorder.snapshot()
    assert (snapshot["contacts"], snapshot["unique_ids"], snapshot["duplicate_ids"]) == (4, 3, 1)


def test_sink_start_on_a_busy_port_raises_oserror(sink: Sink):
    with pytest.raises(OSError):
        Sink(port=sink.port).start()


def test_module_prints_url_and_answers():
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookcast.cluster.testbed.sink", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the sink printed nothing within 20 s"
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        assert url.endswith("/hook")
        with httpx.Client(trust_env=False, timeout=10) as client:
            assert post(client, url, body_of(1, 2)).status_code == 200
            assert client.get(url.removesuffix("/hook") + "/_stats").json()["contacts"] == 2
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_measure_500_element_posts(sink: Sink, client: httpx.Client):
    sink.recorder.keep_arrivals = False
    body = body_of(*range(706330500415491, 706330500415491 + 500))
    posts = 200

    started = time.perf_counter()
    for _ in range(posts):
        parse_contact_ids(body)
    parse_s = time.perf_counter() - started

    started = time.perf_counter()
    for i in range(posts):
        post(client, sink.url, body, key=str(i))
    http_s = time.perf_counter() - started

    assert sink.recorder.contacts == posts * 500
    print(
        f"\nbody {len(body) / 1000:.0f} kB x {posts}: "
        f"parse {parse_s / posts * 1000:.2f} ms/body ({posts * 500 / parse_s:,.0f} contacts/s), "
        f"HTTP {http_s / posts * 1000:.2f} ms/post ({posts * 500 / http_s:,.0f} contacts/s)"
    )


def test_stats_give_the_wall_clock_of_the_first_and_last_request_until_reset(
    sink: Sink, client: httpx.Client
):
    assert sink.recorder.snapshot()["first_request_at"] is None
    before = time.time()
    post(client, sink.url, body_of(1), key="a")
    post(client, sink.url, body_of(2), key="b")
    after = time.time()
    base = sink.url.removesuffix("/hook")
    snapshot = client.get(base + "/_stats").json()
    assert before - 0.01 <= snapshot["first_request_at"] <= snapshot["last_request_at"] <= after
    client.post(base + "/_reset")
    assert client.get(base + "/_stats").json()["last_request_at"] is None
