"""Synthetic audiences shaped like the seed's contacts, for demos, tests and benchmarks.

Columns are generated with pyarrow.compute (numpy is not a dependency), in fixed blocks of
``BLOCK_ROWS`` rows whose random streams are keyed by (seed, block, column): a row's values
depend only on the seed and its position, never on ``chunk_rows``, so any chunking writes the
same rows in the same order. Ids are not in row order (within a chunk or across chunks), so
consumers must sort: row r gets the id slot ``(a * r + c) mod contacts``, a bijection that
scatters ids without a shuffle (shuffling a 100,000-row chunk cost more than generating it).
The data is deterministic for a seed and a given pyarrow version.

``write_audience(..., shape=...)`` writes the same contacts in other physical forms, as CDP
exports give them (``shapes.SHAPES``): the ``cdp`` shapes type the dates as timestamps and a
date (``CDP_SCHEMA``) and give ``props`` three string members more (``tier``, ``channel``
and ``note``, a free text with quotes, backslashes, newlines, tabs and emoji), from streams
of their own, so every other value is the seed shape's.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hookcast.cluster.testbed.shapes import (
    SHAPES,
    atomic_file,
    regroup,
    shape_names,
    write_shape,
)

__all__ = [
    "BLOCK_ROWS",
    "CDP_SCHEMA",
    "ID_BASE",
    "SCHEMA",
    "SHAPES",
    "audience_blocks",
    "audience_chunks",
    "shape_names",
    "write_audience",
    "write_ids",
]

UTM = pa.struct([(k, pa.string()) for k in ("source", "medium", "content", "campaign", "term")])
PROPS = pa.struct([("haha", pa.int64()), ("testNum", pa.int64()), ("bgtest", pa.int64())])
IDENTITY = pa.struct([("id", pa.string()), ("type", pa.string())])

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("dateCreated", pa.string()),
        ("lastUpdated", pa.timestamp("ms")),
        ("ver", pa.int32()),
        ("name", pa.string()),
        ("nickname", pa.string()),
        ("gender", pa.string()),
        ("dateOfBirthday", pa.string()),
        ("avatar", pa.string()),
        ("mobilePhone", pa.string()),
        ("state", pa.string()),
        ("street", pa.string()),
        ("city", pa.string()),
        ("comments", pa.string()),
        ("idCard", pa.string()),
        ("isAnonymous", pa.bool_()),
        ("utm", UTM),
        ("props", PROPS),
        ("identities", pa.list_(IDENTITY)),
        ("vipLevel", pa.int32()),  # not a preset attribute: sent inside props
    ]
)

CDP_PROPS = pa.struct(
    [*PROPS, ("tier", pa.string()), ("channel", pa.string()), ("note", pa.string())]
)
_CDP_TYPES = {
    "dateCreated": pa.timestamp("us"),
    "lastUpdated": pa.timestamp("us"),
    "dateOfBirthday": pa.date32(),
    "props": CDP_PROPS,
}
CDP_SCHEMA = pa.schema([(f.name, _CDP_TYPES.get(f.name, f.type)) for f in SCHEMA])

BLOCK_ROWS = 16_384
ID_BASE = 706_330_500_000_000
_ID_STRIDE = 1_000  # id = base + slot * stride + jitter(< stride): unique without a set
_ID_MULTIPLIER = 2_654_435_761  # a prime; made coprime with the row count in _id_permutation

_CREATED_FROM = 1_609_430_400  # 2021-01-01 00:00:00 UTC
_CREATED_SPAN_S = 3 * 365 * 86_400
_UPDATED_SPAN_MS = 600 * 86_400_000
_BIRTH_FROM_DAY = -3_653  # 1960-01-01 as days since the epoch
_BIRTH_SPAN_DAYS = 18_628  # to 2010-12-31

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
_GIVEN = [
    *"伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚树",
    "秀英",
    "桂英",
    "子涵",
    "梓萱",
    "浩然",
    "一诺",
    "雨桐",
]
_NICKNAMES = ["树", "小王", "阿杰", "Sunny", "快乐每一天", "大猫🐱", "Lucky", "晴天", "木木", "🍀"]
_STATE_CITY = [
    ("北京市", "北京市"),
    ("上海市", "上海市"),
    ("天津市", "天津市"),
    ("重庆市", "重庆市"),
    ("广东省", "广州市"),
    ("广东省", "深圳市"),
    ("浙江省", "杭州市"),
    ("江苏省", "南京市"),
    ("江苏省", "苏州市"),
    ("四川省", "成都市"),
    ("湖北省", "武汉市"),
    ("福建省", "厦门市"),
    ("山东省", "青岛市"),
    ("陕西省", "西安市"),
]
_STREETS = [
    "大通街道",
    "望京街道",
    "三里屯街道",
    "陆家嘴街道",
    "天河南街道",
    "南山街道",
    "西湖街道",
]
_PHONE_PREFIXES = ["130", "131", "135", "138", "139", "150", "177", "186", "188", "199"]
_ID_REGIONS = ["110101", "310104", "440106", "440305", "330106", "320102", "510104", "420106"]
_AVATAR_PREFIX = "http://wx.qlogo.cn/mmhead/"


def _table(weighted: Sequence[tuple[object, int]], type_: pa.DataType) -> pa.Array:
    """A lookup table where each value fills `weight` slots: a uniform pick is a weighted one."""
    return pa.array([value for value, weight in weighted for _ in range(weight)], type_)


_GENDER = _table([("male", 42), ("female", 43), ("unknown", 5), (None, 10)], pa.string())
_NICKNAME = _table([(None, 30), ("", 10)] + [(n, 6) for n in _NICKNAMES], pa.string())
_COMMENTS = _table(
    [(None, 40), ("comment", 30), ("VIP客户", 10), ("双11活动用户", 10), ("需要跟进", 10)],
    pa.string(),
)
_UTM_SOURCE = _table(
    [("企业微信", 30), ("wechat", 30), ("微博", 8), ("抖音", 10), ("baidu", 7), (None, 15)],
    pa.string(),
)
_UTM_MEDIUM = _table(
    [("名片分享", 25), ("扫描二维码", 30), ("朋友圈", 15), ("cpc", 10), (None, 20)], pa.string()
)
_UTM_CONTENT = _table([("联否饭团", 20), ("优惠券", 15), ("新品推荐", 10), (None, 55)], pa.string())
_UTM_CAMPAIGN = _table([("双11", 20), ("618", 15), ("会员日", 10), (None, 55)], pa.string())
_UTM_TERM = _table([("优惠", 10), ("咖啡", 10), (None, 80)], pa.string())
_IDENTITY_COUNT = _table([(1, 40), (2, 30), (3, 20), (4, 10)], pa.int32())
_IDENTITY_TYPE = _table([("wechat.openId", 48), ("wechat.unionId", 47), ("mobile", 5)], pa.string())
_TIER = _table(
    [("bronze", 30), ("silver", 25), ("gold", 15), ("platinum", 5), (None, 25)], pa.string()
)
_CHANNEL = _table(
    [("wechat", 30), ("app", 20), ("web", 15), ("小程序", 15), ("门店", 10), (None, 10)],
    pa.string(),
)
_NOTES = [
    '客户说："明天再联系"',
    'said "call me" twice',
    "C:\\exports\\2024\\客户.csv",
    "第一行\n第二行",
    "tab\tseparated\r\nCRLF",
    "🎉 会员 🎁 ✨",
    "it's a \\n, not a newline",
]
_NOTE = _table([(None, 79)] + [(note, 3) for note in _NOTES], pa.string())
_VIP_LEVEL = _table([(0, 32), (1, 20), (2, 12), (3, 8), (4, 5), (5, 3), (None, 20)], pa.int32())
_SURNAME = pa.array(list(_SURNAMES))
_GIVEN_NAME = pa.array(_GIVEN)
_STATE = pa.array([s for s, _ in _STATE_CITY])
_CITY = pa.array([c for _, c in _STATE_CITY])
_STREET = pa.array(_STREETS)
_PHONE_PREFIX = pa.array(_PHONE_PREFIXES)
_ID_REGION = pa.array(_ID_REGIONS)
_CHECK_DIGIT = pa.array(list("0123456789X"))


def _derive(*parts: object) -> int:
    """A 64-bit seed for one named stream; stable across processes (no hash randomisation)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class _Block:
    """Random streams for one block of rows, one independent stream per name."""

    def __init__(self, seed: int, block_no: int, rows: int) -> None:
        self.seed, self.block_no, self.rows = seed, block_no, rows

    def uniform(self, name: str, rows: int | None = None) -> pa.Array:
        n = self.rows if rows is None else rows
        return pc.random(n, initializer=_derive(self.seed, self.block_no, name))

    def index(self, name: str, size: int, rows: int | None = None) -> pa.Array:
        scaled = pc.floor(pc.multiply(self.uniform(name, rows), float(size)))
        return pc.cast(scaled, pa.int64())

    def pick(self, name: str, table: pa.Array, rows: int | None = None) -> pa.Array:
        return pc.take(table, self.index(name, len(table), rows))

    def nulls(self, name: str, values: pa.Array, rate: float) -> pa.Array:
        return pc.if_else(pc.less(self.uniform(name), rate), pa.scalar(None, values.type), values)

    def digits(self, name: str, width: int, rows: int | None = None) -> pa.Array:
        return pc.utf8_lpad(
            pc.cast(self.index(name, 10**width, rows), pa.string()), width=width, padding="0"
        )

    def tokens(self, name: str, chars: int, rows: int | None = None) -> pa.Array:
        """URL-safe base64 strings of exactly `chars` characters (a multiple of 4)."""
        n = self.rows if rows is None else rows
        data = random.Random(_derive(self.seed, self.block_no, name)).randbytes(n * chars // 4 * 3)
        text = base64.urlsafe_b64encode(data)
        offsets = pa.array(range(0, (n + 1) * chars, chars), pa.int32())
        return pa.Array.from_buffers(
            pa.string(), n, [None, offsets.buffers()[1], pa.py_buffer(text)]
        )


def _id_permutation(seed: int, contacts: int) -> tuple[int, int]:
    """(a, c) such that r -> (a * r + c) mod contacts permutes range(contacts)."""
    a = _ID_MULTIPLIER % max(contacts, 1) or 1
    while math.gcd(a, contacts) > 1:
        a += 1
    return a, _derive(seed, "ids") % max(contacts, 1)


def _block(
    seed: int, block_no: int, start: int, rows: int, contacts: int, cdp: bool = False
) -> pa.Table:
    b = _Block(seed, block_no, rows)
    a, c = _id_permutation(seed, contacts)
    row = pa.array(range(start, start + rows), pa.int64())
    mixed = pc.add_checked(pc.multiply_checked(row, a), c)
    slot = pc.subtract(mixed, pc.multiply(pc.divide(mixed, contacts), contacts))
    ids = pc.add(pc.add(pc.multiply(slot, _ID_STRIDE), ID_BASE), b.index("id", _ID_STRIDE))

    created_s = pc.add(b.index("dateCreated", _CREATED_SPAN_S), _CREATED_FROM)
    # Casting timestamp[s] to string gives "YYYY-MM-DD HH:MM:SS", 30x faster than strftime.
    created = pc.cast(pc.cast(created_s, pa.timestamp("s")), pa.string())
    updated_ms = pc.add(pc.multiply(created_s, 1000), b.index("lastUpdated", _UPDATED_SPAN_MS))
    ver = pc.cast(pc.add(b.index("ver", 300), 1), pa.int32())

    name = pc.binary_join_element_wise(
        b.pick("surname", _SURNAME), b.pick("given", _GIVEN_NAME), ""
    )
    birth = pc.cast(
        pc.cast(pc.add(b.index("birth", _BIRTH_SPAN_DAYS), _BIRTH_FROM_DAY), pa.int32()),
        pa.date32(),
    )
    birth_text = pc.cast(birth, pa.string())
    avatar = pc.binary_join_element_wise(_AVATAR_PREFIX, b.tokens("avatar", 44), "/0", "")
    phone = pc.binary_join_element_wise(
        b.pick("phonePrefix", _PHONE_PREFIX), b.digits("phone", 8), ""
    )
    place = b.index("place", len(_STATE_CITY))
    id_card = pc.binary_join_element_wise(
        b.pick("idRegion", _ID_REGION),
        pc.replace_substring(birth_text, "-", ""),
        b.digits("idSerial", 3),
        b.pick("idCheck", _CHECK_DIGIT),
        "",
    )
    id_card = pc.if_else(pc.less(b.uniform("idCardKind"), 0.2), "idcard_rewrite", id_card)

    utm = pa.StructArray.from_arrays(
        [
            b.pick("utm.source", _UTM_SOURCE),
            b.pick("utm.medium", _UTM_MEDIUM),
            b.pick("utm.content", _UTM_CONTENT),
            b.pick("utm.campaign", _UTM_CAMPAIGN),
            b.pick("utm.term", _UTM_TERM),
        ],
        fields=list(UTM),
        mask=pc.less(b.uniform("utm"), 0.25),
    )
    props = pa.StructArray.from_arrays(
        [
            b.nulls("props.haha.null", pc.add(b.index("props.haha", 10), 1), 0.4),
            b.nulls("props.testNum.null", b.index("props.testNum", 5000), 0.3),
            b.nulls("props.bgtest.null", b.index("props.bgtest", 21), 0.5),
        ],
        fields=list(PROPS),
        mask=pc.less(b.uniform("props"), 0.1),
    )

    counts = b.pick("identities.count", _IDENTITY_COUNT)
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(counts)])
    total = offsets[-1].as_py()
    kinds = b.pick("identities.type", _IDENTITY_TYPE, total)
    # WeChat openIds/unionIds are 28 characters starting with "o".
    wechat_ids = pc.utf8_replace_slice(
        b.tokens("identities.id", 28, total), start=0, stop=1, replacement="o"
    )
    mobile_ids = pc.binary_join_element_wise("1", b.digits("identities.mobile", 10, total), "")
    identity_ids = pc.if_else(pc.equal(kinds, "mobile"), mobile_ids, wechat_ids)
    identities = pa.ListArray.from_arrays(
        offsets,
        pa.StructArray.from_arrays([identity_ids, kinds], fields=list(IDENTITY)),
        type=SCHEMA.field("identities").type,
    )

    columns = {
        "id": ids,
        "dateCreated": created,
        "lastUpdated": pc.cast(updated_ms, pa.timestamp("ms")),
        "ver": ver,
        "name": b.nulls("name", name, 0.25),
        "nickname": b.pick("nickname", _NICKNAME),
        "gender": b.pick("gender", _GENDER),
        "dateOfBirthday": b.nulls("dateOfBirthday", birth_text, 0.35),
        "avatar": b.nulls("avatar.null", avatar, 0.2),
        "mobilePhone": b.nulls("mobilePhone", phone, 0.3),
        "state": b.nulls("state", pc.take(_STATE, place), 0.35),
        "street": b.nulls("street.null", b.pick("street", _STREET), 0.4),
        "city": b.nulls("city", pc.take(_CITY, place), 0.3),
        "comments": b.pick("comments", _COMMENTS),
        "idCard": b.nulls("idCard", id_card, 0.4),
        "isAnonymous": pc.less(b.uniform("isAnonymous"), 0.08),
        "utm": utm,
        "props": props,
        "identities": identities,
        "vipLevel": b.pick("vipLevel", _VIP_LEVEL),
    }
    if not cdp:
        return pa.Table.from_pydict(columns, schema=SCHEMA)
    columns["dateCreated"] = pc.cast(pc.cast(created_s, pa.timestamp("s")), pa.timestamp("us"))
    columns["lastUpdated"] = pc.cast(columns["lastUpdated"], pa.timestamp("us"))
    columns["dateOfBirthday"] = b.nulls("dateOfBirthday", birth, 0.35)  # the same nulls
    columns["props"] = pa.StructArray.from_arrays(
        [
            *(props.field(i) for i in range(props.type.num_fields)),
            b.pick("props.tier", _TIER),
            b.pick("props.channel", _CHANNEL),
            b.pick("props.note", _NOTE),
        ],
        fields=list(CDP_PROPS),
        mask=props.is_null(),
    )
    return pa.Table.from_pydict(columns, schema=CDP_SCHEMA)


