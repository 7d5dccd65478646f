"""The e2e hygiene scanner itself: it must see values and token shapes (else the e2e check proves nothing)."""

from __future__ import annotations

from tests.harness import hygiene


def test_finds_registered_values_jwts_and_bearer_tokens() -> None:
    hygiene.remember("hunter2-value")
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    assert hygiene.leaks("log", "all good: kvinject-secrets mounted") == []
    assert len(hygiene.leaks("log", "value=hunter2-value")) == 1
    assert len(hygiene.leaks("log", f"token {jwt}")) == 1
    assert len(hygiene.leaks("log", "Authorization: Bearer abcdefghijklmnopqrstuvwxyz")) == 1
