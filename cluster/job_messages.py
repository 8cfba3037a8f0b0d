"""A pydantic ``ValidationError`` turned into problems a person can act on.

One ``(key, message)`` problem per error: the key is dotted (``webhook.headers.X``), the
message shows the value (never one of a secret-looking key, and ``secrets`` redacted) and
says what is allowed. ``problems_message`` prints them as one bullet each.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from hookcast.actors.redact import redact

_SENSITIVE_KEY = re.compile(r"secret|token|passw|authori[sz]ation|api[-_]?key|credential", re.I)
_KEY_AT_START = re.compile(r"^[A-Za-z_][\w-]*(?:\.[^\s:.]+)*")


def validation_problems(
    exc: ValidationError, root: type[BaseModel], *, secrets: Iterable[str] = ()
) -> tuple[tuple[str, str], ...]:
    """One ``(key, message)`` per error of ``exc``, raised validating ``root``.

    A validator's message that names its key already (``webhook.method GET is ...``) keeps
    it as the key (the more precise one, when it names a key below the error's own)."""
    secrets = tuple(secrets)
    problems = []
    for error in exc.errors(include_url=False):
        key = _dotted(error["loc"])
        # A model validator may report several problems, one per "\n- " line.
        for message in redact(_explain(error, root), secrets).split("\n- "):
            named = _KEY_AT_START.match(message)
            if named and (not key or named.group() == key or named.group().startswith(f"{key}.")):
                problems.append((named.group(), message))
            else:
                problems.append((key, f"{key}: {message}" if key else message))
    return tuple(problems)


def problems_message(headline: str, problems: Iterable[tuple[str, str]]) -> str:
    """``headline`` then one ``- message`` bullet per problem."""
    return "\n".join([headline, *(f"- {message}" for _, message in problems)])


def format_validation_error(
    exc: ValidationError,
    source_name: str,
    root: type[BaseModel],
    *,
    secrets: Iterable[str] = (),
) -> str:
    """One line naming the file, then one ``- key: message`` bullet per error."""
    problems = validation_problems(exc, root, secrets=secrets)
    return problems_message(f"{source_name} is not a valid job:", problems)


def _explain(error: Any, root: type[BaseModel]) -> str:
    loc: tuple[int | str, ...] = error["loc"]
    kind: str = error["type"]
    value = error.get("input")
    tp, field = _locate(loc, root)
    hidden = bool(loc) and bool(_SENSITIVE_KEY.search(str(loc[-1])))
    shown = "the value" if hidden else show(value)
    allowed = _allowed(field)
    whole = _unwrap(tp) is int
    bounds = _bounds(field)

    if kind == "missing":
        return f"field required: {_purpose(field)}"
    if kind == "extra_forbidden":
        return _unknown_key(loc, root)
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"])
    if value is None and kind.endswith("_type"):
        return f"no value given: {_purpose(field)}"
    # "from 1 to 500", "above 0", or nothing when the field is unbounded.
    span = f" from {bounds}" if bounds[:1].isdigit() else f" {bounds}" if bounds else ""
    if kind in ("int_type", "int_parsing", "int_from_float"):
        if isinstance(value, str):
            return f"{shown} is a string: give a whole number{span} (no quotes)."
        if isinstance(value, float):
            return f"{shown} is not a whole number: give {bounds or 'a whole number'}."
        return f"{shown} is not a whole number: give a whole number{span}."
    if kind in ("float_type", "float_parsing"):
        return f"{shown} is not a number: give a number{span}."
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        number = "a whole number" if whole else "a number"
        return f"{shown} is out of range: {allowed or f'give {number}{span}'}."
    if kind in ("bool_type", "bool_parsing"):
        return f"{shown} is not true or false: give true or false (no quotes)."
    if kind == "string_type":
        return f"{shown} is not text: put it in quotes, or give text."
    if kind == "string_too_short":
        return f"{shown} is empty: give {_purpose(field)}"
    if kind == "string_pattern_mismatch":
        rule = allowed or f"it must match {error['ctx']['pattern']}"
        return f"{shown} is not allowed: {rule}."
    if kind == "literal_error":
        return f"{shown} is not allowed: give {error['ctx']['expected']}."
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        model = _unwrap(tp)
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys = ", ".join(_keys(model))
            return f"{shown} is not a mapping: give keys and values (allowed keys: {keys})."
        return f"{shown} is not a mapping: give keys and values, like {{key: value}}."
    if kind in ("tuple_type", "list_type"):
        return f"{shown} is not a list: give a YAML list, like [a, b] (or [] for none)."
    return f"{shown}: {error['msg'][:1].lower()}{error['msg'][1:]}."


def _unknown_key(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    parent, _ = _locate(loc[:-1], root)
    parent = _unwrap(parent)
    if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
        return "unknown key."
    keys = _keys(parent)
    message = f"unknown key; allowed here: {', '.join(keys)}"
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    return f"{message}; did you mean {close[0]}?" if close else f"{message}."


def _keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _locate(loc: tuple[int | str, ...], root: type[BaseModel]) -> tuple[Any, FieldInfo | None]:
    """The type expected at ``loc`` in ``root``, and the nearest model field on the way."""
    tp: Any = root
    field: FieldInfo | None = None
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next(
                (f for n, f in tp.model_fields.items() if part in (n, f.alias)),
                None,
            )
            if field is None:
                return None, None
            tp = field.annotation
        elif origin in (dict, Mapping):
            tp = get_args(tp)[1] if get_args(tp) else Any
        elif origin in (tuple, list):
            tp = get_args(tp)[0] if get_args(tp) else Any
        else:
            return None, field
    return tp, field


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` as ``X``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _bounds(field: FieldInfo | None) -> str:
    if field is None:
        return ""
    limits: dict[str, Any] = {}
    for meta in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(meta, getattr(annotated_types, name.capitalize())):
                limits[name] = getattr(meta, name)
    low = f"{limits['ge']:g}" if "ge" in limits else None
    high = f"{limits['le']:g}" if "le" in limits else None
    if low is not None and high is not None:
        return f"{low} to {high}"
    parts = []
    if low is not None:
        parts.append(f"at least {low}")
    if "gt" in limits:
        parts.append(f"above {limits['gt']:g}")
    if high is not None:
        parts.append(f"at most {high}")
    if "lt" in limits:
        parts.append(f"below {limits['lt']:g}")
    return " and ".join(parts)


def _allowed(field: FieldInfo | None) -> str | None:
    extra = field.json_schema_extra if field is not None else None
    return str(extra["allowed"]) if isinstance(extra, dict) and "allowed" in extra else None


def _purpose(field: FieldInfo | None) -> str:
    description = (field.description if field is not None else None) or "a value is needed here."
    # "The URL the ..." reads as "the URL the ..." after a colon; "URL ..." stays.
    if not description[:2].isupper():
        description = description[0].lower() + description[1:]
    return description if description.endswith(".") else f"{description}."


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def show(value: Any) -> str:
    """A value as a person wrote it in YAML, short; containers only by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 80 else f"{value[:77]}..."
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, date):
        return value.isoformat()
    return kind_of(value)


def kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"