def _check(contacts: int, chunk_rows: int) -> None:
    if contacts < 0:
        raise ValueError(f"contacts must be >= 0, got {contacts}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")


def audience_blocks(contacts: int, *, seed: int = 0, cdp: bool = False) -> Iterator[pa.Table]:
    """The audience as generated: tables of ``BLOCK_ROWS`` rows (the last may be shorter),
    typed as ``SCHEMA``, or as ``CDP_SCHEMA`` when ``cdp``."""
    _check(contacts, 1)
    for block_no, start in enumerate(range(0, contacts, BLOCK_ROWS)):
        yield _block(seed, block_no, start, min(BLOCK_ROWS, contacts - start), contacts, cdp)


def audience_chunks(
    contacts: int, *, seed: int = 0, chunk_rows: int = 100_000, cdp: bool = False
) -> Iterator[pa.Table]:
    """The audience as tables of `chunk_rows` rows (the last may be shorter)."""
    _check(contacts, chunk_rows)
    blocks = audience_blocks(contacts, seed=seed, cdp=cdp)
    yield from regroup(blocks, itertools.repeat(chunk_rows))


def write_audience(
    path: str | Path,
    contacts: int,
    *,
    seed: int = 0,
    chunk_rows: int = 100_000,
    shape: str = "seed",
) -> Path:
    """Write `contacts` synthetic contacts to the parquet file `path` in the form `shape`
    (``SHAPES``; for ``cdp-files``, `path` is the folder it creates); return `path`.

    Every shape but ``cdp-one-group`` and ``cdp-files`` has one row group per `chunk_rows`
    rows. Memory stays at about one chunk whatever `contacts` is (for ``cdp-sorted``, one
    bucket: see ``shapes``). The file or folder appears atomically.
    """
    _check(contacts, chunk_rows)
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r} is unknown: use one of {', '.join(SHAPES)}.")
    if shape != "seed":
        return write_shape(
            path,
            shape,
            audience_blocks(contacts, seed=seed, cdp=True),
            CDP_SCHEMA,
            contacts=contacts,
            chunk_rows=chunk_rows,
            id_from=ID_BASE,
            ids_per_contact=_ID_STRIDE,
        )
    with atomic_file(path) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for chunk in audience_chunks(contacts, seed=seed, chunk_rows=chunk_rows):
            writer.write_table(chunk, row_group_size=chunk.num_rows)
    return Path(path)


