"""An authorization as the token fetcher and the cache see it: one small frozen config.

The job model (``cluster/job.py``) has checked every value; ``cluster/compile.py`` builds
these. Nothing here validates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from hookcast.actors.egress import EgressPolicy
from hookcast.actors.urls import display_url


@dataclass(frozen=True, slots=True)
class AuthorizationConfig:
    """One authorization, as the token cache and fetcher see it.

    ``fingerprint`` is the sha256 of the whole definition, computed when none is given: an
    edited definition gets a new one, so it is never served a token cached for the old one.
    ``repr`` shows neither headers, query, form, body, nor the URL's query string.
    """

    id: str
    url: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] | None = None
    json_body: dict[str, Any] | None = None
    ttl_s: float | None = None
    expires_in_key: str | None = None
    fingerprint: str = ""
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # where its endpoint may be

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", _fingerprint(self))

    def __hash__(self) -> int:
        return hash((self.id, self.fingerprint))

    def __repr__(self) -> str:
        return (
            f"AuthorizationConfig(id={self.id!r}, {self.method} {display_url(self.url)}, "
            f"fingerprint={self.fingerprint[:12]})"
        )

    @property
    def secret_values(self) -> frozenset[str]:
        """Every value sent to the token endpoint (client ids and secrets among them), to be
        redacted from anything shown."""
        values = [v for _, v in self.headers + self.query + (self.form or ())]
        values += [v for _, v in parse_qsl(urlsplit(self.url).query)]
        values += list(_string_leaves(self.json_body))
        return frozenset(v for v in values if v)


def _fingerprint(config: AuthorizationConfig) -> str:
    definition = {
        "id": config.id,
        "url": config.url,
        "method": config.method,
        "headers": config.headers,
        "query": config.query,
        "form": config.form,
        "json": config.json_body,
        "ttl_s": config.ttl_s,
        "expires_in_key": config.expires_in_key,
    }
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(b"hookcast-authorization\0" + canonical.encode()).hexdigest()


def _string_leaves(tree: Any) -> Iterable[str]:
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _string_leaves(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _string_leaves(value)
