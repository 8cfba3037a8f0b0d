"""``#{auth.<id>.<key>}`` wildcards in webhook header and query values.

``parse_template`` splits a value into text and wildcards; ``find_wildcard_errors`` lists,
for the job model, every malformed wildcard and every one naming an undefined authorization.
Messages show the wildcard, never the rest of the value.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hookcast.actors.auth.tokens import token_error
from hookcast.actors.errors import JobFileError, TokenError
from hookcast.actors.redact import redact

WILDCARD_PREFIX = "#{auth."
_PART = r"[^\s.{}]+"
_WILDCARD = re.compile(rf"#\{{auth\.(?P<id>{_PART})\.(?P<key>{_PART}(?:\.{_PART})*)\}}")
_ID = re.compile(rf"^{_PART}$")
_KEY_PATH = re.compile(rf"^{_PART}(?:\.{_PART})*$")
_FRAGMENT_MAX = 60


def is_authorization_id(text: str) -> bool:
    """Whether a wildcard can name ``text`` as its authorization: no dots, braces or spaces."""
    return bool(_ID.match(text))


def is_key_path(text: str) -> bool:
    """Whether ``text`` is a dotted key path a wildcard (or expires_in_key) can hold."""
    return bool(_KEY_PATH.match(text))


@dataclass(frozen=True, slots=True)
class Wildcard:
    """One ``#{auth.<auth_id>.<key_path>}``."""

    auth_id: str
    key_path: str

    def __str__(self) -> str:
        return f"#{{auth.{self.auth_id}.{self.key_path}}}"


@dataclass(frozen=True, slots=True)
class Template:
    """A header or query value: literal text and wildcards, in order.

    ``repr`` shows where it is and what it refers to, never its literal text (which may hold
    an expanded ``${ENV}`` secret).
    """

    where: str
    parts: tuple[str | Wildcard, ...]

    @property
    def references(self) -> set[tuple[str, str]]:
        """``(auth_id, key_path)`` of every wildcard."""
        return {(p.auth_id, p.key_path) for p in self.parts if isinstance(p, Wildcard)}

    @property
    def is_static(self) -> bool:
        return not any(isinstance(p, Wildcard) for p in self.parts)

    def render(self, tokens: Mapping[tuple[str, str], str]) -> str:
        """The value with each wildcard replaced by its token.

        Raises ``TokenError`` (not retryable) when a wildcard has no token: a request never
        goes out with a wildcard left in it or blanked.
        """
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = tokens.get((part.auth_id, part.key_path))
            if value is None:
                raise token_error(
                    TokenError,
                    part.auth_id,
                    f"{self.where} needs {part}, but no token is at hand for it: "
                    "fetch one from the authorization before sending.",
                )
            out.append(value)
        return "".join(out)

    def __repr__(self) -> str:
        refs = ", ".join(sorted(str(p) for p in self.parts if isinstance(p, Wildcard)))
        return f"Template({self.where}: {refs or 'no wildcards'})"


def _scan(
    text: str, where: str, example_id: str = "crm"
) -> tuple[tuple[str | Wildcard, ...], list[str]]:
    """The parts of ``text`` and a message per malformed wildcard."""
    parts: list[str | Wildcard] = []
    problems: list[str] = []
    literal_start = pos = 0
    while (start := text.find(WILDCARD_PREFIX, pos)) != -1:
        match = _WILDCARD.match(text, start)
        if match is None:
            problems.append(
                f"{where}: {_fragment(text, start)} is not a wildcard: write #{{auth.<authorization"
                f" id>.<token key>}}, like #{{auth.{example_id}.access_token}}"
            )
            pos = start + len(WILDCARD_PREFIX)
            continue
        if start > literal_start:
            parts.append(text[literal_start:start])
        parts.append(Wildcard(match["id"], match["key"]))
        literal_start = pos = match.end()
    if literal_start < len(text) or not parts:
        parts.append(text[literal_start:])
    return tuple(parts), problems


def _fragment(text: str, start: int) -> str:
    """The malformed wildcard as written: up to its ``}``, stopping at whitespace."""
    end = start + len(WILDCARD_PREFIX)
    while end < len(text) and not text[end].isspace():
        end += 1
        if text[end - 1] == "}":
            break
        if end - start >= _FRAGMENT_MAX:
            return f"{text[start:end]}…"
    return text[start:end]


def parse_template(text: str, where: str) -> Template:
    """Split a header or query value into text and wildcards.

    ``where`` is the value's key (``webhook.headers.Authorization``) for messages. Raises
    ``JobFileError`` for a malformed wildcard: anything starting ``#{auth.`` that is not
    ``#{auth.<id>.<dotted.key>}`` with non-empty parts and no spaces.
    """
    parts, problems = _scan(text, where)
    if problems:
        raise JobFileError(problems[0])
    return Template(where, parts)


def find_wildcard_errors(
    headers: Mapping[str, str],
    query: Mapping[str, str],
    defined_ids: Iterable[str],
    *,
    prefix: str = "webhook",
    secrets: Iterable[str] = (),
) -> list[str]:
    """One message per malformed wildcard or wildcard naming an undefined authorization,
    in header then query order; empty when every wildcard is sound. Messages show only the
    wildcard, never the rest of the value."""
    defined = sorted(set(defined_ids))
    example_id = defined[0] if defined else "crm"
    messages: list[str] = []
    for part_name, values in (("headers", headers), ("query", query)):
        for name, value in values.items():
            where = f"{prefix}.{part_name}.{name}"
            parts, problems = _scan(value, where, example_id)
            messages.extend(problems)
            for part in parts:
                if isinstance(part, Wildcard) and part.auth_id not in defined:
                    messages.append(f"{where}: {part} {_undefined(part.auth_id, defined)}")
    return [redact(m, secrets) for m in messages]


def _undefined(auth_id: str, defined: list[str]) -> str:
    if not defined:
        return (
            f'refers to authorization "{auth_id}", which is not defined '
            f"(no authorizations are defined): add it under authorizations.{auth_id}"
        )
    message = f'refers to authorization "{auth_id}", which is not defined (defined: '
    message += f"{', '.join(defined)})"
    close = difflib.get_close_matches(auth_id, defined, n=1)
    return f'{message}; did you mean "{close[0]}"?' if close else message
