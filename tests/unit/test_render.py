"""Rendering contacts to SPEC §3 elements (actors/render.py), through real DuckDB on parquet."""

from __future__ import annotations

import datetime as dt
import json
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hookcast.actors.render import (
    SEND_TIME_PLACEHOLDER,
    PayloadConfig,
    assemble_body,
    element_sql,
    send_time_ms,
)
from tests.unit import seed_contacts

SEED_IDENTITIES = ("wechat.openId", "wechat.unionId")
CUSTOM_JSON = json.dumps({"a1": "1", "a2": "2"}, separators=(",", ":"), ensure_ascii=False)
IDENTITY = pa.list_(pa.struct([("id", pa.string()), ("type", pa.string())]))


def _reject_constant(name: str) -> object:
    raise ValueError(f"not strict JSON: {name}")


@pytest.fixture
def render_body(tmp_path):
    """Write ``table`` to parquet, render every row through DuckDB, assemble one body."""

    def render(table: pa.Table, payload: PayloadConfig, sent_at_ms: int = 1) -> bytes:
        path = tmp_path / "audience.parquet"
        pq.write_table(table, path)
        source = f"read_parquet('{path}')"
        con = duckdb.connect()
        try:
            rel = con.sql(f"SELECT * FROM {source}")
            columns = dict(zip(rel.columns, rel.types, strict=True))
            sql = f"SELECT {element_sql(columns, payload)} AS tail FROM {source} ORDER BY id"
            tails = [tail for (tail,) in con.sql(sql).fetchall()]
        finally:
            con.close()
        return assemble_body(tails, sent_at_ms)

    return render


@pytest.fixture
def render(render_body):
    """Like ``render_body``, parsed: the list of elements."""

    def parsed(table: pa.Table, payload: PayloadConfig | None = None) -> list[dict]:
        return json.loads(render_body(table, payload or PayloadConfig()))

    return parsed


def _contacts(elements: list[dict]) -> list[dict]:
    return [element["contact"] for element in elements]


# -- the seed's example ------------------------------------------------------------------------


def test_seed_contacts_render_exactly_as_the_seed_example(render):
    payload = PayloadConfig(identities=SEED_IDENTITIES, custom_json=CUSTOM_JSON)

    elements = render(seed_contacts.seed_table(), payload)

    for element in elements:
        assert isinstance(element.pop("sendTime"), int)
    assert elements == seed_contacts.ELEMENTS


def test_seed_contacts_keep_the_seed_key_order(render):
    payload = PayloadConfig(identities=SEED_IDENTITIES, custom_json=CUSTOM_JSON)

    elements = render(seed_contacts.seed_table(), payload)

    assert [list(e) for e in elements] == [["sendTime", "contact", "_custom"]] * 2
    for got, expected in zip(elements, seed_contacts.ELEMENTS, strict=True):
        assert list(got["contact"]) == list(expected["contact"])


def test_custom_object_is_sent_compactly_after_the_contact(render_body):
    payload = PayloadConfig(identities=SEED_IDENTITIES, custom_json=CUSTOM_JSON)

    body = render_body(seed_contacts.seed_table(), payload).decode()

    assert body.count('},"_custom":{"a1":"1","a2":"2"}}') == 2
    assert body.endswith('"_custom":{"a1":"1","a2":"2"}}]')


def test_no_custom_config_means_no_custom_key(render):
    elements = render(seed_contacts.seed_table(), PayloadConfig(identities=SEED_IDENTITIES))

    assert all("_custom" not in element for element in elements)


# -- payload.contact and identities ------------------------------------------------------------


def test_contact_false_sends_only_the_id(render):
    elements = render(seed_contacts.seed_table(), PayloadConfig(contact=False))

    assert _contacts(elements) == [{"id": row["id"]} for row in seed_contacts.ROWS]


def test_contact_false_still_sends_the_selected_identities(render):
    payload = PayloadConfig(contact=False, identities=("wechat.openId",))

    elements = render(seed_contacts.seed_table(), payload)

    assert _contacts(elements) == [
        {
            "id": 706330500415491,
            "identities": [{"id": "ov7GewyvTj93CtHYJujyfqoe0XFY", "type": "wechat.openId"}],
        },
        {
            "id": 706332851978267,
            "identities": [
                {"id": "oV_R102wxbFS-KTcjpcYdF4vaNmY", "type": "wechat.openId"},
                {"id": "o0ZYI1YCwTN7ud3J6yrIIYNqFYn8", "type": "wechat.openId"},
            ],
        },
    ]


def test_no_identities_selected_means_no_identities_key(render):
    elements = render(seed_contacts.seed_table(), PayloadConfig(identities=()))

    for contact in _contacts(elements):
        assert "identities" not in contact
        assert contact["idCard"] == "idcard_rewrite"  # the rest of the contact is still there


