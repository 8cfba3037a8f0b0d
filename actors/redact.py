"""Secrets out of text before it reaches a log, a preview, an error or the ledger."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_SECRET_LEN = 4


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every occurrence of each secret replaced by ``***``.

    Longer secrets win over secrets they contain. Secrets shorter than 4 characters are
    ignored: masking every "1" or "on" would shred the text and hide nothing.
    """
    wanted = sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
    if not wanted:
        return text
    # One pass with an alternation, so a mask is never matched again by a later secret.
    return re.sub("|".join(map(re.escape, wanted)), MASK, text)
