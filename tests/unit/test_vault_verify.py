"""Vault live verification's own logic through kvinject's seams: a cluster that mints fake tokens and a fake
Transport answering as Vault does (bodies as tests/e2e/vault/test_vault_harness.py records them from a real Vault).
The real HTTP against a real Vault: tests/e2e/vault/test_live_vault.py."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest

from webhook import providers
from webhook.cluster import FileCluster
from webhook.contract import ObjectRef
from webhook.identity import Identity
from webhook.live import Result
from webhook.metrics import Metrics
from webhook.names import STORE_VAULT
from webhook.providers.vault.verify import VaultUnreachable, Verifier, _HttpTransports
from webhook.settings import Settings

ADDRESS = "https://vault.example:8200"
WHO = Identity("payments", "kubernetes", store=STORE_VAULT)
DB = ObjectRef("secret", "payments/db", key="password")
DB_USER = ObjectRef("secret", "payments/db", key="username")
BILLING = ObjectRef("secret", "billing/api", key="token")
JWT = "jwt-of-payments-api-0d1e"  # never to appear in a message or a log line
VAULT_TOKEN = "hvs.live-token-7c2a"
PERMISSION_DENIED = {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}
HANG_GUARD = 60.0  # stops a test that would hang; no speed is asserted


class TokenCluster(FileCluster):
    def __init__(self) -> None:
        super().__init__([])
        self.tokens = 0

    async def request_token(self, namespace: str, name: str, audience: str, seconds: int) -> str:
        assert audience == "vault" and seconds == 600
        self.tokens += 1
        return JWT


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


LOGGED_IN = (200, body({"auth": {"client_token": VAULT_TOKEN, "policies": ["default", "payments-read"]}}))


class FakeVault:
    """Answers per API path (a tuple, VaultUnreachable, or an asyncio.Event to wait on first); records every call."""

    def __init__(self, answers: dict[str, Any]):
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []
        self.closed = 0
        self.opened = 0

    def __call__(self) -> FakeVault:
        self.opened += 1
        return self

    async def post(self, path: str, body: dict[str, Any], token: str | None, timeout: float) -> tuple[int, bytes]:
        assert timeout > 0
        self.calls.append((path, body, token))
        answer = self.answers.get(path, (200, b"{}"))
        if isinstance(answer, asyncio.Event):
            await answer.wait()
            answer = LOGGED_IN
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    async def close(self) -> None:
        self.closed += 1

    def paths(self) -> list[str]:
        return [c[0] for c in self.calls]


def capabilities(**per_path: list[str]) -> tuple[int, bytes]:
    """sys/capabilities-self's answer: per path at the top level and under data, as Vault sends it."""
    caps = {f"secret/data/{p.replace('__', '/')}": c for p, c in per_path.items()}
    return 200, body({**caps, "data": caps})


def verifier(answers: dict[str, Any], **settings: Any) -> tuple[Verifier, TokenCluster, FakeVault]:
    cluster, vault = TokenCluster(), FakeVault(answers)
    s = Settings(live_verify=True, hashicorp_vault_address=ADDRESS, **settings)
    return Verifier(s, cluster, Metrics(), vault), cluster, vault