def test_identity_filter_keeps_source_order_and_only_selected_types(render):
    identities = pa.array(
        [
            [
                {"id": "u1", "type": "wechat.unionId"},
                {"id": "p1", "type": "phone"},
                {"id": "o1", "type": "wechat.openId"},
                {"id": "u2", "type": "wechat.unionId"},
                {"id": "o2", "type": "wechat.openId"},
            ]
        ],
        IDENTITY,
    )
    table = pa.table({"id": pa.array([1], pa.int64()), "identities": identities})
    payload = PayloadConfig(identities=("wechat.openId", "wechat.unionId", "email"))

    (element,) = render(table, payload)

    assert element["contact"]["identities"] == [
        {"id": "u1", "type": "wechat.unionId"},
        {"id": "o1", "type": "wechat.openId"},
        {"id": "u2", "type": "wechat.unionId"},
        {"id": "o2", "type": "wechat.openId"},
    ]


def test_a_contact_with_null_identities_has_no_identities_key(render):
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "identities": pa.array([None, [{"id": "o1", "type": "wechat.openId"}]], IDENTITY),
        }
    )

    elements = render(table, PayloadConfig(identities=("wechat.openId",)))

    assert "identities" not in elements[0]["contact"]
    assert elements[1]["contact"]["identities"] == [{"id": "o1", "type": "wechat.openId"}]


# -- attribute values ----------------------------------------------------------------------------


def test_null_attributes_are_dropped_and_empty_strings_kept(render):
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "name": pa.array([None, ""], pa.string()),
            "nickname": pa.array(["", None], pa.string()),
            "ver": pa.array([None, 0], pa.int32()),
            "isAnonymous": pa.array([None, False], pa.bool_()),
        }
    )

    elements = render(table)

    assert _contacts(elements) == [
        {"id": 1, "nickname": "", "props": {}},
        {"ver": 0, "id": 2, "name": "", "props": {}, "isAnonymous": False},
    ]


def test_null_utm_fields_are_omitted_and_a_null_utm_is_dropped(render):
    utm = pa.struct([(k, pa.string()) for k in ("source", "medium", "content")])
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "utm": pa.array([{"source": "wechat", "medium": None, "content": ""}, None], utm),
        }
    )

    elements = render(table)

    assert elements[0]["contact"]["utm"] == {"source": "wechat", "content": ""}
    assert "utm" not in elements[1]["contact"]


def test_props_is_an_object_when_the_props_struct_is_null(render):
    props = pa.struct([("haha", pa.int64())])
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "props": pa.array([None, {"haha": None}, {"haha": 3}], props),
        }
    )

    elements = render(table)

    assert [c["props"] for c in _contacts(elements)] == [{}, {}, {"haha": 3}]


def test_props_is_an_empty_object_without_a_props_column(render):
    table = pa.table({"id": pa.array([1], pa.int64()), "name": ["a"]})

    (element,) = render(table)

    assert element["contact"] == {"id": 1, "name": "a", "props": {}}


def test_extra_columns_are_sent_inside_props(render):
    props = pa.struct([("haha", pa.int64())])
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "props": pa.array([{"haha": 3}, None, {"haha": 4}], props),
            "vipLevel": pa.array([2, 5, None], pa.int32()),
            "segment": pa.array(["gold", None, ""], pa.string()),
        }
    )

    contacts = _contacts(render(table))

    assert [c["props"] for c in contacts] == [
        {"haha": 3, "vipLevel": 2, "segment": "gold"},
        {"vipLevel": 5},
        {"haha": 4, "segment": ""},
    ]
    assert all("vipLevel" not in c and "segment" not in c for c in contacts)


def test_props_as_a_map_drops_null_values(render):
    props = pa.array(
        [[("haha", 3), ("testNum", None), ("bgtest", 8)], None, [("x", None)], []],
        pa.map_(pa.string(), pa.int64()),
    )
    table = pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int64()),
            "props": props,
            "vipLevel": pa.array([1, 2, None, None], pa.int32()),
        }
    )

    contacts = _contacts(render(table))

    assert [c["props"] for c in contacts] == [
        {"haha": 3, "bgtest": 8, "vipLevel": 1},
        {"vipLevel": 2},
        {},
        {},
    ]


def test_props_as_a_json_string_drops_null_values(render):
    props = pa.array(
        [
            '{"haha": 3, "gone": null, "tag": "中\\"文", "nested": {"k": [1, null]}}',
            None,
            "{}",
            '{"only": null}',
        ],
        pa.string(),
    )
    table = pa.table({"id": pa.array([1, 2, 3, 4], pa.int64()), "props": props})

    contacts = _contacts(render(table))

    assert [c["props"] for c in contacts] == [
        {"haha": 3, "tag": '中"文', "nested": {"k": [1, None]}},
        {},
        {},
        {},
    ]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_timestamp_columns_are_sent_as_date_and_time_to_the_second(render, unit):
    when = dt.datetime(2023, 8, 23, 1, 10, 23, 987_654)
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "lastUpdated": pa.array([when, None], pa.timestamp(unit)),
            "dateCreated": pa.array([dt.datetime(2022, 12, 20, 9, 22, 17)] * 2, pa.timestamp(unit)),
            "lastSeen": pa.array([when, None], pa.timestamp(unit)),
        }
    )

    contacts = _contacts(render(table))

    assert contacts[0]["lastUpdated"] == "2023-08-23 01:10:23"
    assert contacts[0]["dateCreated"] == "2022-12-20 09:22:17"
    assert contacts[0]["props"] == {"lastSeen": "2023-08-23 01:10:23"}
    assert "lastUpdated" not in contacts[1]
    assert contacts[1]["props"] == {}


