"""The SecretAccessPolicy CRD on the real apiserver: Vault identities and allow entries, one store per policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import ControlPlane

pytestmark = pytest.mark.e2e

CRD = Path(__file__).resolve().parents[2] / "manifests" / "base" / "crd-secretaccesspolicy.yaml"
AZURE = {"clientId": "11111111-2222-3333-4444-555555555555", "tenantId": "66666666-7777-8888-9999-000000000000"}
VAULT = {"vault": {"authMount": "kubernetes", "role": "payments"}}
VAULT_ALLOW = [{"path": "secret/payments/*", "keys": ["password"]}]
AZURE_ALLOW = [{"vault": "payments-kv", "objects": ["db-*"]}]


def policy(identity: dict[str, Any], allow: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "kvinject.io/v1alpha1",
        "kind": "SecretAccessPolicy",
        "metadata": {"name": "crd-vault-check"},
        "spec": {
            "identity": identity,
            "federatedServiceAccounts": [{"namespace": "payments", "name": "api"}],
            "allow": allow,
        },
    }


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> ControlPlane:
    control_plane.apply_crd(CRD)
    return control_plane


@pytest.mark.parametrize(
    ("obj", "rejection"),
    [
        (policy(VAULT, VAULT_ALLOW), ""),
        (policy({"vault": {"authMount": "auth/k8s-east/", "role": "api"}}, [{"path": "kv/app"}]), ""),
        (policy(AZURE, AZURE_ALLOW), ""),
        (policy(VAULT | AZURE, VAULT_ALLOW), "set clientId and tenantId (Azure), or vault (HashiCorp Vault), not both"),
        (policy({"clientId": AZURE["clientId"]}, AZURE_ALLOW), "set clientId and tenantId (Azure), or vault"),
        (policy(VAULT, AZURE_ALLOW), "allow entries name a path (and keys) for a Vault identity"),
        (policy(AZURE, VAULT_ALLOW), "allow entries name a path (and keys) for a Vault identity"),
        (
            policy(VAULT, [{"path": "secret/a", "vault": "payments-kv", "objects": ["x"]}]),
            "an entry names a vault and objects (Azure), or a path and keys (HashiCorp Vault)",
        ),
        (policy(VAULT, [{"path": "no-mount"}]), "spec.allow[0].path"),
        (policy({"vault": {"authMount": "kubernetes", "role": "-x"}}, VAULT_ALLOW), "spec.identity.vault.role"),
    ],
    ids=[
        "vault",
        "vault-keys-default",
        "azure-unchanged",
        "both-identities",
        "azure-without-tenant",
        "vault-identity-azure-entries",
        "azure-identity-vault-entries",
        "entry-of-both-stores",
        "path-without-mount",
        "bad-role",
    ],
)
def test_crd_admits_one_store_per_policy(crd: ControlPlane, obj: dict[str, Any], rejection: str) -> None:
    done = crd.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False)
    if rejection:
        assert done.returncode != 0, done.stdout
        assert rejection in done.stderr
    else:
        assert done.returncode == 0, done.stderr
