"""URLs and header fields a request may carry: the one check, and the one way to show a URL.

Plain Python. ``http_url_problem`` is what the job model asks of the webhook and of every
authorization URL; ``display_url`` is how a URL appears in messages, logs and the ledger
(no credentials, no query string: either may hold a secret).
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NAMES = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\0": "a NUL"}
# RFC 9110 token characters: what a header name may hold.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_EXAMPLE = "like https://hooks.example.com/path"
_SHOWN_MAX = 80


def control_character(text: str) -> str | None:
    """``a line feed (LF) at position 12`` for the first control character in ``text``
    (C0 or DEL), or None. Never shows the text itself: it may be a secret."""
    match = _CONTROL.search(text)
    if match is None:
        return None
    char = match.group()
    name = _CONTROL_NAMES.get(char, f"the control character U+{ord(char):04X}")
    return f"{name} at position {match.start() + 1}"


def control_problem(text: str) -> str | None:
    """Why ``text`` cannot go into a URL or a header line, or None."""
    found = control_character(text)
    if found is None:
        return None
    return (
        f"holds {found}, which cannot be sent in a URL or a header: remove it (if the value "
        "comes from ${ENV}, check that variable)."
    )


def header_name_problem(name: str) -> str | None:
    """Why ``name`` is not an HTTP header name (an RFC 9110 token), or None."""
    if _TOKEN.match(name):
        return None
    shown = "a control character" if _CONTROL.search(name) else json.dumps(name)
    return (
        f"header name {shown} is not a valid HTTP header name: use letters, digits and "
        "!#$%&'*+-.^_`|~ (no spaces or colons), like X-Api-Key."
    )


def http_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be requested, or None: it must be http(s) with a host, hold no
    control character, and no ``user:password@`` (credentials go in a header)."""
    control = control_problem(url)
    if control is not None:
        return control
    shown = _shown(url)
    try:
        parts = urlsplit(url)
        host, userinfo = parts.hostname, "@" in parts.netloc
    except ValueError:
        parts, host, userinfo = None, None, False
    allowed = "only http and https URLs are supported"
    if parts is None or parts.scheme.lower() not in ("http", "https"):
        return f"{shown} is not supported: {allowed} ({_EXAMPLE})."
    if not host:
        return f"{shown} has no host: {allowed}, with a host ({_EXAMPLE})."
    if userinfo:
        return (
            f"{shown} holds credentials (user:password@): put credentials in a header, like "
            "headers: {Authorization: ...}."
        )
    return None


def display_url(url: str) -> str:
    """``scheme://host[:port]/path``: no credentials, no query string."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    except ValueError:
        return "(an unreadable URL)"


def has_scheme(location: str) -> bool:
    """Whether ``location`` starts with ``scheme://`` (a URL, not a path)."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme))


def _shown(url: str) -> str:
    text = display_url(url) if "://" in url else url
    if "@" in url.partition("?")[0] and "://" in url:
        scheme, _, rest = text.partition("://")
        text = f"{scheme}://***@{rest}"
    text = text if len(text) <= _SHOWN_MAX else f"{text[: _SHOWN_MAX - 3]}..."
    return json.dumps(text, ensure_ascii=False)
