"""The receiver hookcast broadcasts to in the demo, the benchmark and the tests.

A raw ASGI app served by uvicorn (httptools and uvloop when installed). Every POST other than
a control path is a broadcast: a JSON list whose elements carry ``contact.id``. What the sink
answers is decided per request by a *behaviour*; what arrived is kept by a `Recorder`.

Before a behaviour is asked, the sink itself checks what a customer's receiver would: a
``Content-Encoding: gzip`` body is decompressed (at most `MAX_DECODED_BYTES`: 413 beyond, 400
when it is not gzip; any other encoding 415), and, when the sink holds signing secrets, the
Standard Webhooks signature over the decompressed body is verified with the official
``standardwebhooks`` library, the one customers' receivers use (401 when unsigned, badly
signed or stale). With `SinkTls` the sink serves HTTPS, or mutual TLS.

Control paths: ``GET /_stats`` (and ``GET /``) answer `Recorder.snapshot` (counts, and the wall
clock of the first and last request); ``POST /_reset`` clears the recorder. Every answer is
``application/json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import socket
import ssl
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import simdjson
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookcast.actors.signing import secret_problem
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
    "MAX_DECODED_BYTES",
    "OK",
    "Arrival",
    "Behaviour",
    "Recorder",
    "Reply",
    "Request",
    "Sink",
    "SinkApp",
    "SinkTls",
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
# A gzip body inflates to at most this: a gzip bomb costs the sink this much memory, no more.
MAX_DECODED_BYTES = 64 * 1024 * 1024
_GZIP = ("gzip", "x-gzip")  # x-gzip: the old name, which RFC 9110 asks recipients to accept


@dataclass(frozen=True, slots=True)
class Arrival:
    """One broadcast request as the sink received and answered it."""

    t: float  # time.monotonic() when the request arrived
    key: str | None  # the Idempotency-Key header
    ids: tuple[int, ...]  # contact ids in body order; () when refused before parsing or unparsed
    status: int  # what the sink answered
    headers: dict[str, str]  # lower-cased names
    path: str
    query: str
    verified: bool | None = None  # None: not checked (no secret held, or refused before)
    gzip: bool = False  # it came with Content-Encoding: gzip


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
    ``contacts == len(delivered_ids) + duplicate_ids``. ``requests``, ``bytes`` (as on the
    wire, also ``bytes_received``) and ``statuses`` count every broadcast, garbage included;
    ``bytes_decoded`` what the bodies held after decompression (0 for one that did not
    decompress). Signatures are counted only when the sink holds secrets: each verified
    request, and each answered 401 for its signature. A request is recorded when its answer
    is about to be sent, after any delay, even if the client has given up by then (as an
    endpoint that did the work would). Readers get copies.
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
            self._decoded = 0
            self._gzipped = 0
            self._verified = 0
            self._rejected = 0
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

    def record(self, arrival: Arrival, n_bytes: int, n_decoded: int | None = None) -> None:
        """Count one broadcast of ``n_bytes`` on the wire, ``n_decoded`` once decompressed
        (None: it was not compressed, as many as on the wire)."""
        # Wall-clock arrival time, so a benchmark can subtract another process's start time.
        arrived_at = time.time() - (time.monotonic() - arrival.t)
        with self._lock:
            if self._first_at is None:
                self._first_at = arrived_at
            self._last_at = arrived_at if self._last_at is None else max(self._last_at, arrived_at)
            self._requests += 1
            self._bytes += n_bytes
            self._decoded += n_bytes if n_decoded is None else n_decoded
            self._gzipped += arrival.gzip
            self._verified += arrival.verified is True
            self._rejected += arrival.verified is False
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
                "bytes_received": self._bytes,
                "bytes_decoded": self._decoded,
                "gzip_requests": self._gzipped,
                "signatures_verified": self._verified,
                "signatures_rejected": self._rejected,
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
    """The ASGI app. ``behaviour`` may be replaced at any time; the next request uses it.

    With ``secrets`` (``whsec_…``, several during a rotation) every broadcast must carry a
    Standard Webhooks signature that one of them verifies; ValueError, naming which secret
    but never showing it, when one is not a usable secret.
    """

    def __init__(
        self,
        recorder: Recorder | None = None,
        behaviour: Behaviour | None = None,
        secrets: Sequence[str] = (),
    ):
        self.recorder = recorder if recorder is not None else Recorder()
        self.behaviour: Behaviour = behaviour or accept
        self._webhooks = _webhooks(secrets)

    @property
    def verifies(self) -> bool:
        """Whether broadcasts must be signed: the sink holds at least one secret."""
        return bool(self._webhooks)

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
        wire = await _read_body(receive)
        if wire is None:
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("idempotency-key")
        path, query = scope["path"], scope["query_string"].decode("latin-1")
        encoding = headers.get("content-encoding")
        body, ids, verified = b"", (), None
        try:
            body = _decode(wire, encoding)
            if self._webhooks:
                verified = False
                _verify(self._webhooks, body, headers)
                verified = True
            ids = _ids(body)
        except _Refused as refused:
            reply = refused.reply
        else:
            reply = await self._ask(Request(path, query, headers, key, ids, body, n))
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        gzipped = _is_gzip(encoding)
        arrival = Arrival(t, key, ids, reply.status, headers, path, query, verified, gzipped)
        self.recorder.record(arrival, len(wire), len(body))
        await _respond(send, reply.status, reply.body, reply.headers)

    async def _ask(self, request: Request) -> Reply:
        """The behaviour's reply; 500 saying why when the behaviour raises."""
        try:
            return await ask(self.behaviour, request)
        except Exception as exc:
            logger.exception("sink behaviour %r failed on request %d", self.behaviour, request.n)
            return Reply(500, body=orjson.dumps({"error": f"behaviour failed: {exc!r}"}))