# What Vault answers → the finding for secret/payments/db#password.
CASES: dict[str, tuple[dict[str, Any], Result, str]] = {
    "read": ({"sys/capabilities-self": capabilities(payments__db=["read"])}, Result.ALLOWED, ""),
    "root": ({"sys/capabilities-self": capabilities(payments__db=["root"])}, Result.ALLOWED, ""),
    "read-and-list": ({"sys/capabilities-self": capabilities(payments__db=["list", "read"])}, Result.ALLOWED, ""),
    "deny": (
        {"sys/capabilities-self": capabilities(payments__db=["deny"])},
        Result.DENIED,
        "Vault says role payments may not read secret/payments/db (capabilities: deny)",
    ),
    "deny-wins-over-read": (
        {"sys/capabilities-self": capabilities(payments__db=["deny", "read"])},
        Result.DENIED,
        "Vault says role payments may not read secret/payments/db (capabilities: deny, read)",
    ),
    "list-only": (
        {"sys/capabilities-self": capabilities(payments__db=["list"])},
        Result.DENIED,
        "Vault says role payments may not read secret/payments/db (capabilities: list)",
    ),
    "path-left-out": (
        {"sys/capabilities-self": (200, body({"data": {}}))},
        Result.DENIED,
        "Vault says role payments may not read secret/payments/db (capabilities: none)",
    ),
    "not-bound": (
        {"auth/kubernetes/login": (403, body({"errors": ["service account name not authorized"]}))},
        Result.NOT_FEDERATED,
        "Vault refused the login as role payments on auth/kubernetes: service account name not authorized: the role"
        " must bind ServiceAccount ns/api (bound_service_account_names and _namespaces) and accept the audience vault",
    ),
    "unknown-role": (
        {"auth/kubernetes/login": (400, body({"errors": ['invalid role name "payments"']}))},
        Result.NOT_FEDERATED,
        'Vault refused the login as role payments on auth/kubernetes: invalid role name "payments": the role',
    ),
    "login-5xx": (
        {"auth/kubernetes/login": (503, body({"errors": ["Vault is sealed"]}))},
        Result.UNVERIFIED,
        f"Vault login answered HTTP 503 (Vault at {ADDRESS})",
    ),
    "login-without-token": (
        {"auth/kubernetes/login": (200, body({"auth": None}))},
        Result.UNVERIFIED,
        "Vault's login answer carries no client token",
    ),
    "capabilities-refused": (
        {"sys/capabilities-self": (403, body(PERMISSION_DENIED))},
        Result.UNVERIFIED,
        "Vault answered sys/capabilities-self for role payments with HTTP 403 (1 error occurred:",
    ),
    "capabilities-5xx": (
        {"sys/capabilities-self": (503, b"")},
        Result.UNVERIFIED,
        "Vault answered sys/capabilities-self for role payments with HTTP 503 (no error text)",
    ),
    "standby-redirect": (
        {"auth/kubernetes/login": (307, b"")},
        Result.UNVERIFIED,
        f"Vault at {ADDRESS} redirected the login (HTTP 307): set KVINJECT_HASHICORP_VAULT_ADDRESS",
    ),
    "unreachable": (
        {"auth/kubernetes/login": VaultUnreachable(f"could not reach Vault at {ADDRESS}: Connect call failed")},
        Result.UNVERIFIED,
        f"could not reach Vault at {ADDRESS}: Connect call failed",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_vault_answers_map_to_findings(case: tuple[dict[str, Any], Result, str]) -> None:
    answers, result, fragment = case
    v, _, _ = verifier({"auth/kubernetes/login": LOGGED_IN, **answers})
    (finding,) = await v.verify("ns", "api", WHO, [DB])
    await v.aclose()
    assert finding.result is result
    assert fragment in finding.message if fragment else finding.message == ""
    assert JWT not in finding.message and VAULT_TOKEN not in finding.message


async def test_one_login_and_one_capabilities_call_for_every_path_then_the_token_is_revoked() -> None:
    v, cluster, vault = verifier(
        {"auth/kubernetes/login": LOGGED_IN, "sys/capabilities-self": capabilities(payments__db=["read"])}
    )
    findings = await v.verify("ns", "api", WHO, [DB, DB_USER, BILLING])
    await v.aclose()
    assert [f.result for f in findings] == [Result.ALLOWED, Result.ALLOWED, Result.DENIED]
    assert cluster.tokens == 1
    assert vault.calls == [
        ("auth/kubernetes/login", {"role": "payments", "jwt": JWT}, None),
        # keys of one path share its answer: the path is asked once
        ("sys/capabilities-self", {"paths": ["secret/data/billing/api", "secret/data/payments/db"]}, VAULT_TOKEN),
        ("auth/token/revoke-self", {}, VAULT_TOKEN),
    ]
    assert vault.opened == vault.closed == 1


@pytest.mark.parametrize(
    "answers",
    [
        {"auth/kubernetes/login": (403, body({"errors": ["namespace not authorized"]}))},
        {"auth/kubernetes/login": VaultUnreachable("down")},
    ],
    ids=["login-refused", "unreachable"],
)
async def test_no_token_no_revocation_but_the_connection_is_closed(answers: dict[str, Any]) -> None:
    v, _, vault = verifier(answers)
    await v.verify("ns", "api", WHO, [DB])
    await v.aclose()
    assert vault.paths() == ["auth/kubernetes/login"] and vault.closed == 1


async def test_a_failed_capabilities_call_still_revokes_the_token() -> None:
    v, _, vault = verifier({"auth/kubernetes/login": LOGGED_IN, "sys/capabilities-self": (500, b"")})
    await v.verify("ns", "api", WHO, [DB])
    await v.aclose()
    assert vault.paths()[-1] == "auth/token/revoke-self" and vault.closed == 1


async def test_allowed_is_cached_for_the_positive_ttl_denied_for_the_negative_and_unverified_never() -> None:
    v, cluster, vault = verifier(
        {"auth/kubernetes/login": LOGGED_IN, "sys/capabilities-self": capabilities(payments__db=["read"])},
        live_negative_ttl_seconds=0.2,
    )
    await v.verify("ns", "api", WHO, [DB, BILLING])
    await v.verify("ns", "api", WHO, [DB, BILLING])
    assert cluster.tokens == 1  # both from the cache
    await asyncio.sleep(0.25)  # the negative TTL ran out, not the positive one
    await v.verify("ns", "api", WHO, [DB, BILLING])
    asked = [c[1] for c in vault.calls if c[0] == "sys/capabilities-self"]
    assert cluster.tokens == 2 and asked[-1] == {"paths": ["secret/data/billing/api"]}
    vault.answers["auth/kubernetes/login"] = VaultUnreachable("down")
    other = ObjectRef("secret", "payments/other", key="k")
    for _ in range(2):
        (finding,) = await v.verify("ns", "api", WHO, [other])
        assert finding.result is Result.UNVERIFIED
    assert cluster.tokens == 4
    await v.aclose()


async def test_concurrent_identical_checks_share_one_login() -> None:
    release = asyncio.Event()
    v, cluster, vault = verifier(
        {"auth/kubernetes/login": release, "sys/capabilities-self": capabilities(payments__db=["read"])}
    )
    pending = [asyncio.ensure_future(v.verify("ns", "api", WHO, [DB])) for _ in range(20)]
    await asyncio.wait_for(_until(lambda: bool(vault.calls)), HANG_GUARD)
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*pending), HANG_GUARD)
    await v.aclose()
    assert all(r[0].result is Result.ALLOWED for r in results)
    assert cluster.tokens == 1 and vault.paths().count("auth/kubernetes/login") == 1
    assert v.metrics.registry.get_sample_value("kvinject_live_verification_cache_total", {"result": "coalesced"}) == 19


