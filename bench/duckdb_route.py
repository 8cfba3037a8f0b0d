"""The single-process DuckDB peer: the best route a data engineer would write by hand.

A second yardstick beside ``bench/baseline.py``, with the same command line and summary. One
DuckDB connection (all its threads) renders each contact's element as JSON text in SQL, built
from the parquet's column types by the README's payload rules; DuckDB streams the rendered
elements as Arrow record batches in source order; Arrow joins every ``batch_size`` of them into
one JSON list, stamping ``sendTime`` as the request goes out; one ``httpx.AsyncClient`` keeps
``concurrency`` POSTs in flight over keep-alive connections and retries 408, 429 and 5xx.
Nothing of hookcast's renderer is used: only the seed's attribute order is shared.

    python bench/duckdb_route.py --source audience.parquet --url http://127.0.0.1:8080/ --json
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.compute as pc

# The seed's attribute order, shared with hookcast and the baseline: the routes differ in how
# they build the JSON, not in what they send.
from hookcast.actors.render import PRESET_ATTRIBUTES

IDENTITY_TYPES = ("wechat.openId", "wechat.unionId")
CUSTOM = {"a1": "1", "a2": "2"}
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
READ_BATCHES = 10  # requests' worth of contacts DuckDB renders per Arrow record batch

# DuckDB type ids whose VARCHAR cast is already their JSON text (digits, true/false).
_PLAIN_TYPES = frozenset(
    {
        "boolean",
        *("tinyint", "smallint", "integer", "bigint", "hugeint"),
        *("utinyint", "usmallint", "uinteger", "ubigint", "uhugeint"),
    }
)
_FLOAT_TYPES = frozenset({"float", "double"})
# Literals DuckDB's JSON reader lets through in JSON text that strict JSON has no form for.
_NOT_JSON_NUMBERS = tuple(s + w for w in ("nan", "inf", "infinity") for s in ("", "-", "+"))

DuckType = Any  # duckdb's DuckDBPyType (its module moved between releases)


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def column(name: str) -> str:
    """A SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def member(name: str, value_sql: str) -> str:
    """SQL for ``"name":<value>``; NULL when the value is, so the member drops out of
    ``concat_ws``."""
    return f"{quote(json.dumps(name, ensure_ascii=False) + ':')} || {value_sql}"


def joined(members: Sequence[str]) -> str:
    """SQL for the members that are not NULL, comma-joined ('' when none is left)."""
    return f"concat_ws(',', {', '.join(members)})" if members else "''"


def obj(members: Sequence[str]) -> str:
    """SQL for a JSON object of the given members, each SQL that may be NULL."""
    return f"'{{' || {joined(members)} || '}}'"


def json_of(expr: str, kind: DuckType) -> str:
    """SQL for the JSON text of ``expr`` of DuckDB type ``kind``; NULL when it is null.

    Timestamps go out as ``YYYY-MM-DD HH:MM:SS``, structs without their null fields, maps
    without null or non-finite values; NaN and infinity, which JSON cannot carry, count as
    null (inside a list they stay in place as ``null``)."""
    type_id = kind.id
    if type_id.startswith("timestamp"):
        return f"""'"' || strftime({expr}, {quote(TIMESTAMP_FORMAT)}) || '"'"""
    if type_id in _PLAIN_TYPES:
        return f"{expr}::VARCHAR"
    if type_id in _FLOAT_TYPES:
        return f"CASE WHEN isfinite({expr}) THEN to_json({expr}) END"
    if type_id == "struct":
        fields = [member(n, json_of(f"{expr}.{column(n)}", t)) for n, t in kind.children]
        return f"CASE WHEN {expr} IS NOT NULL THEN {obj(fields)} END"
    if type_id == "map":
        return f"CASE WHEN {expr} IS NOT NULL THEN '{{' || {map_members(expr, kind)} || '}}' END"
    if type_id == "list" and kind.children[0][1].id in _FLOAT_TYPES:
        finite = f"list_transform({expr}, lambda v: CASE WHEN isfinite(v) THEN v END)"
        return f"to_json({finite})"
    return f"to_json({expr})"


