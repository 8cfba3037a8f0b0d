"""What signing and gzip cost the sender per request, apart from everything else.

    python bench/request_cost.py [--shape cdp] [--batches 200] [--repeats 5]

Renders ``--batches`` real 500-contact bodies of a synthetic audience (the segment's own
rendering), then has one sender POST them to an in-process transport that answers 200 at
once, unsigned and uncompressed, signed (Standard Webhooks, one secret and two), and
gzipped: the CPU per request of each, medians of ``--repeats``, and the bytes on the wire.
The end-to-end cost, with the receiver and Ray on the same cores, is run_bench.py's
``hookcast-signed`` and ``hookcast-gzip`` routes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from hookcast.actors.render import PayloadConfig
from hookcast.actors.segment import Segment, SegmentConfig
from hookcast.actors.sender import BatchOrder, Sender, SenderConfig
from hookcast.actors.signing import new_secret, secret_key
from hookcast.cluster.testbed.synth import write_audience

BATCH = 500
VARIANTS = {
    "plain": {},
    "signed": {"signing_keys": (secret_key(new_secret()),)},
    "signed, 2 secrets": {"signing_keys": (secret_key(new_secret()), secret_key(new_secret()))},
    "gzip": {"compression": "gzip"},
    "signed + gzip": {"signing_keys": (secret_key(new_secret()),), "compression": "gzip"},
}


class _Answer(httpx.AsyncByteStream):
    async def __aiter__(self):
        yield b"{}"


def _ok(request: httpx.Request) -> httpx.Response:
    _ok.wire += len(request.content)
    return httpx.Response(200, stream=_Answer())


_ok.wire = 0


def chunks(shape: str, batches: int) -> list:
    folder = Path(tempfile.mkdtemp(prefix="hookcast-request-cost-"))
    source = write_audience(folder / "contacts.parquet", batches * BATCH, shape=shape)
    payload = PayloadConfig(contact=True, identities=("wechat.openId",), custom_json=None)
    segment = Segment(SegmentConfig(source=str(source), batch_size=BATCH, payload=payload))
    try:
        ids = segment.freeze()
        return list(segment.stream(ids, list(range(batches))))
    finally:
        segment.close()


def cpu_per_request_ms(config: SenderConfig, tables: list) -> tuple[float, int]:
    async def go() -> float:
        sender = Sender(config, transport=httpx.MockTransport(_ok))
        started = time.process_time()
        for table in tables:
            seq = int(table.column("seq")[0].as_py())
            await sender.deliver(table, [BatchOrder(seq, f"bench-{seq:06d}", 1, 1)])
        spent = time.process_time() - started
        await sender.close()
        return spent

    _ok.wire = 0
    spent = asyncio.run(go())
    return spent / len(tables) * 1000, _ok.wire


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="cdp")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tables = chunks(args.shape, args.batches)
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    wire: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved, so a busy moment hits every variant
        for name, extra in VARIANTS.items():
            config = SenderConfig(url="http://x.test/h", **extra)
            ms, wire[name] = cpu_per_request_ms(config, tables)
            results[name].append(ms)
    plain = statistics.median(results["plain"])
    print(f"{args.batches} requests of {BATCH} contacts ({args.shape}), {args.repeats} repeats")
    print(f"{'variant':<18} {'CPU ms/request':>15} {'over plain':>11} {'KB/request':>11}")
    for name, values in results.items():
        median = statistics.median(values)
        kb = wire[name] / args.batches / 1024
        print(f"{name:<18} {median:>15.3f} {median - plain:>+11.3f} {kb:>11.1f}")


if __name__ == "__main__":
    main()