async def test_principals_do_not_share_cache_entries() -> None:
    v, cluster, _ = verifier(
        {"auth/kubernetes/login": LOGGED_IN, "sys/capabilities-self": capabilities(payments__db=["read"])}
    )
    await v.verify("ns", "api", WHO, [DB])
    await v.verify("ns", "other", WHO, [DB])
    await v.verify("ns", "api", Identity("billing", "kubernetes", store=STORE_VAULT), [DB])
    await v.verify("ns", "api", Identity("payments", "k8s-east", store=STORE_VAULT), [DB])
    await v.aclose()
    assert cluster.tokens == 4


async def test_the_budget_bounds_a_hanging_vault_and_the_connection_is_still_closed() -> None:
    never = asyncio.Event()
    v, _, vault = verifier({"auth/kubernetes/login": never}, live_budget_seconds=0.3)
    (finding,) = await asyncio.wait_for(v.verify("ns", "api", WHO, [DB]), HANG_GUARD)
    assert (finding.result, finding.message) == (Result.UNVERIFIED, "Vault did not answer within 0.3s")
    await asyncio.wait_for(v.aclose(), HANG_GUARD)
    assert vault.closed == 1


async def test_an_unset_address_is_unverified_without_calling_anyone() -> None:
    cluster, vault = TokenCluster(), FakeVault({})
    v = Verifier(Settings(live_verify=True), cluster, Metrics(), vault)
    (finding,) = await v.verify("ns", "api", WHO, [DB])
    assert finding.result is Result.UNVERIFIED and "KVINJECT_HASHICORP_VAULT_ADDRESS is not set" in finding.message
    assert vault.opened == 0


async def test_no_token_reaches_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    v, _, _ = verifier(
        {
            "auth/kubernetes/login": LOGGED_IN,
            "sys/capabilities-self": capabilities(payments__db=["read"]),
            "auth/token/revoke-self": (403, body(PERMISSION_DENIED)),
        }
    )
    await v.verify("ns", "api", WHO, [DB])
    await v.aclose()
    assert "could not revoke the Vault token of a live verification as role payments" in caplog.text
    assert JWT not in caplog.text and VAULT_TOKEN not in caplog.text


def test_the_provider_builds_this_verifier() -> None:
    built = providers.get("vault").live_verifier(Settings(hashicorp_vault_address=ADDRESS), TokenCluster(), Metrics())
    assert isinstance(built, Verifier) and built.audience() == "vault"


def test_tls_is_verified_against_the_ca_file_alone(tmp_path: Path) -> None:
    from tests.harness.pki import PKI

    pki = PKI(tmp_path / "pki", ca_common_name="vault-ca")
    transports = _HttpTransports(ADDRESS, pki.ca_cert)
    context = transports._ssl()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "vault-ca"),),)]
    assert transports._ssl() is context  # the same file: the same context


def test_a_missing_ca_file_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(VaultUnreachable, match="cannot use the Vault CA file"):
        _HttpTransports(ADDRESS, tmp_path / "absent.pem")._ssl()


async def _until(probe: Any) -> None:
    while not probe():
        await asyncio.sleep(0.01)
