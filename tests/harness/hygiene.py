"""Secret hygiene across the whole e2e session: what kvinject logs, answers, exports and causes as events
must hold no secret value and nothing shaped like a token. Tests register the values they seed."""

from __future__ import annotations

import re
from collections.abc import Iterable

SECRET_VALUES: set[str] = set()
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
BEARER = re.compile(r"Bearer\s+[A-Za-z0-9._~+/-]{16,}", re.IGNORECASE)


def remember(*values: str) -> None:
    """Values seeded into a vault: they must never show up anywhere kvinject writes."""
    SECRET_VALUES.update(values)


def leaks(name: str, text: str, extra: Iterable[str] = ()) -> list[str]:
    found = [f"{name}: secret value {v[:4]}… found" for v in (*SECRET_VALUES, *extra) if v and v in text]
    found += [f"{name}: token-shaped text {m.group(0)[:12]}… found" for m in JWT.finditer(text)]
    found += [f"{name}: bearer credential {m.group(0)[:12]}… found" for m in BEARER.finditer(text)]
    return found