class _Refused(Exception):
    """A broadcast the sink answers itself, before any behaviour is asked."""

    def __init__(self, status: int, error: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(error)
        self.reply = Reply(status, headers=headers, body=orjson.dumps({"error": error}))


def _ids(body: bytes) -> tuple[int, ...]:
    """`parse_contact_ids`, a body that does not parse refused with 400."""
    try:
        return parse_contact_ids(body)
    except ValueError as exc:
        raise _Refused(400, str(exc)) from None


def _is_gzip(encoding: str | None) -> bool:
    return encoding is not None and encoding.strip().lower() in _GZIP


def _decode(wire: bytes, encoding: str | None) -> bytes:
    """The body as the sender wrote it, before its ``Content-Encoding``: a gzip body is
    decompressed; ``identity`` or no encoding is the body itself; any other refused (415,
    naming what is accepted)."""
    if _is_gzip(encoding):
        return _gunzip(wire, MAX_DECODED_BYTES)
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return wire
    raise _Refused(
        415,
        f"Content-Encoding {encoding[:100]!r} is not supported: send gzip, or no Content-Encoding.",
        (("Accept-Encoding", "gzip"),),
    )


def _gunzip(wire: bytes, limit: int) -> bytes:
    """Every gzip member of ``wire`` decompressed (as ``gzip.decompress`` does), refusing
    with 413 the moment more than ``limit`` bytes come out (only ``limit + 1`` are ever
    inflated, so a gzip bomb costs the sink that much memory), and with 400 what is not
    gzip or ends short."""
    parts: list[bytes] = []
    size, rest = 0, wire
    try:
        while True:
            inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer expected
            part = inflater.decompress(rest, limit + 1 - size)
            size += len(part)
            if size > limit:
                raise _Refused(
                    413,
                    f"the gzip body decompresses to more than {limit:,} bytes: the sink "
                    f"accepts at most {limit:,}; send smaller batches.",
                )
            if not inflater.eof:
                raise _Refused(400, "the gzip body is empty or ends short: send whole gzip data.")
            parts.append(part)
            rest = inflater.unused_data
            if not rest:
                return parts[0] if len(parts) == 1 else b"".join(parts)
    except zlib.error as exc:
        raise _Refused(
            400, f"the body is not gzip though Content-Encoding says so ({exc}): send gzip data."
        ) from None


def _webhooks(secrets: Sequence[str]) -> tuple[Webhook, ...]:
    """A verifier per secret; ValueError naming a bad secret by its place, never its value."""
    if isinstance(secrets, str):
        raise TypeError("secrets is one string: give a list of whsec_ secrets, e.g. [secret].")
    for i, secret in enumerate(secrets, 1):
        problem = secret_problem(secret)
        if problem is not None:
            raise ValueError(f"the sink's secret {i} of {len(secrets)} {problem}")
    return tuple(Webhook(secret) for secret in secrets)


# The library's reasons, said as what the sender must change.
_WHY_UNVERIFIED = {
    "Missing required headers": "the request is not signed: it needs the webhook-id, "
    "webhook-timestamp and webhook-signature headers",
    "Invalid Signature Headers": "webhook-timestamp is not a Unix time in seconds",
    "Message timestamp too old": "webhook-timestamp is more than 5 minutes old: sign each "
    "request when it is sent (5 minutes allowed either way)",
    "Message timestamp too new": "webhook-timestamp is more than 5 minutes ahead of the "
    "sink's clock: check the sender's clock (5 minutes allowed either way)",
    "No matching signature found": "no signature in webhook-signature matches a secret the "
    "sink holds: sign with the receiver's secret",
}


def _verify(webhooks: Sequence[Webhook], body: bytes, headers: dict[str, str]) -> None:
    """Return if one secret verifies the request, as a receiver mid-rotation would accept
    it; otherwise refuse it with 401 saying why. The official library decides."""
    why = ""
    for webhook in webhooks:
        try:
            webhook.verify(body, headers, json_parse=False)
            return
        except WebhookVerificationError as exc:
            why = _WHY_UNVERIFIED.get(str(exc), str(exc))
        except UnicodeDecodeError:
            why = "the body is not UTF-8, so it is not the JSON that was signed"
        except ValueError:  # binascii.Error included
            why = _MALFORMED
    if why == _WHY_UNVERIFIED["No matching signature found"] and not _any_well_formed(
        headers.get("webhook-signature", "")
    ):
        why = _MALFORMED  # standardwebhooks 1.3 skips what it cannot parse, silently
    raise _Refused(401, f"signature rejected: {why}.")


_MALFORMED = "webhook-signature is not space-separated v1,<base64> signatures"


def _any_well_formed(signatures: str) -> bool:
    for entry in signatures.split():
        version, _, signature = entry.partition(",")
        try:
            if version and base64.b64decode(signature, validate=True):
                return True
        except ValueError:
            continue
    return False


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


@dataclass(frozen=True, slots=True)
class SinkTls:
    """HTTPS for a sink: a PEM certificate (chain) and its key. With ``client_ca``, mutual
    TLS: a client must present a certificate that CA issued. ``hostname`` (say
    ``localhost``) is put in the sink's URL instead of its IP, so that a client's check of
    the certificate against a name is what is tested."""

    certfile: str | os.PathLike[str]
    keyfile: str | os.PathLike[str]
    client_ca: str | os.PathLike[str] | None = None
    hostname: str | None = None


def _listen(host: str, port: int) -> socket.socket:
    # Binding here, not in uvicorn, makes a busy port an OSError for the caller (uvicorn
    # would log it and sys.exit) and gives the real port at once when port=0.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def _url(sock: socket.socket, tls: SinkTls | None = None) -> str:
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if tls is not None and tls.hostname:
        host = tls.hostname
    scheme = "http" if tls is None else "https"
    return f"{scheme}://[{host}]:{port}/hook" if ":" in host else f"{scheme}://{host}:{port}/hook"


def _tls_options(tls: SinkTls | None) -> dict[str, Any]:
    """uvicorn's options for ``tls``: none for plain HTTP."""
    if tls is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": tls.certfile, "ssl_keyfile": tls.keyfile}
    if tls.client_ca is not None:
        options.update(ssl_ca_certs=tls.client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def _config(app: SinkApp, sock: socket.socket, tls: SinkTls | None = None) -> uvicorn.Config:
    """uvicorn's configuration, loaded here so that an unreadable certificate or key is a
    ValueError for the caller (in uvicorn's thread it would only be logged); the socket is
    closed then."""
    host, port = sock.getsockname()[:2]
    # log_config=None: uvicorn's loggers propagate to whatever the caller configured.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        **_tls_options(tls),
    )
    try:
        config.load()
    except OSError as exc:  # ssl.SSLError included
        sock.close()
        if tls is None:  # only the TLS files are read from disk: not expected
            raise
        files = f"certificate {tls.certfile}, key {tls.keyfile}"
        if tls.client_ca is not None:
            files += f", client CA {tls.client_ca}"
        problem = f"the sink's TLS files cannot be used ({files}): {exc}; give PEM files."
        raise ValueError(problem) from None
    return config


class Sink:
    """A receiver served by uvicorn in a daemon thread, for tests and the demo.

    ``start()`` returns once the socket is listening; ``url`` is then final. ``behaviour``
    may be reassigned while running. Binds to loopback unless told otherwise. ``secrets``:
    see `SinkApp` (ValueError at once for a bad one); ``tls``: serve HTTPS (see `SinkTls`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: Behaviour | None = None,
        keep_arrivals: bool = True,
        secrets: Sequence[str] = (),
        tls: SinkTls | None = None,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.recorder = Recorder(keep_arrivals)
        self.app = SinkApp(self.recorder, behaviour, secrets)
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
        """``http://127.0.0.1:<port>/hook`` (``https://``, and `SinkTls.hostname` if given,
        with TLS); only known once started."""
        if self._url is None:
            raise RuntimeError("the sink has no URL before start(): call start() first.")
        return self._url

    def start(self, timeout_s: float = 10.0) -> Sink:
        """Listen and serve; raises OSError when the address cannot be bound, ValueError
        when the TLS files cannot be used."""
        if self._thread is not None:
            raise RuntimeError(f"the sink at {self._url} is already started.")
        sock = _listen(self.host, self.port)
        config = _config(self.app, sock, self.tls)
        self.port = sock.getsockname()[1]
        self._url = _url(sock, self.tls)
        server = uvicorn.Server(config)
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
    secrets: Sequence[str] = (),
    tls: SinkTls | None = None,
) -> None:
    """Serve a sink in the foreground until Ctrl-C or SIGTERM, then return.

    ``on_started(url)`` is called once the sink answers requests. ``secrets`` and ``tls`` as
    for `Sink`. Raises ValueError for a bad secret or unusable TLS files, OSError when the
    address cannot be bound.
    """
    app = SinkApp(recorder or Recorder(keep_arrivals), behaviour, secrets)
    sock = _listen(host, port)
    config = _config(app, sock, tls)
    url = _url(sock, tls)
    started = (lambda: on_started(url)) if on_started is not None else None
    _ForegroundServer(config, started).run(sockets=[sock])


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
    # Secrets from the environment only: a command line shows in every process listing.
    secrets = os.environ.get("HOOKCAST_SINK_SECRET", "").split()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    behaviour = make_behaviour(
        failure_rate=args.fail_rate, latency_ms=args.latency_ms, rps=args.rps
    )
    serve(
        args.host,
        args.port,
        behaviour=behaviour,
        secrets=secrets,
        on_started=lambda url: print(f"listening on {url}", flush=True),
    )


if __name__ == "__main__":
    main()
