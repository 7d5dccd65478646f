"""Live verification on the real control plane: Entra and Key Vault doubles decide, kvinject asks them.

kvinject runs as its ServiceAccount with the live-verification overlay's ClusterRole, mints tokens
with the real TokenRequest API, exchanges them at the Entra double (which verifies the apiserver's
signature and its federated-credential table) and reads from the Key Vault double (per-identity
grants, Key Vault's real 403 body).
"""

from __future__ import annotations

import functools
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import (
    CLIENT_ID,
    MANIFESTS,
    TENANT_ID,
    VAULT,
    ControlPlane,
    K,
    KvinjectServer,
    apply_docs,
    bundle,
    create,
    get_json,
    hygiene,
    pick,
    pod_manifest,
    point_webhooks_at,
    wait_for,
)
from tests.harness.doubles import KEY_VAULT_RESOURCE, FakeEntra, FakeKeyVault, FederatedCredential

LOCKED = "kv-locked"  # a vault whose access policy does not grant the identity
BUDGET = 2.0


@pytest.fixture
def vaults(tmp_path: Path, entra: FakeEntra) -> Iterator[FakeKeyVault]:
    kv = FakeKeyVault(
        tmp_path / "vaults",
        [VAULT, LOCKED],
        tenant_id=TENANT_ID,
        identity_of=functools.partial(entra.identity_of, resource=KEY_VAULT_RESOURCE),
    )
    with kv:
        hygiene.remember("live-value-7e1f", "locked-value-2b9c")
        kv.seed(VAULT, {"db-password": "live-value-7e1f"})
        kv.seed(LOCKED, {"db-password": "locked-value-2b9c"})
        kv.grant(VAULT, CLIENT_ID, "get")
        yield kv


class Live:
    def __init__(
        self, cp: ControlPlane, kvinject: KvinjectServer, entra: FakeEntra, kv: FakeKeyVault, tmp: Path, namespace: str
    ):
        self.cp, self.session, self.entra, self.kv, self.tmp, self.namespace = cp, kvinject, entra, kv, tmp, namespace
        self.bundle = bundle(tmp / "azure-ca.pem", entra.ca_file, kv.ca_file)
        self.server: KvinjectServer | None = None

    def start(self, **env: str) -> KvinjectServer:
        if self.server is not None:
            self.server.stop()
        self.server = KvinjectServer(
            self.tmp / f"live-{time.monotonic_ns()}",
            self.session.kubeconfig,
            env={
                "KVINJECT_TENANT_ID": TENANT_ID,
                "KVINJECT_LIVE_VERIFY": "true",
                "KVINJECT_LIVE_BUDGET_SECONDS": str(BUDGET),
                "KVINJECT_AUTHORITY_HOST": self.entra.authority,
                "KVINJECT_VAULT_URLS": json.dumps({v: self.kv.vault_url(v) for v in self.kv.vault_names}),
                "REQUESTS_CA_BUNDLE": str(self.bundle),
                **env,
            },
        ).start()
        point_webhooks_at(self.cp, self.server)
        return self.server

    def pod(self, ref: str, account: str = "api") -> dict[str, Any]:
        return pod_manifest(self.namespace, {K + "secret-db": ref}, serviceAccountName=account)