def write_ids(path: str | Path, ids: Sequence[int] | pa.Array | pa.ChunkedArray) -> Path:
    """Write a static segment: a parquet with a single int64 `id` column."""
    column = (
        ids.cast(pa.int64())
        if isinstance(ids, pa.Array | pa.ChunkedArray)
        else pa.array(ids, pa.int64())
    )
    with atomic_file(path) as tmp:
        pq.write_table(pa.table({"id": column}), tmp)
    return Path(path)


def load_test_job(
    name: str,
    url: str,
    source: str | Path,
    *,
    batch_size: int,
    max_in_flight: int,
    requests_per_second: float | None,
) -> dict:
    """The job that sends a synthetic audience in a load test or a benchmark: the seed's
    payload choices, and retries quick enough for a local receiver's injected faults."""
    return {
        "name": name,
        "webhook": {"url": url, "timeout_s": 30},
        "payload": {
            "contact": True,
            "identities": ["wechat.openId", "wechat.unionId"],
            "custom": {"a1": "1", "a2": "2"},
        },
        "audience": {"source": str(source)},
        "batch_size": batch_size,
        "rate_limit": {"max_in_flight": max_in_flight, "requests_per_second": requests_per_second},
        "retry": {"max_attempts": 20, "backoff_base_s": 0.05, "backoff_max_s": 1.0},
    }
