"""The seed's two example contacts (seed/webhook-broadcast.zh.txt), as rows and as elements."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

UTM = pa.struct([(k, pa.string()) for k in ("source", "medium", "content", "campaign", "term")])
IDENTITY = pa.struct([("id", pa.string()), ("type", pa.string())])
PROPS = pa.struct([("haha", pa.int64()), ("testNum", pa.int64()), ("bgtest", pa.int64())])

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
    ]
)

AVATAR = "http://wx.qlogo.cn/mmhead/mFOdMicAnmL7KXT8yEPF2sPfgDfIXhxv9m1qP3SxEzibs/0"

ROWS = [
    {
        "id": 706330500415491,
        "dateCreated": "2022-12-20 09:22:17",
        "lastUpdated": dt.datetime(2023, 8, 23, 1, 10, 23),
        "ver": 193,
        "name": "树",
        "nickname": "树",
        "gender": "male",
        "dateOfBirthday": "2022-08-31",
        "avatar": AVATAR,
        "mobilePhone": "17717934883",
        "state": "北京市",
        "street": "大通街道",
        "city": "北京市",
        "comments": "comment",
        "idCard": "idcard_rewrite",
        "isAnonymous": False,
        "utm": {"source": "企业微信", "medium": "名片分享"},
        "props": None,
        "identities": [
            {"id": "ov7GewyvTj93CtHYJujyfqoe0XFY", "type": "wechat.openId"},
            {"id": "oiYX_05_7wYyKEssihn4tKPgyJOM", "type": "wechat.unionId"},
            {"id": "oy3jk50wOK9ruK9JsrsX-SP3Zn_I", "type": "wechat.unionId"},
        ],
    },
    {
        "id": 706332851978267,
        "dateCreated": "2022-12-20 14:21:18",
        "lastUpdated": dt.datetime(2023, 8, 14, 11, 3, 0),
        "ver": 98,
        "name": None,
        "nickname": "",
        "gender": "unknown",
        "dateOfBirthday": None,
        "avatar": None,
        "mobilePhone": None,
        "state": None,
        "street": "大通街道",
        "city": None,
        "comments": "comment",
        "idCard": "idcard_rewrite",
        "isAnonymous": False,
        "utm": {"source": "wechat", "medium": "扫描二维码", "content": "联否饭团"},
        "props": {"haha": 3, "testNum": 2288, "bgtest": 8},
        "identities": [
            {"id": "oV_R102wxbFS-KTcjpcYdF4vaNmY", "type": "wechat.openId"},
            {"id": "ogtgm1CeO9YrGQVVs_Ze-Bh8-XIc", "type": "wechat.unionId"},
            {"id": "o0ZYI1YCwTN7ud3J6yrIIYNqFYn8", "type": "wechat.openId"},
            {"id": "oTwq96dPhQF7u5cm-jiOtEZ7Oi20", "type": "wechat.unionId"},
        ],
    },
]

# The seed's "群发消息示例", without sendTime.
ELEMENTS = [
    {
        "contact": {
            "dateCreated": "2022-12-20 09:22:17",
            "lastUpdated": "2023-08-23 01:10:23",
            "ver": 193,
            "id": 706330500415491,
            "name": "树",
            "nickname": "树",
            "gender": "male",
            "dateOfBirthday": "2022-08-31",
            "avatar": AVATAR,
            "mobilePhone": "17717934883",
            "state": "北京市",
            "street": "大通街道",
            "city": "北京市",
            "comments": "comment",
            "idCard": "idcard_rewrite",
            "utm": {"source": "企业微信", "medium": "名片分享"},
            "props": {},
            "isAnonymous": False,
            "identities": ROWS[0]["identities"],
        },
        "_custom": {"a1": "1", "a2": "2"},
    },
    {
        "contact": {
            "dateCreated": "2022-12-20 14:21:18",
            "lastUpdated": "2023-08-14 11:03:00",
            "ver": 98,
            "id": 706332851978267,
            "nickname": "",
            "gender": "unknown",
            "street": "大通街道",
            "comments": "comment",
            "idCard": "idcard_rewrite",
            "utm": {"source": "wechat", "medium": "扫描二维码", "content": "联否饭团"},
            "props": {"haha": 3, "testNum": 2288, "bgtest": 8},
            "isAnonymous": False,
            "identities": ROWS[1]["identities"],
        },
        "_custom": {"a1": "1", "a2": "2"},
    },
]


def seed_table() -> pa.Table:
    return pa.Table.from_pylist(ROWS, schema=SCHEMA)