@pytest.fixture
def live(
    control_plane: ControlPlane,
    kvinject: KvinjectServer,
    entra: FakeEntra,
    vaults: FakeKeyVault,
    tmp_path: Path,
    namespace: str,
) -> Iterator[Live]:
    # The overlay's ClusterRole (TokenRequest) for kvinject's ServiceAccount and the policy that narrows which tokens
    # it may ask for (its requests must pass it); the rest is the base, already applied.
    overlay = control_plane.kubectl("kustomize", str(MANIFESTS / "overlays" / "live-verification")).stdout
    kinds = ("ClusterRole", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    apply_docs(control_plane, pick([d for d in yaml.safe_load_all(overlay) if d], *kinds))
    entra.trust_apiserver(control_plane)
    entra.add_federated_credential(
        FederatedCredential(TENANT_ID, CLIENT_ID, control_plane.issuer, f"system:serviceaccount:{namespace}:api")
    )
    harness = Live(control_plane, kvinject, entra, vaults, tmp_path, namespace)
    harness.start()
    try:
        yield harness
    finally:
        if harness.server is not None:
            harness.server.stop()
            assert "live-value" not in harness.server.logs() and "locked-value" not in harness.server.logs()
        point_webhooks_at(control_plane, kvinject)


def test_federated_and_allowed_is_admitted(live: Live) -> None:
    stored = create(live.cp, live.pod(f"{VAULT}/db-password"))
    assert stored["metadata"]["annotations"][K + "status"] == "injected"
    assert live.entra.requests_for(CLIENT_ID, succeeded=True) == 1


def test_not_federated_is_denied_with_the_federation_message(live: Live) -> None:
    live.cp.kubectl("create", "serviceaccount", "late", "-n", live.namespace)
    live.cp.kubectl(
        "annotate", "serviceaccount", "late", "-n", live.namespace, f"azure.workload.identity/client-id={CLIENT_ID}"
    )
    result = create(live.cp, live.pod(f"{VAULT}/db-password", account="late"), check=False)
    assert result.returncode != 0
    assert (
        f"Microsoft Entra ID refused to exchange the ServiceAccount's token for identity {CLIENT_ID}" in result.stderr
    )
    assert "AADSTS70021" in result.stderr
    assert "add a federated credential for this ServiceAccount to that identity" in result.stderr


def test_no_read_right_is_denied_naming_the_object(live: Live) -> None:
    result = create(live.cp, live.pod(f"{LOCKED}/db-password"), check=False)
    assert result.returncode != 0
    assert f"Azure says identity {CLIENT_ID} may not read {LOCKED}/db-password (Key Vault: " in result.stderr


def test_missing_object_is_denied(live: Live) -> None:
    result = create(live.cp, live.pod(f"{VAULT}/ghost"), check=False)
    assert f"{VAULT}/ghost does not exist in Key Vault" in result.stderr


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port that accepts connections and never answers: Azure hanging."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"https://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_azure_hanging_is_bounded_by_the_budget(live: Live, black_hole: str, fail_open: bool) -> None:
    live.start(
        KVINJECT_VAULT_URLS=json.dumps({VAULT: black_hole}), KVINJECT_LIVE_FAIL_OPEN="true" if fail_open else "false"
    )
    result = live.cp.kubectl(
        "create", "-o", "json", "-f", "-", check=False, input=yaml.safe_dump(live.pod(f"{VAULT}/db-password"))
    )
    # Only kvinject's own answer carries these messages: had the budget not bounded the wait, the apiserver's
    # webhook timeout would have failed the call with its own error instead.
    assert "failed calling webhook" not in result.stderr, result.stderr
    if fail_open:
        assert result.returncode == 0, result.stderr
        assert "Warning: kvinject could not verify access with Azure and admitted the pod" in result.stderr
    else:
        assert result.returncode != 0
        assert "could not verify access with Azure" in result.stderr


def test_a_rollout_costs_one_verification(live: Live) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "rollout", "namespace": live.namespace},
        "spec": {
            "replicas": 50,
            "selector": {"matchLabels": {"app": "rollout"}},
            "template": {
                "metadata": {
                    "labels": {"app": "rollout", K + "inject": "true"},
                    "annotations": {K + "secret-db": f"{VAULT}/db-password"},
                },
                "spec": {"serviceAccountName": "api", "containers": [{"name": "a", "image": "a:1"}]},
            },
        },
    }
    apply_docs(live.cp, [deployment])
    wait_for(
        lambda: len(get_json(live.cp, "pods", "-n", live.namespace, "-l", "app=rollout")["items"]) == 50,
        "50 pods",
        timeout=90,
    )
    assert live.entra.requests_for(CLIENT_ID) == 1
    reads = [r for r in live.kv.records if r.method == "GET" and "/secrets/db-password" in r.path and r.status == 200]
    assert len(reads) == 1, reads
    assert live.server is not None
    metrics = live.server.get("/metrics").text
    hits = next(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('kvinject_live_verification_cache_total{result="hit"}')
    )
    assert hits >= 40
