"""The plain baseline hookcast is measured against: one process, one event loop, no DuckDB.

pyarrow reads the parquet in record batches, ``to_pylist()`` turns rows into dicts, the README's
payload rules are applied in Python, orjson packs each batch into a JSON list, and one
``httpx.AsyncClient`` keeps ``concurrency`` POSTs in flight over keep-alive connections.
It is the yardstick, so it is written the way a careful engineer would write it by hand.

    python bench/baseline.py --source audience.parquet --url http://127.0.0.1:8080/ --json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import glob
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow.dataset as ds

# The seed's preset attributes, shared with hookcast's renderer: the baseline
# differs in how it builds the JSON, not in what it sends.
from hookcast.actors.render import PRESET_ATTRIBUTES

IDENTITY_TYPES = ("wechat.openId", "wechat.unionId")
CUSTOM = {"a1": "1", "a2": "2"}
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
READ_ROWS = 10_000
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _json_default(value: Any) -> Any:
    # OPT_PASSTHROUGH_DATETIME routes every datetime here, so timestamps come out as the seed's
    # "YYYY-MM-DD HH:MM:SS" instead of orjson's RFC 3339.
    if isinstance(value, dt.datetime):
        return value.strftime(TIMESTAMP_FORMAT)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(elements: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(elements, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def _props(value: Any) -> dict[str, Any]:
    """The props column as a dict without null values: a struct, a map or a JSON string."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = orjson.loads(value) if value else {}
        if not isinstance(value, dict):
            return {}
    elif isinstance(value, list):  # a map column arrives as [(key, value), ...]
        value = dict(value)
    return {k: v for k, v in value.items() if v is not None}


def contact_of(
    row: dict[str, Any], custom_columns: Sequence[str], identity_types: frozenset[str]
) -> dict[str, Any]:
    """One row as the element's ``contact``."""
    contact = {k: v for k, v in row.items() if v is not None}
    props = _props(contact.pop("props", None))
    for name in custom_columns:
        value = contact.pop(name, None)
        if value is not None:
            props[name] = value
    contact["props"] = props
    utm = contact.get("utm")
    if utm is not None:
        contact["utm"] = {k: v for k, v in utm.items() if v is not None}
    identities = contact.pop("identities", None)
    if identity_types and identities is not None:
        contact["identities"] = [i for i in identities if i["type"] in identity_types]
    return contact


def _dataset(source: str | Path) -> ds.Dataset:
    text = str(source)
    if glob.has_magic(text):
        files = sorted(glob.glob(text))
        if not files:
            raise FileNotFoundError(f"no parquet file matches {text}")
        return ds.dataset(files, format="parquet")
    return ds.dataset(text, format="parquet")


def contact_batches(
    source: str | Path,
    batch_size: int = 500,
    identity_types: Iterable[str] = IDENTITY_TYPES,
) -> Iterator[list[dict[str, Any]]]:
    """Lists of at most `batch_size` contacts, in file order."""
    dataset = _dataset(source)
    custom_columns = tuple(n for n in dataset.schema.names if n not in PRESET_ATTRIBUTES)
    types = frozenset(identity_types)
    pending: list[dict[str, Any]] = []
    for record_batch in dataset.to_batches(batch_size=READ_ROWS):
        rows = pending + [contact_of(r, custom_columns, types) for r in record_batch.to_pylist()]
        start = 0
        while len(rows) - start >= batch_size:
            yield rows[start : start + batch_size]
            start += batch_size
        pending = rows[start:]
    if pending:
        yield pending


async def broadcast(
    source: str | Path,
    url: str,
    *,
    batch_size: int = 500,
    concurrency: int = 8,
    identity_types: Iterable[str] = IDENTITY_TYPES,
    custom: dict[str, Any] | None = CUSTOM,
    timeout_s: float = 30.0,
    max_attempts: int = 3,
) -> dict[str, Any]:
    """POST every contact of `source` to `url`; returns the summary."""
    if not 1 <= batch_size <= 500:
        raise ValueError(f"batch_size must be within 1..500, got {batch_size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if httpx.URL(url).scheme not in ("http", "https"):
        raise ValueError(f"url must be http or https, got {url!r}")
    queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(maxsize=2 * concurrency)
    stats = {"requests": 0, "failed_requests": 0, "retries": 0}

    async def post(client: httpx.AsyncClient, n: int, body: bytes) -> bool:
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"baseline-{n}"}
        for attempt in range(1, max_attempts + 1):
            try:
                response = await client.post(url, content=body, headers=headers)
                if response.is_success:
                    return True
                if response.status_code not in RETRY_STATUSES:
                    return False
            except httpx.TransportError:
                pass
            except httpx.HTTPError:
                return False
            if attempt < max_attempts:
                stats["retries"] += 1
                await asyncio.sleep(0.1 * 2**attempt)
        return False

    async def sender(client: httpx.AsyncClient) -> None:
        while (item := await queue.get()) is not None:
            ok = await post(client, *item)
            stats["requests"] += 1
            stats["failed_requests"] += not ok

    started = time.perf_counter()
    contacts = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        senders = [asyncio.create_task(sender(client)) for _ in range(concurrency)]
        for n, batch in enumerate(contact_batches(source, batch_size, identity_types)):
            send_time = time.time_ns() // 1_000_000
            elements = [{"sendTime": send_time, "contact": c} for c in batch]
            if custom is not None:
                for element in elements:
                    element["_custom"] = custom
            await queue.put((n, dumps(elements)))
            contacts += len(batch)
            # put() only suspends on a full queue; yield so senders start while we serialise.
            await asyncio.sleep(0)
        for _ in senders:
            await queue.put(None)
        await asyncio.gather(*senders)
    duration = time.perf_counter() - started
    return {
        "contacts": contacts,
        **stats,
        "duration_s": round(duration, 3),
        "contacts_per_s": round(contacts / duration, 1) if duration else 0.0,
        "requests_per_s": round(stats["requests"] / duration, 1) if duration else 0.0,
    }


def run(source: str | Path, url: str, **options: Any) -> dict[str, Any]:
    """Synchronous :func:`broadcast`."""
    return asyncio.run(broadcast(source, url, **options))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="parquet file, folder or glob")
    parser.add_argument("--url", required=True)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--identities",
        default=",".join(IDENTITY_TYPES),
        help="comma-separated identity types to send ('' for none)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    summary = run(
        args.source,
        args.url,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        identity_types=[t for t in args.identities.split(",") if t],
    )
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        print(
            f"{summary['contacts']} contacts in {summary['requests']} requests, "
            f"{summary['duration_s']} s: {summary['contacts_per_s']} contacts/s, "
            f"{summary['failed_requests']} failed"
        )
    return 1 if summary["failed_requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