def map_members(expr: str, kind: DuckType) -> str:
    """SQL for the comma-joined members of a map, entries with null or non-finite values
    left out ('' when none is left)."""
    value_type = dict(kind.children)["value"]
    keep = "isfinite(e.value)" if value_type.id in _FLOAT_TYPES else "e.value IS NOT NULL"
    pairs = (
        f"list_transform(list_filter(map_entries({expr}), lambda e: {keep}), "
        "lambda e: to_json(e.key::VARCHAR) || ':' || to_json(e.value))"
    )
    return f"array_to_string({pairs}, ',')"


def json_text_members(expr: str) -> str:
    """SQL for the comma-joined members of a JSON object held as text, null values (and the
    NaN and infinity literals DuckDB's reader accepts) left out."""
    entries = f"map_entries(json_transform({expr}, '\"MAP(VARCHAR, JSON)\"'))"
    dropped = ", ".join(quote(w) for w in ("null", *_NOT_JSON_NUMBERS))
    kept = f"list_filter({entries}, lambda e: lower(e.value::VARCHAR) NOT IN ({dropped}))"
    return (
        f"array_to_string(list_transform({kept}, lambda e: to_json(e.key) || ':' || e.value), ',')"
    )


def props_member(columns: dict[str, DuckType]) -> str:
    """SQL for ``"props":{…}``, always present: the props column's own members (a struct, a
    map or JSON text) followed by every column that is not a preset attribute."""
    members: list[str] = []
    props = columns.get("props")
    if props is not None:
        own = None
        if props.id == "struct":
            fields = [member(n, json_of(f"props.{column(n)}", t)) for n, t in props.children]
            own = f"nullif({joined(fields)}, '')"
        elif props.id == "map":
            own = f"nullif({map_members('props', props)}, '')"
        elif props.id in ("varchar", "json"):
            own = f"nullif({json_text_members('props')}, '')"
        if own is not None:
            members.append(own)
    for name, kind in columns.items():
        if name not in PRESET_ATTRIBUTES:
            members.append(member(name, json_of(column(name), kind)))
    return member("props", obj(members))


def element_tail_sql(
    columns: dict[str, DuckType], identity_types: Sequence[str], custom: dict[str, Any] | None
) -> str:
    """SQL for each row's element without its leading ``{"sendTime":…,``: the rest,
    ``"contact":{…}`` and ``"_custom":{…}``, up to the element's closing brace."""
    members: list[str] = []
    for name in PRESET_ATTRIBUTES:
        if name == "props":
            members.append(props_member(columns))
        elif name == "identities":
            if identity_types and "identities" in columns:
                wanted = ", ".join(quote(t) for t in identity_types)
                kept = f"list_filter(identities, lambda i: i.type IN ({wanted}))"
                members.append(member("identities", f"to_json({kept})"))
        elif name in columns:
            members.append(member(name, json_of(column(name), columns[name])))
    tail = "" if custom is None else ',"_custom":' + json.dumps(custom, separators=(",", ":"))
    return f"""'"contact":' || {obj(members)} || {quote(tail + "}")}"""


def scan_sql(source: str) -> str:
    """The DuckDB table function reading ``source``: a parquet file, a folder of them or a
    glob."""
    if os.path.isdir(source):
        source = os.path.join(source, "**", "*.parquet")
    elif glob.has_magic(source) and not glob.glob(source, recursive=True):
        raise FileNotFoundError(f"no parquet file matches {source}")
    return f"read_parquet({quote(source)}, union_by_name = true)"


def rendered_elements(
    con: duckdb.DuckDBPyConnection,
    source: str,
    rows_per_batch: int,
    identity_types: Sequence[str] = IDENTITY_TYPES,
    custom: dict[str, Any] | None = CUSTOM,
) -> pa.RecordBatchReader:
    """Every contact's element (without its ``sendTime``) as one string column, in source
    order, rendered while the reader is read."""
    scan = scan_sql(source)
    described = con.sql(f"SELECT * FROM {scan} LIMIT 0")
    columns = dict(zip(described.columns, described.types, strict=True))
    sql = element_tail_sql(columns, identity_types, custom)
    return con.sql(f"SELECT {sql} AS element FROM {scan}").to_arrow_reader(rows_per_batch)


def request_body(elements: pa.Array, sent_at_ms: int) -> bytes:
    """One JSON list of ``elements``, each opened by ``{"sendTime":sent_at_ms,``: the stamp
    goes into the separator, so Arrow writes the body in one pass."""
    one_list = pa.ListArray.from_arrays(pa.array([0, len(elements)], pa.int32()), elements)
    joined = pc.binary_join(one_list, f',{{"sendTime":{sent_at_ms},')[0].as_buffer()
    return b"".join((b'[{"sendTime":%d,' % sent_at_ms, joined, b"]"))


