"""Rendering contacts to the SPEC §3 JSON elements, columnar, inside DuckDB.

Turning Arrow rows into Python dicts costs ~18 µs a contact before any JSON is written;
DuckDB builds the same text in a vectorised projection. So the audience query itself renders
each element, and a sender only joins a batch's elements into one list (in Arrow's C++) and
stamps ``sendTime``, which is known only then: the rendered element holds a placeholder that
cannot occur in JSON text (raw control characters are always escaped inside strings).

    {"sendTime":\x01\x01…,"contact":{"dateCreated":"2022-12-20 09:22:17",…},"_custom":{…}}

Null attributes are dropped with ``concat_ws``, which skips NULL arguments; ``'"k":' || NULL``
is NULL, so a key disappears together with its null value. Empty strings stay.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# The seed's attribute order; any other column is a custom attribute sent inside `props`.
PRESET_ATTRIBUTES = (
    "dateCreated",
    "lastUpdated",
    "ver",
    "id",
    "name",
    "nickname",
    "gender",
    "dateOfBirthday",
    "avatar",
    "mobilePhone",
    "state",
    "street",
    "city",
    "comments",
    "idCard",
    "utm",
    "props",
    "isAnonymous",
    "identities",
)
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
ELEMENT_COLUMN = "element"
SEND_TIME_PLACEHOLDER = "\x01" * 13


@dataclass(frozen=True, slots=True)
class PayloadConfig:
    """What each element carries (SPEC §3): all attributes or only the id, which identity
    types, and the ``_custom`` object already serialised (None: no ``_custom`` key)."""

    contact: bool = True
    identities: tuple[str, ...] = ()
    custom_json: str | None = None


def sql_string(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key(name: str) -> str:
    """The SQL literal for ``"name":`` (JSON-escaped, then SQL-quoted)."""
    return sql_string(json.dumps(name, ensure_ascii=False) + ":")


DuckType = Any  # duckdb.sqltypes.DuckDBPyType (moved between duckdb releases)


def _children(duck_type: DuckType) -> list[tuple[str, DuckType]]:
    return list(duck_type.children)


def _value(expr: str, duck_type: DuckType) -> str:
    """SQL for the JSON text of ``expr``; NULL when the value is null."""
    kind = duck_type.id
    if kind.startswith("timestamp"):
        return f"to_json(strftime({expr}, {sql_string(TIMESTAMP_FORMAT)}))"
    if kind == "struct":
        return f"CASE WHEN {expr} IS NOT NULL THEN '{{' || {_members(expr, duck_type)} || '}}' END"
    if kind in ("double", "float"):
        # NaN and infinities have no JSON form: they are dropped like nulls.
        return f"to_json(CASE WHEN isfinite({expr}) THEN {expr} END)"
    if kind == "map":
        return f"CASE WHEN {expr} IS NOT NULL THEN '{{' || {_map_members(expr)} || '}}' END"
    return f"to_json({expr})"


def _members(expr: str, struct_type: DuckType) -> str:
    """The comma-joined ``"k":v`` members of a struct, null fields dropped ('' if none)."""
    parts = [
        f"{_key(name)} || {_value(f'{expr}.{sql_identifier(name)}', child)}"
        for name, child in _children(struct_type)
    ]
    return f"concat_ws(',', {', '.join(parts)})" if parts else "''"


def _map_members(expr: str) -> str:
    entries = f"list_filter(map_entries({expr}), lambda e: e.value IS NOT NULL)"
    return (
        f"array_to_string(list_transform({entries}, "
        f"lambda e: to_json(e.key::VARCHAR) || ':' || to_json(e.value)), ',')"
    )


def _json_text_members(expr: str) -> str:
    """Members of a JSON-object string, null values dropped."""
    entries = (
        f"list_filter(map_entries(json_transform({expr}, '\"MAP(VARCHAR, JSON)\"')), "
        "lambda e: e.value IS NOT NULL AND e.value::VARCHAR <> 'null')"
    )
    pairs = f"list_transform({entries}, lambda e: to_json(e.key) || ':' || e.value)"
    return f"array_to_string({pairs}, ',')"


def _props(columns: dict[str, DuckType], extra_columns: Sequence[str]) -> str:
    """``props`` is always an object: the props column's members plus every extra column."""
    parts: list[str] = []
    props_type = columns.get("props")
    if props_type is not None:
        kind = props_type.id
        if kind == "struct":
            inner = _members("props", props_type)
        elif kind == "map":
            inner = _map_members("props")
        elif kind in ("varchar", "json"):
            inner = _json_text_members("props")
        else:
            inner = "NULL"
        parts.append(f"nullif({inner}, '')")
    for name in extra_columns:
        column = sql_identifier(name)
        parts.append(f"{_key(name)} || {_value(column, columns[name])}")
    if not parts:
        return "'\"props\":{}'"
    return f"'\"props\":{{' || concat_ws(',', {', '.join(parts)}) || '}}'"


def _identities(identity_types: Sequence[str]) -> str:
    selected = ", ".join(sql_string(t) for t in identity_types)
    return (
        f"{_key('identities')} || "
        f"to_json(list_filter(identities, lambda x: x.type IN ({selected})))"
    )


def element_sql(columns: dict[str, DuckType], payload: PayloadConfig) -> str:
    """SQL rendering each row's element from a relation with ``columns`` (name -> type)."""
    extra = [name for name in columns if name not in PRESET_ATTRIBUTES]
    parts: list[str] = []
    for name in PRESET_ATTRIBUTES:
        if name == "identities":
            if payload.identities and "identities" in columns:
                parts.append(_identities(payload.identities))
            continue
        if not payload.contact and name != "id":
            continue
        if name == "props":
            parts.append(_props(columns, extra))
        elif name in columns:
            parts.append(f"{_key(name)} || {_value(sql_identifier(name), columns[name])}")
    custom = "" if payload.custom_json is None else ',"_custom":' + payload.custom_json
    closing = sql_string("}" + custom + "}")
    opening = sql_string('{"sendTime":' + SEND_TIME_PLACEHOLDER + ',"contact":{')
    return f"""{opening} || concat_ws(',', {", ".join(parts)}) || {closing}"""


def assemble_body(elements: pa.Array | pa.ChunkedArray | Iterable[str], sent_at_ms: int) -> bytes:
    """The request body: the batch's rendered elements as one JSON list, ``sendTime`` set.

    The placeholder opens every element, so replacing its first occurrence per element in
    Arrow copies the bytes once instead of scanning the whole body (0.13 -> 0.07 ms for 500
    contacts, measured)."""
    if not isinstance(elements, pa.Array | pa.ChunkedArray):
        elements = pa.array(list(elements), pa.string())
    if isinstance(elements, pa.ChunkedArray):
        elements = elements.chunk(0) if elements.num_chunks == 1 else elements.combine_chunks()
    if len(elements) == 0:
        return b"[]"
    stamped = pc.replace_substring(
        elements, SEND_TIME_PLACEHOLDER, str(sent_at_ms), max_replacements=1
    )
    one_list = pa.ListArray.from_arrays(pa.array([0, len(stamped)], pa.int32()), stamped)
    return b"[" + pc.binary_join(one_list, ",")[0].as_buffer().to_pybytes() + b"]"


def send_time_ms(clock=time.time) -> int:
    """Now, as ``sendTime``: epoch milliseconds."""
    return int(clock() * 1000)
