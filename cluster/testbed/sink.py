"""The receiver hookcast broadcasts to in the demo, the benchmark and the tests.

A raw ASGI app served by uvicorn (httptools and uvloop when installed). Every POST other than
a control path is a broadcast: a JSON list whose elements carry ``contact.id``. What the sink
answers is decided per request by a *behaviour*; what arrived is kept by a `Recorder`.

Control paths: ``GET /_stats`` (and ``GET /``) answer `Recorder.snapshot` (counts, and the wall
clock of the first and last request); ``POST /_reset`` clears the recorder. Every answer is
``application/json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import simdjson
import uvicorn

from hookcast.cluster.testbed.behaviours import (
    OK,
    Behaviour,
    Reply,
    Request,
    accept,
    ask,
    compose,
    fail_rate,
    latency,
    make_behaviour,
    rate_limited,
)

# The behaviours are re-exported: a test or a script builds a sink from this one module.
__all__ = [
    "OK",
    "Arrival",
    "Behaviour",
    "Recorder",
    "Reply",
    "Request",
    "Sink",
    "SinkApp",
    "accept",
    "compose",
    "fail_rate",
    "latency",
    "main",
    "make_behaviour",
    "parse_contact_ids",
    "rate_limited",
    "serve",
]

logger = logging.getLogger(__name__)

_JSON = (b"content-type", b"application/json")
_CONTROL_PATHS = ("/_stats", "/_reset")


@dataclass(frozen=True, slots=True)
class Arrival:
    """One broadcast request as the sink received and answered it."""

    t: float  # time.monotonic() when the request arrived
    key: str | None  # the Idempotency-Key header
    ids: tuple[int, ...]  # contact ids in body order; () when the body did not parse
    status: int  # what the sink answered
    headers: dict[str, str]  # lower-cased names
    path: str
    query: str


def parse_contact_ids(body: bytes) -> tuple[int, ...]:
    """The ``contact.id`` of each element of a JSON list, in order.

    Raises ValueError, saying what is wrong, when the body is anything else. simdjson
    validates the whole document but builds Python objects only for the ids: 0.17 ms per
    500-contact body against 2.1 ms with ``orjson.loads`` (measured), so the receiver is not
    what a benchmark or load test measures. A parser per call: its documents die with it.
    """
    try:
        data = simdjson.Parser().parse(body)
        if not isinstance(data, simdjson.Array):
            kind = "object" if isinstance(data, simdjson.Object) else type(data).__name__
            raise TypeError(f"the body is a JSON {kind}, not a list")
        ids = tuple([element["contact"]["id"] for element in data])
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"body is not a JSON list of objects with contact.id: {exc}") from None
    if not all(type(i) is int for i in ids):
        raise ValueError("body is not a JSON list of objects with contact.id: an id is no integer")
    return ids


class Recorder:
    """What a sink received. Safe to read from any thread while the sink runs.

    ``contacts``, ``delivered_ids`` and ``duplicate_ids`` count only requests answered 2xx;
    ``contacts == len(delivered_ids) + duplicate_ids``. ``requests``, ``bytes`` and
    ``statuses`` count every broadcast, garbage included. A request is recorded when its
    answer is about to be sent, after any delay, even if the client has given up by then (as
    an endpoint that did the work would). Readers get copies.
    """

    def __init__(self, keep_arrivals: bool = True) -> None:
        self.keep_arrivals = keep_arrivals
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything received; arrival numbering starts again at 1."""
        with self._lock:
            self._n = 0
            self._requests = 0
            self._contacts = 0
            self._bytes = 0
            self._duplicates = 0
            self._statuses: Counter[int] = Counter()
            self._ids: set[int] = set()
            self._arrivals: list[Arrival] = []
            self._first_at: float | None = None
            self._last_at: float | None = None

    def next_n(self) -> int:
        """Number the next arrival: 1, 2, … since the last reset."""
        with self._lock:
            self._n += 1
            return self._n

    def record(self, arrival: Arrival, n_bytes: int) -> None:
        # Wall-clock arrival time, so a benchmark can subtract another process's start time.
        arrived_at = time.time() - (time.monotonic() - arrival.t)
        with self._lock:
            if self._first_at is None:
                self._first_at = arrived_at
            self._last_at = arrived_at if self._last_at is None else max(self._last_at, arrived_at)
            self._requests += 1
            self._bytes += n_bytes
            self._statuses[arrival.status] += 1
            if 200 <= arrival.status < 300:
                ids = arrival.ids
                before = len(self._ids)
                self._ids.update(ids)
                self._duplicates += len(ids) - (len(self._ids) - before)
                self._contacts += len(ids)
            if self.keep_arrivals:
                self._arrivals.append(arrival)

    @property
    def requests(self) -> int:
        return self._requests

    @property
    def contacts(self) -> int:
        return self._contacts

    @property
    def duplicate_ids(self) -> int:
        """Deliveries of an id that had already been delivered."""
        return self._duplicates

    @property
    def statuses(self) -> Counter[int]:
        with self._lock:
            return self._statuses.copy()

    @property
    def delivered_ids(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._ids)

    @property
    def arrivals(self) -> list[Arrival]:
        """Every broadcast in arrival order; empty unless ``keep_arrivals``."""
        with self._lock:
            return list(self._arrivals)

    def snapshot(self) -> dict[str, Any]:
        """The counts as one JSON-able dict, taken atomically."""
        with self._lock:
            return {
                "requests": self._requests,
                "contacts": self._contacts,
                "unique_ids": len(self._ids),
                "duplicate_ids": self._duplicates,
                "bytes": self._bytes,
                "statuses": {str(s): n for s, n in sorted(self._statuses.items())},
                "first_request_at": self._first_at,
                "last_request_at": self._last_at,
            }

    @property
    def bytes(self) -> int:
        return self._bytes


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class SinkApp:
    """The ASGI app. ``behaviour`` may be replaced at any time; the next request uses it."""

    def __init__(self, recorder: Recorder | None = None, behaviour: Behaviour | None = None):
        self.recorder = recorder if recorder is not None else Recorder()
        self.behaviour: Behaviour = behaviour or accept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path not in _CONTROL_PATHS:
            await self._broadcast(scope, receive, send)
        elif method == "GET" and path in ("/", "/_stats"):
            await _respond(send, 200, orjson.dumps(self.recorder.snapshot()))
        elif method == "POST" and path == "/_reset":
            self.recorder.reset()
            await _respond(send, 200, OK.body)
        else:
            error = f"{method} {path} is not served: POST a broadcast, GET /_stats, POST /_reset"
            await _respond(send, 405, orjson.dumps({"error": error}))

    async def _broadcast(self, scope: Scope, receive: Receive, send: Send) -> None:
        t = time.monotonic()
        n = self.recorder.next_n()
        body = await _read_body(receive)
        if body is None:
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("idempotency-key")
        path, query = scope["path"], scope["query_string"].decode("latin-1")
        try:
            ids = parse_contact_ids(body)
        except ValueError as exc:
            ids, reply = (), Reply(400, body=orjson.dumps({"error": str(exc)}))
        else:
            try:
                reply = await ask(self.behaviour, Request(path, query, headers, key, ids, body, n))
            except Exception as exc:
                logger.exception("sink behaviour %r failed on request %d", self.behaviour, n)
                reply = Reply(500, body=orjson.dumps({"error": f"behaviour failed: {exc!r}"}))
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        self.recorder.record(Arrival(t, key, ids, reply.status, headers, path, query), len(body))
        await _respond(send, reply.status, reply.body, reply.headers)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _respond(
    send: Send, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()
) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if not any(k == b"content-type" for k, _ in raw):
        raw.append(_JSON)
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _listen(host: str, port: int) -> socket.socket:
    # Binding here, not in uvicorn, makes a busy port an OSError for the caller (uvicorn
    # would log it and sys.exit) and gives the real port at once when port=0.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}/hook" if ":" in host else f"http://{host}:{port}/hook"