class ElementStream:
    """The rendered elements of ``source`` in request-sized arrays, in source order.

    DuckDB works on a thread of its own (it releases the GIL while it renders): it opens the
    source and renders the first record batch while the HTTP client is being built, then
    stays one record batch ahead of the requests. Use as an async context manager."""

    def __init__(
        self,
        source: str,
        batch_size: int,
        identity_types: Sequence[str] = IDENTITY_TYPES,
        custom: dict[str, Any] | None = CUSTOM,
    ) -> None:
        self._options = (source, READ_BATCHES * batch_size, identity_types, custom)
        self.batch_size = batch_size
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="duckdb")
        self._con: duckdb.DuckDBPyConnection | None = None
        self._reader: pa.RecordBatchReader | None = None
        self._ahead: asyncio.Future[pa.Array | None] | None = None

    async def __aenter__(self) -> ElementStream:
        self._ahead = asyncio.get_running_loop().run_in_executor(self._thread, self._read)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # On the DuckDB thread, so after any read still in flight.
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown()

    def _read(self) -> pa.Array | None:
        if self._reader is None:
            self._con = duckdb.connect()  # DuckDB's default: one thread per core
            self._reader = rendered_elements(self._con, *self._options)
        try:
            return self._reader.read_next_batch().column(0)
        except StopIteration:
            return None

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()

    async def batches(self) -> AsyncIterator[pa.Array]:
        """Arrays of ``batch_size`` elements (the last may be shorter)."""
        assert self._ahead is not None, "iterate inside `async with`"
        loop = asyncio.get_running_loop()
        size = self.batch_size
        carried: pa.Array | None = None
        while (elements := await self._ahead) is not None:
            self._ahead = loop.run_in_executor(self._thread, self._read)
            if carried is not None:  # DuckDB ends a record batch where a row group ends
                elements = pa.concat_arrays([carried, elements])
            whole = len(elements) - len(elements) % size
            for start in range(0, whole, size):
                yield elements.slice(start, size)
            carried = elements.slice(whole) if whole < len(elements) else None
        if carried is not None:
            yield carried


async def broadcast(
    source: str,
    url: str,
    *,
    batch_size: int = 500,
    concurrency: int = 8,
    identity_types: Iterable[str] = IDENTITY_TYPES,
    custom: dict[str, Any] | None = CUSTOM,
    timeout_s: float = 30.0,
    max_attempts: int = 3,
) -> dict[str, Any]:
    """POST every contact of ``source`` to ``url``; returns the summary (the baseline's
    keys). A request is retried on 408, 429, 5xx and transport errors, with a fresh
    ``sendTime`` and the same ``Idempotency-Key``."""
    if not 1 <= batch_size <= 500:
        raise ValueError(f"batch_size must be within 1..500, got {batch_size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if httpx.URL(url).scheme not in ("http", "https"):
        raise ValueError(f"url must be http or https, got {url!r}")
    queue: asyncio.Queue[tuple[int, pa.Array] | None] = asyncio.Queue(maxsize=2 * concurrency)
    stats = {"requests": 0, "failed_requests": 0, "retries": 0}

    async def post(client: httpx.AsyncClient, n: int, elements: pa.Array) -> bool:
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"duckdb-{n}"}
        for attempt in range(1, max_attempts + 1):
            body = request_body(elements, time.time_ns() // 1_000_000)
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
    async with (
        ElementStream(source, batch_size, tuple(identity_types), custom) as stream,
        httpx.AsyncClient(limits=limits, timeout=timeout_s) as client,
    ):
        senders = [asyncio.create_task(sender(client)) for _ in range(concurrency)]
        n = 0
        async for elements in stream.batches():
            await queue.put((n, elements))
            n += 1
            contacts += len(elements)
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


def run(source: str, url: str, **options: Any) -> dict[str, Any]:
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
        print(json.dumps(summary))
    else:
        print(
            f"{summary['contacts']} contacts in {summary['requests']} requests, "
            f"{summary['duration_s']} s: {summary['contacts_per_s']} contacts/s, "
            f"{summary['failed_requests']} failed"
        )
    return 1 if summary["failed_requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
