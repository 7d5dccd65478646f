"""What Vault's answers mean for kvinject: logins, KV v2 reads and sys/capabilities-self, never a value shown."""

from __future__ import annotations

import json

import pytest

from webhook.providers.reading import FailureKind, ReadError
from webhook.providers.vault import answers

SECRET = "secret/payments/db"
ERR = json.dumps({"errors": ["permission denied", 'invalid role name "x"']}).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind", "detail", "transient"),
    [
        (
            400,
            ERR,
            FailureKind.TOKEN,
            'Vault refused the login as role payments on auth/kubernetes: permission denied; invalid role name "x"',
            False,
        ),
        (
            403,
            b"not json",
            FailureKind.TOKEN,
            "Vault refused the login as role payments on auth/kubernetes: HTTP 403",
            False,
        ),
        (503, ERR, FailureKind.TOKEN_UNREACHABLE, "Vault login answered HTTP 503", True),
        (429, b"", FailureKind.TOKEN_UNREACHABLE, "Vault login answered HTTP 429", True),
    ],
    ids=["rejected-with-vaults-words", "rejected-no-body", "sealed", "rate-limited"],
)
def test_login_failure(status: int, body: bytes, kind: FailureKind, detail: str, transient: bool) -> None:
    error = answers.login_failure(status, body, "payments", "kubernetes")
    assert (error.kind, error.detail, error.transient) == (kind, detail, transient)


def test_long_vault_errors_are_bounded() -> None:
    assert len(answers.vault_errors(json.dumps({"errors": ["x" * 1000]}).encode())) == 300


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (json.dumps({"auth": {"client_token": "hvs.token"}}).encode(), True),
        (json.dumps({"auth": None}).encode(), False),
        (b"<html>", False),
    ],
    ids=["token", "no-auth", "not-json"],
)
def test_client_token(body: bytes, ok: bool) -> None:
    if ok:
        assert answers.client_token(body) == "hvs.token"
    else:
        with pytest.raises(ReadError) as info:
            answers.client_token(body)
        assert info.value.detail == "Vault's login answer carries no client token"


@pytest.mark.parametrize(
    ("status", "body", "kind", "detail", "transient"),
    [
        (403, ERR, FailureKind.DENIED, "role payments may not read secret/payments/db", False),
        (404, b"{}", FailureKind.NOT_FOUND, "path not found: secret/payments/db", False),
        (500, ERR, FailureKind.UNAVAILABLE, "Vault answered HTTP 500", True),
        (400, ERR, FailureKind.REJECTED, 'HTTP 400 permission denied; invalid role name "x"', False),
        (412, b"", FailureKind.REJECTED, "HTTP 412", False),
    ],
    ids=["denied", "not-found", "server-error", "rejected", "rejected-no-body"],
)
def test_read_failure(status: int, body: bytes, kind: FailureKind, detail: str, transient: bool) -> None:
    error = answers.read_failure(status, body, "payments", SECRET)
    assert (error.kind, error.detail, error.transient) == (kind, detail, transient)


KV2 = {"data": {"data": {"password": "s3cr\u00e9t", "port": 5432, "tags": {"b": 1, "a": [True]}}, "metadata": {}}}


@pytest.mark.parametrize(
    ("key", "expected"),
    [("password", "s3cr\u00e9t".encode()), ("port", b"5432"), ("tags", b'{"a":[true],"b":1}')],
    ids=["string-utf8", "number-as-json", "object-as-json"],
)
def test_secret_value(key: str, expected: bytes) -> None:
    assert answers.secret_value(json.dumps(KV2).encode(), key, SECRET) == expected


@pytest.mark.parametrize(
    ("body", "kind", "detail"),
    [
        (json.dumps(KV2).encode(), FailureKind.NOT_FOUND, "key user not found in secret/payments/db"),
        (
            json.dumps({"data": {"data": None}}).encode(),
            FailureKind.INVALID,
            f"{SECRET} is not a KV v2 secret with data",
        ),
        (
            json.dumps({"data": {"user": "v"}}).encode(),
            FailureKind.INVALID,
            f"{SECRET} is not a KV v2 secret with data",
        ),
    ],
    ids=["missing-key", "deleted-version", "kv1-shape"],
)
def test_secret_value_failures_show_no_value(body: bytes, kind: FailureKind, detail: str) -> None:
    with pytest.raises(ReadError) as info:
        answers.secret_value(body, "user", SECRET)
    assert (info.value.kind, info.value.detail) == (kind, detail)
    assert "s3cr" not in str(info.value) and "5432" not in str(info.value)


A, B = "secret/data/payments/db", "secret/data/payments/api"


@pytest.mark.parametrize(
    ("body", "paths", "expected"),
    [
        (
            json.dumps({A: ["read", "list"], B: ["deny"], "data": {A: ["read", "list"], B: ["deny"]}}).encode(),
            [A, B],
            {A: True, B: False},
        ),
        (json.dumps({"capabilities": ["root"]}).encode(), [A], {A: True}),
        (json.dumps({"data": {A: ["update"]}}).encode(), [A, B], {A: False, B: False}),
        (json.dumps({"data": {A: ["read", "deny"]}}).encode(), [A], {A: False}),
        (b"garbage", [A], {A: False}),
    ],
    ids=["per-path", "single-path-form-root", "no-read-and-missing-path", "deny-wins", "unreadable"],
)
def test_capabilities_prove_reads(body: bytes, paths: list[str], expected: dict[str, bool]) -> None:
    found = answers.capabilities(body, paths)
    assert {p: answers.can_read(c) for p, c in found.items()} == expected
