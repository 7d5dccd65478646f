"""The Terraform example (examples/terraform): the SecretAccessPolicy and ServiceAccount it creates mirror its
Azure side (identity, federated credential, Key Vault role assignments), and kvinject reads them as intended.

The Kubernetes half on a real apiserver (the CRD's schema, kvinject's admission) is tests/e2e/test_terraform_example.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.terraform import EXAMPLE, Applied, apply, load, parse

AUDIENCE = "api://AzureADTokenExchange"
ROLE = "Key Vault Secrets User"
CLIENT_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ANNOTATION = "azure.workload.identity/tenant-id"


def mismatches(applied: Applied) -> list[str]:
    """Every way the Kubernetes half fails to mirror the Azure half (empty: they correspond)."""
    problems: list[str] = []
    accounts, policies = applied.manifests("ServiceAccount"), applied.manifests("SecretAccessPolicy")
    if len(accounts) != 1 or len(policies) != 1:
        return [f"expected one ServiceAccount and one SecretAccessPolicy, got {len(accounts)} and {len(policies)}"]
    account, policy = accounts[0], policies[0]["spec"]
    annotations = account["metadata"].get("annotations", {})
    identities = {i["client_id"]: i for i in applied.of_type("azurerm_user_assigned_identity")}
    identity = identities.get(annotations.get(CLIENT_ANNOTATION))
    if identity is None:
        return [f"the ServiceAccount's {CLIENT_ANNOTATION} is no identity's client id"]
    if annotations.get(TENANT_ANNOTATION, identity["tenant_id"]) != identity["tenant_id"]:
        problems.append("the ServiceAccount's tenant is not the identity's")
    if policy["identity"] != {"clientId": identity["client_id"], "tenantId": identity["tenant_id"]}:
        problems.append(f"the policy's identity {policy['identity']} is not the ServiceAccount's identity")

    credentials = [
        c for c in applied.of_type("azurerm_federated_identity_credential") if c["parent_id"] == identity["id"]
    ]
    subjects = {c["subject"] for c in credentials}
    mirrored = {f"system:serviceaccount:{a['namespace']}:{a['name']}" for a in policy["federatedServiceAccounts"]}
    own = f"system:serviceaccount:{account['metadata']['namespace']}:{account['metadata']['name']}"
    if subjects != mirrored:
        problems.append(f"federated subjects {sorted(subjects)} != policy's ServiceAccounts {sorted(mirrored)}")
    if own not in subjects:
        problems.append(f"no federated credential for the ServiceAccount ({own})")
    for c in credentials:
        if c["audience"] != [AUDIENCE]:
            problems.append(f"federated credential {c['name']} has audience {c['audience']}, not [{AUDIENCE}]")
        if c["issuer"] != applied.variables["oidc_issuer_url"]:
            problems.append(f"federated credential {c['name']} trusts {c['issuer']}, not the cluster's issuer")

    vaults = {v["id"]: v["name"] for v in applied.of_type("azurerm_key_vault")}
    granted: set[tuple[str, str]] = set()
    for r in applied.of_type("azurerm_role_assignment"):
        if r["principal_id"] != identity["principal_id"] or r["role_definition_name"] != ROLE:
            continue
        vault_id, _, secret = r["scope"].partition("/secrets/")
        if vault_id not in vaults:
            problems.append(f"role assignment on {r['scope']}: no Key Vault in the example has that id")
            continue
        granted.add((vaults[vault_id], secret or "*"))
    allowed = {(rule["vault"], pattern) for rule in policy["allow"] for pattern in rule["objects"]}
    if granted != allowed:
        problems.append(f"{ROLE} on {sorted(granted)} but the policy allows {sorted(allowed)}")
    return problems


@pytest.fixture(scope="module")
def applied() -> Applied:
    return apply(load())


def test_example_kubernetes_half_mirrors_its_azure_half(applied: Applied) -> None:
    assert mismatches(applied) == []
    # What the mirror means: one identity, federated to exactly the policy's ServiceAccount, reading its secrets.
    (policy,) = applied.manifests("SecretAccessPolicy")
    assert policy["spec"]["federatedServiceAccounts"] == [{"namespace": "payments", "name": "api"}]
    assert len(applied.of_type("azurerm_role_assignment")) == len(policy["spec"]["allow"][0]["objects"]) > 0


@pytest.mark.parametrize(
    ("before", "after", "problem"),
    [
        (
            '"system:serviceaccount:${local.namespace}:${local.service_account}"',
            '"system:serviceaccount:${local.namespace}:worker"',
            "federated subjects",
        ),
        ("objects = local.secrets", 'objects = ["db-password", "admin-password"]', "but the policy allows"),
        (
            'scope                = "${data.azurerm_key_vault.app.id}/secrets/${each.value}"',
            "scope                = data.azurerm_key_vault.app.id",
            "but the policy allows",
        ),
        ('audience            = ["api://AzureADTokenExchange"]', 'audience = ["api://other"]', "has audience"),
        (
            '"azure.workload.identity/client-id" = azurerm_user_assigned_identity.app.client_id',
            '"azure.workload.identity/client-id" = "11111111-2222-3333-4444-555555555555"',
            "is no identity's client id",
        ),
        (
            "clientId = azurerm_user_assigned_identity.app.client_id",
            'clientId = "11111111-2222-3333-4444-555555555555"',
            "the policy's identity",
        ),
        ("issuer              = var.oidc_issuer_url", 'issuer = "https://elsewhere.test"', "not the cluster's"),
    ],
    ids=[
        "subject-other-sa",
        "policy-allows-more",
        "role-on-whole-vault",
        "audience",
        "sa-client-id",
        "policy-client-id",
        "issuer",
    ],
)
def test_a_drifted_mirror_is_caught(before: str, after: str, problem: str) -> None:
    source = (EXAMPLE / "main.tf").read_text()
    assert source.count(before) == 1, f"the example no longer contains {before!r}: update this table"
    problems = mismatches(apply(parse(source.replace(before, after))))
    assert any(problem in p for p in problems), problems


def _deployment(namespace: str, account: str, vault: str, objects: list[str]) -> dict[str, Any]:
    annotations = {"kvinject.io/vault": vault, **{f"kvinject.io/secret-{o}": o for o in objects}}
    template = {
        "metadata": {"labels": {"app": "api", "kvinject.io/inject": "true"}, "annotations": annotations},
        "spec": {"serviceAccountName": account, "containers": [{"name": "app", "image": "app:1"}]},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": template},
    }


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [([], 0, ""), (["admin-password"], 1, "may not read payments-kv/admin-password")],
    ids=["its-secrets-allowed", "another-secret-denied"],
)
def test_kvinject_admits_exactly_what_the_example_grants(
    applied: Applied, tmp_path: Path, extra: list[str], code: int, message: str
) -> None:
    (account,) = applied.manifests("ServiceAccount")
    (policy,) = applied.manifests("SecretAccessPolicy")
    namespace, name = account["metadata"]["namespace"], account["metadata"]["name"]
    (rule,) = policy["spec"]["allow"]
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        yaml.safe_dump_all(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, account, policy]
        )
    )
    workload = tmp_path / "deployment.yaml"
    workload.write_text(yaml.safe_dump(_deployment(namespace, name, rule["vault"], [*rule["objects"], *extra])))
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "mutate", str(workload), "--cluster", str(cluster)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    if code == 0:
        generated = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "SecretProviderClass"]
        assert len(generated) == 1
        assert generated[0]["spec"]["parameters"]["clientID"] == policy["spec"]["identity"]["clientId"]
