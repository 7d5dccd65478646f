"""Pure: what Vault's HTTP answers mean for kvinject, for the init container's reader and live verification.

Every function takes a status and a body (bytes) and returns a value or a `ReadError` whose detail is safe to
show: Vault's own error strings (which never echo a token or a secret) and names, never a value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from webhook.providers.reading import FailureKind, ReadError

_MAX_DETAIL = 300  # characters of Vault's error text kept in a reason


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def vault_errors(body: bytes) -> str:
    """Vault's `errors` list as one bounded line, or "" when the body has none."""
    found = _json(body)
    errors = found.get("errors") if isinstance(found, dict) else None
    if not isinstance(errors, list):
        return ""
    text = "; ".join(str(e).replace("\n", " ") for e in errors if e)
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _transient(status: int) -> bool:
    return status == 429 or status >= 500


def login_failure(status: int, body: bytes, role: str, mount: str) -> ReadError:
    """A refused or failed login to auth/<mount>/login as `role`."""
    if _transient(status):
        return ReadError(FailureKind.TOKEN_UNREACHABLE, f"Vault login answered HTTP {status}", transient=True)
    said = vault_errors(body) or f"HTTP {status}"
    return ReadError(FailureKind.TOKEN, f"Vault refused the login as role {role} on auth/{mount}: {said}")


def client_token(body: bytes) -> str:
    """The token of a successful login; raises ReadError when the answer has none (never shows the body)."""
    found = _json(body)
    auth = found.get("auth") if isinstance(found, dict) else None
    token = auth.get("client_token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        raise ReadError(FailureKind.TOKEN, "Vault's login answer carries no client token")
    return token


def read_failure(status: int, body: bytes, role: str, secret: str) -> ReadError:
    """A failed GET of a KV v2 secret (`secret` as the ref names it: <mount>/<path>)."""
    if status == 403:
        return ReadError(FailureKind.DENIED, f"role {role} may not read {secret}")
    if status == 404:
        return ReadError(FailureKind.NOT_FOUND, f"path not found: {secret}")
    if _transient(status):
        return ReadError(FailureKind.UNAVAILABLE, f"Vault answered HTTP {status}", transient=True)
    said = vault_errors(body)
    return ReadError(FailureKind.REJECTED, f"HTTP {status}" + (f" {said}" if said else ""))


def secret_value(body: bytes, key: str, secret: str) -> bytes:
    """The file content for one key of a KV v2 read: a string as its UTF-8 bytes, any other JSON value as JSON
    (as the Vault CSI provider writes it). A missing key is named; the secret's other keys are not."""
    found = _json(body)
    outer = found.get("data") if isinstance(found, dict) else None
    data = outer.get("data") if isinstance(outer, dict) else None
    if not isinstance(data, dict):
        # A deleted or destroyed latest version answers 404 with metadata; anything else here is not KV v2.
        raise ReadError(FailureKind.INVALID, f"{secret} is not a KV v2 secret with data")
    if key not in data:
        raise ReadError(FailureKind.NOT_FOUND, f"key {key} not found in {secret}")
    value = data[key]
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def capabilities(body: bytes, paths: Sequence[str]) -> dict[str, frozenset[str]]:
    """sys/capabilities-self's answer: the capabilities per asked path (a path Vault left out has none)."""
    found = _json(body)
    if not isinstance(found, dict):
        return {p: frozenset() for p in paths}
    inner = found.get("data")
    data: dict[str, Any] = inner if isinstance(inner, dict) else found

    def caps(value: Any) -> frozenset[str]:
        return frozenset(str(c) for c in value) if isinstance(value, list) else frozenset()

    answer = {p: caps(data.get(p)) for p in paths}
    if len(paths) == 1 and not answer[paths[0]]:
        answer[paths[0]] = caps(data.get("capabilities"))  # the single-path form
    return answer


def can_read(caps: frozenset[str]) -> bool:
    """Whether capabilities prove a read: `read` or `root`, and never `deny`."""
    return "deny" not in caps and bool(caps & {"read", "root"})