def _config(app: SinkApp, sock: socket.socket) -> uvicorn.Config:
    host, port = sock.getsockname()[:2]
    # log_config=None: uvicorn's loggers propagate to whatever the caller configured.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
    )


class Sink:
    """A receiver served by uvicorn in a daemon thread, for tests and the demo.

    ``start()`` returns once the socket is listening; ``url`` is then final. ``behaviour``
    may be reassigned while running. Binds to loopback unless told otherwise.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: Behaviour | None = None,
        keep_arrivals: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.recorder = Recorder(keep_arrivals)
        self.app = SinkApp(self.recorder, behaviour)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def behaviour(self) -> Behaviour:
        return self.app.behaviour

    @behaviour.setter
    def behaviour(self, behaviour: Behaviour | None) -> None:
        self.app.behaviour = behaviour or accept

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/hook``; only known once started."""
        if self._url is None:
            raise RuntimeError("the sink has no URL before start(): call start() first.")
        return self._url

    def start(self, timeout_s: float = 10.0) -> Sink:
        """Listen and serve; raises OSError when the address cannot be bound."""
        if self._thread is not None:
            raise RuntimeError(f"the sink at {self._url} is already started.")
        sock = _listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._url = _url(sock)
        server = uvicorn.Server(_config(self.app, sock))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"sink-{self.port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the sink on {self._url} did not start within {timeout_s} s: "
                    "see the uvicorn error logged above."
                )
            time.sleep(0.002)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving: in-flight requests get ``timeout_s`` to finish; then they are
        cancelled unrecorded and unanswered (uvicorn logs each as an error)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout_s)
        if thread.is_alive():
            server.force_exit = True
            thread.join(2.0)
        self._server = self._thread = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _ForegroundServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    def handle_exit(self, sig: int, frame: object) -> None:
        # uvicorn's own handler re-raises the signal after shutting down (killing the
        # process on SIGTERM); serve() promises to return instead.
        self.force_exit = self.should_exit
        self.should_exit = True


def serve(
    host: str,
    port: int,
    *,
    behaviour: Behaviour | None = None,
    keep_arrivals: bool = False,
    on_started: Callable[[str], None] | None = None,
    recorder: Recorder | None = None,
) -> None:
    """Serve a sink in the foreground until Ctrl-C or SIGTERM, then return.

    ``on_started(url)`` is called once the sink answers requests. Raises OSError when the
    address cannot be bound.
    """
    sock = _listen(host, port)
    url = _url(sock)
    app = SinkApp(recorder or Recorder(keep_arrivals), behaviour)
    started = (lambda: on_started(url)) if on_started is not None else None
    _ForegroundServer(_config(app, sock), started).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hookcast.cluster.testbed.sink",
        description="A hookcast receiver in the foreground.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction answered 500")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rps", type=float, default=None, help="answer 429 above this rate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    behaviour = make_behaviour(
        failure_rate=args.fail_rate, latency_ms=args.latency_ms, rps=args.rps
    )
    serve(
        args.host,
        args.port,
        behaviour=behaviour,
        on_started=lambda url: print(f"listening on {url}", flush=True),
    )


if __name__ == "__main__":
    main()
