"""Vault live verification against the real Vault and the real control plane, driven through its `verify`.

kvinject mints the ServiceAccount's token with the real TokenRequest API (the Cluster seam, as the admin user),
logs in through Vault's Kubernetes auth (a real TokenReview), asks `sys/capabilities-self`, and revokes the token,
over TLS trusting only the Vault CA (KVINJECT_HASHICORP_VAULT_CA_FILE). What kvinject asked Vault is read back
from a Vault file audit device: how many logins, and that each token a login issued was revoked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ControlPlane
from tests.harness.vault import VaultRole, VaultServer, read_policy
from webhook.cluster.api import KubeCluster
from webhook.contract import ObjectRef
from webhook.identity import Identity
from webhook.live import Finding, Result
from webhook.metrics import Metrics
from webhook.names import STORE_VAULT
from webhook.providers.vault.verify import Verifier
from webhook.settings import Settings

ROLE = "live-payments"
WHO = Identity(ROLE, "kubernetes", store=STORE_VAULT)
DB = ObjectRef("secret", "live-payments/db", key="password")
DB_USER = ObjectRef("secret", "live-payments/db", key="username")
NOT_SEEDED = ObjectRef("secret", "live-payments/cache", key="url")  # granted by the glob; no secret there
BILLING = ObjectRef("secret", "live-billing/api", key="token")
LOGIN = "auth/kubernetes/login"
AUDIT_DEVICE = "kvinject-live"


@dataclass(frozen=True)
class Seeded:
    namespace: str
    other_namespace: str


@pytest.fixture(scope="module")
def seeded(vault: VaultServer, control_plane: ControlPlane) -> Iterator[Seeded]:
    """Role live-payments binds ServiceAccount api of a fresh namespace to a policy reading secret/live-payments/*;
    `intruder` beside it and `api` of another namespace are bound to nothing."""
    namespace, other = f"vlive-{uuid.uuid4().hex[:8]}", f"vlive-other-{uuid.uuid4().hex[:8]}"
    for ns in (namespace, other):
        control_plane.kubectl("create", "namespace", ns)
        control_plane.kubectl("create", "serviceaccount", "api", "-n", ns)
    control_plane.kubectl("create", "serviceaccount", "intruder", "-n", namespace)
    vault.put_secret("live-payments/db", {"password": secrets.token_urlsafe(16), "username": "app"})
    vault.put_secret("live-billing/api", {"token": secrets.token_urlsafe(16)})
    vault.write_policy("live-payments-read", read_policy("secret", "live-payments/*"))
    vault.write_role(VaultRole(ROLE, ["api"], [namespace], ["live-payments-read"]))
    yield Seeded(namespace, other)
    for ns in (namespace, other):
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


class Audit:
    """Vault's file audit device: every request and response, tokens as HMACs."""

    def __init__(self, path: Path):
        self.path = path
        self.mark()

    def mark(self) -> None:
        """Later reads see only what came after this."""
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def entries(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            return [json.loads(line) for line in f.read().splitlines() if line.strip()]

    def requests(self, path: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["type"] == "request" and e["request"]["path"] == path]

    def responses(self, path: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["type"] == "response" and e["request"]["path"] == path]


@pytest.fixture(scope="module")
def audit(vault: VaultServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audit]:
    path = tmp_path_factory.mktemp("vault-audit") / "audit.log"
    vault.admin.sys.enable_audit_device("file", path=AUDIT_DEVICE, options={"file_path": str(path)})
    try:
        yield Audit(path)
    finally:
        vault.admin.sys.disable_audit_device(AUDIT_DEVICE)


@pytest.fixture
def cluster(kube_api_client: object) -> KubeCluster:
    return KubeCluster(kube_api_client)


def settings(vault: VaultServer, **more: Any) -> Settings:
    return Settings(
        **{"live_verify": True, "hashicorp_vault_address": vault.url, "hashicorp_vault_ca_file": vault.ca_file, **more}
    )


def verify(verifier: Verifier, namespace: str, account: str, refs: list[ObjectRef]) -> list[Finding]:
    async def run() -> list[Finding]:
        try:
            return await verifier.verify(namespace, account, WHO, refs)
        finally:
            await verifier.aclose()  # the background revocations

    return asyncio.run(run())


def no_token_logged(caplog: pytest.LogCaptureFixture) -> None:
    # A ServiceAccount token is a JWT (eyJ...); a Vault service token starts hvs.
    assert "eyJ" not in caplog.text and "hvs." not in caplog.text


# Which refs, and what Vault says about each.
ALLOWED_OR_NOT = {
    "granted-keys-of-one-path": ([DB, DB_USER], [(Result.ALLOWED, "")] * 2),
    "granted-by-the-glob-without-a-secret": ([NOT_SEEDED], [(Result.ALLOWED, "")]),
    "not-granted": (
        [BILLING],
        [(Result.DENIED, f"Vault says role {ROLE} may not read secret/live-billing/api (capabilities: deny)")],
    ),
    "mixed": (
        [DB, BILLING],
        [
            (Result.ALLOWED, ""),
            (Result.DENIED, f"Vault says role {ROLE} may not read secret/live-billing/api (capabilities: deny)"),
        ],
    ),
}


@pytest.mark.parametrize("case", ALLOWED_OR_NOT.values(), ids=ALLOWED_OR_NOT.keys())
def test_vault_proves_read_per_path_without_reading(
    vault: VaultServer,
    cluster: KubeCluster,
    seeded: Seeded,
    audit: Audit,
    caplog: pytest.LogCaptureFixture,
    case: tuple[list[ObjectRef], list[tuple[Result, str]]],
) -> None:
    refs, expected = case
    caplog.set_level(logging.DEBUG)
    audit.mark()
    findings = verify(Verifier(settings(vault), cluster, Metrics()), seeded.namespace, "api", refs)
    assert [(f.result, f.message) for f in findings] == expected
    assert len(audit.requests(LOGIN)) == 1 and len(audit.requests("sys/capabilities-self")) == 1
    assert not [e for e in audit.entries() if "/data/" in e["request"]["path"]], "a value was read"
    no_token_logged(caplog)


# Who logs in as role live-payments, and Vault's own refusal in the message.
NOT_BOUND = {
    "service-account-not-bound": ("ns", "intruder", "service account name not authorized"),
    "namespace-not-bound": ("other", "api", "namespace not authorized"),
}


@pytest.mark.parametrize("case", NOT_BOUND.values(), ids=NOT_BOUND.keys())
def test_a_service_account_the_role_does_not_bind_is_refused_with_vaults_message(
    vault: VaultServer, cluster: KubeCluster, seeded: Seeded, case: tuple[str, str, str]
) -> None:
    where, account, said = case
    namespace = seeded.namespace if where == "ns" else seeded.other_namespace
    findings = verify(Verifier(settings(vault), cluster, Metrics()), namespace, account, [DB, BILLING])
    expected = (
        f"Vault refused the login as role {ROLE} on auth/kubernetes: {said}: the role must bind ServiceAccount"
        f" {namespace}/{account} (bound_service_account_names and _namespaces) and accept the audience vault"
    )
    assert [(f.result, f.message) for f in findings] == [(Result.NOT_FEDERATED, expected)] * 2


def test_a_token_of_another_audience_is_refused_by_vault(
    vault: VaultServer, cluster: KubeCluster, seeded: Seeded
) -> None:
    """The audience kvinject requests is the setting's; a role expecting another refuses the login."""
    findings = verify(
        Verifier(settings(vault, hashicorp_vault_audience="not-vault"), cluster, Metrics()),
        seeded.namespace,
        "api",
        [DB],
    )
    assert findings[0].result is Result.NOT_FEDERATED
    assert "invalid audience (aud) claim" in findings[0].message


def test_concurrent_checks_share_one_login_and_the_cache_answers_after(
    vault: VaultServer, cluster: KubeCluster, seeded: Seeded, audit: Audit
) -> None:
    verifier = Verifier(settings(vault), cluster, Metrics())

    async def run() -> list[list[Finding]]:
        try:
            together = await asyncio.gather(*(verifier.verify(seeded.namespace, "api", WHO, [DB]) for _ in range(10)))
            again = await verifier.verify(seeded.namespace, "api", WHO, [DB])
            return [*together, again]
        finally:
            await verifier.aclose()

    audit.mark()
    results = asyncio.run(run())
    assert all(r == [Finding(DB, Result.ALLOWED)] for r in results)
    assert len(audit.requests(LOGIN)) == 1
    cache = {
        r: verifier.metrics.registry.get_sample_value("kvinject_live_verification_cache_total", {"result": r})
        for r in ("miss", "coalesced", "hit")
    }
    assert cache == {"miss": 10, "coalesced": 9, "hit": 1}


def test_every_token_a_login_issued_is_revoked(
    vault: VaultServer, cluster: KubeCluster, seeded: Seeded, audit: Audit
) -> None:
    audit.mark()
    verify(Verifier(settings(vault), cluster, Metrics()), seeded.namespace, "api", [DB])
    (login,) = audit.responses(LOGIN)
    issued = login["auth"]["client_token"]  # an HMAC of the token, comparable across entries
    (asked,) = audit.requests("sys/capabilities-self")
    (revoked,) = audit.responses("auth/token/revoke-self")
    assert asked["auth"]["client_token"] == revoked["auth"]["client_token"] == issued
    assert "error" not in revoked


def test_a_vault_certificate_from_an_untrusted_ca_is_not_accepted(
    vault: VaultServer, cluster: KubeCluster, seeded: Seeded, audit: Audit
) -> None:
    audit.mark()
    # The system's roots (this machine's bundle) do not include the Vault CA.
    verifier = Verifier(settings(vault, hashicorp_vault_ca_file=None), cluster, Metrics())
    (finding,) = verify(verifier, seeded.namespace, "api", [DB])
    assert finding.result is Result.UNVERIFIED
    assert finding.message == (
        f"Vault at {vault.url} presented a certificate kvinject does not trust (unable to get local issuer"
        " certificate): set KVINJECT_HASHICORP_VAULT_CA_FILE to the CA that issued it"
    )
    assert audit.requests(LOGIN) == []  # the token never left kvinject


def test_a_stopped_vault_is_unverified_never_cached(vault: VaultServer, cluster: KubeCluster, seeded: Seeded) -> None:
    # What /mutate makes of "unverified" (fail closed or open) is tested through the apiserver in
    # test_admission_vault.py; here: the finding, and that Vault back up proves access with the same verifier.
    verifier = Verifier(settings(vault), cluster, Metrics())
    vault.stop()
    try:
        findings = verify(verifier, seeded.namespace, "api", [DB])
    finally:
        vault.start()
    refused = f"could not reach Vault at {vault.url}: connection refused"
    assert [(f.result, f.message) for f in findings] == [(Result.UNVERIFIED, refused)]
    assert verify(verifier, seeded.namespace, "api", [DB]) == [Finding(DB, Result.ALLOWED)]