NASTY = [
    'say "hi"',
    "it's",
    "back\\slash \\n not a newline",
    "line one\nline two\r\n\ttabbed",
    "树 北京市 大通街道",
    "emoji 😀🍀 大猫🐱",
    "control \x00\x01\x1f and \u2028\u2029",
    '</script><!-- {"k": [1, 2]}',
]


def test_strings_with_quotes_escapes_and_unicode_round_trip(render_body):
    table = pa.table(
        {
            "id": pa.array(range(len(NASTY)), pa.int64()),
            "name": NASTY,
            'odd "key" \\ 键': NASTY,
        }
    )

    body = render_body(table, PayloadConfig())
    contacts = _contacts(json.loads(body))

    assert [c["name"] for c in contacts] == NASTY
    assert [c["props"]['odd "key" \\ 键'] for c in contacts] == NASTY


def test_identity_and_utm_strings_round_trip(render):
    utm = pa.struct([("source", pa.string())])
    table = pa.table(
        {
            "id": pa.array([1], pa.int64()),
            "utm": pa.array([{"source": NASTY[3]}], utm),
            "identities": pa.array([[{"id": NASTY[0] + NASTY[5], "type": "t"}]], IDENTITY),
        }
    )

    (element,) = render(table, PayloadConfig(identities=("t",)))

    assert element["contact"]["utm"] == {"source": NASTY[3]}
    assert element["contact"]["identities"] == [{"id": NASTY[0] + NASTY[5], "type": "t"}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"haha": 3, "tag": "a"}', {"haha": 3, "tag": "a"}),  # as written: nothing to drop
        (' { "a" : [1, 2] , "b": {"c": 3} } ', {"a": [1, 2], "b": {"c": 3}}),
        ('{"k\\u00e9": "v\\n"}', {"ké": "v\n"}),
        ("{ }", {}),
        ('{"a": 1, "b": null}', {"a": 1}),  # the longer way: a null dropped
        ('{"x": "info"}', {"x": "info"}),  # "inf" in a string: the longer way, same JSON
        ('{"n": NaN, "m": 2}', {"m": 2}),
        ("[1, 2]", {}),  # not an object: no members
    ],
)
def test_json_text_props_give_the_same_members_either_way(render, text, expected):
    table = pa.table(
        {
            "id": pa.array([1], pa.int64()),
            "props": pa.array([text], pa.string()),
            "vip": pa.array([7], pa.int64()),
        }
    )

    (contact,) = _contacts(render(table))

    assert contact["props"] == {**expected, "vip": 7}


def test_a_nan_float_attribute_still_gives_a_strict_json_body(render_body):
    table = pa.table({"id": pa.array([1, 2], pa.int64()), "score": pa.array([float("nan"), 1.5])})

    body = render_body(table, PayloadConfig())

    assert b"NaN" not in body, body  # not JSON: strict parsers (JSON.parse, orjson) reject it
    elements = json.loads(body, parse_constant=_reject_constant)
    assert elements[1]["contact"]["props"] == {"score": 1.5}


# -- the body ------------------------------------------------------------------------------------


def test_send_time_is_epoch_milliseconds_close_to_now():
    before = time.time() * 1000
    sent = send_time_ms()
    after = time.time() * 1000

    assert isinstance(sent, int)
    assert before - 1 <= sent <= after + 1


def test_send_time_reads_the_injected_clock():
    assert send_time_ms(lambda: 1692774832.443) == 1692774832443


def test_every_element_carries_the_batch_send_time(render_body):
    sent = send_time_ms(lambda: 1692774832.443)

    body = render_body(seed_contacts.seed_table(), PayloadConfig(), sent_at_ms=sent)

    assert [e["sendTime"] for e in json.loads(body)] == [1692774832443, 1692774832443]


def test_assemble_body_joins_elements_and_stamps_send_time():
    stamp = '{"sendTime":' + SEND_TIME_PLACEHOLDER
    elements = [stamp + ',"contact":{"id":1}}', stamp + ',"contact":{"id":2},"_custom":{}}']

    body = assemble_body(elements, 1692774832443)

    assert body == (
        b'[{"sendTime":1692774832443,"contact":{"id":1}},'
        b'{"sendTime":1692774832443,"contact":{"id":2},"_custom":{}}]'
    )


def test_an_empty_batch_assembles_to_an_empty_list():
    assert assemble_body([], 1) == b"[]"
    assert assemble_body(iter(()), 1) == b"[]"
