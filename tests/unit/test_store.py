"""The cache's indexes stay in step with puts, updates and deletes (policies by client id, synced Secrets)."""

from __future__ import annotations

from typing import Any

from webhook.cluster import FileCluster

A = "11111111-2222-3333-4444-555555555555"
B = "66666666-7777-8888-9999-000000000000"


def sap(name: str, client: str) -> dict[str, Any]:
    return {
        "kind": "SecretAccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "identity": {"clientId": client, "tenantId": A},
            "federatedServiceAccounts": [{"namespace": "n", "name": "s"}],
            "allow": [{"vault": "kv-one", "objects": ["*"]}],
        },
    }


def spc(name: str, secret: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"provider": "azure", "parameters": {}}
    if secret:
        spec["secretObjects"] = [{"secretName": secret, "type": "Opaque", "data": []}]
    return {"kind": "SecretProviderClass", "metadata": {"name": name, "namespace": "n"}, "spec": spec}


def test_policy_index_follows_updates_and_deletes() -> None:
    c = FileCluster([sap("p1", A), sap("p2", A.upper())])
    assert sorted(p.name for p in c.policies_for(A)) == ["p1", "p2"]
    c.apply("MODIFIED", sap("p2", B))
    assert [p.name for p in c.policies_for(A)] == ["p1"] and [p.name for p in c.policies_for(B)] == ["p2"]
    c.apply("DELETED", sap("p1", A))
    assert c.policies_for(A) == [] and not c.stores.policies.indexes["client"].get(A)


def test_synced_secret_index() -> None:
    c = FileCluster([spc("one", "shared"), spc("two", "shared"), spc("three", None)])
    assert sorted(s.name for s in c.classes_syncing("n", "shared")) == ["one", "two"]
    c.apply("MODIFIED", spc("two", "other"))
    assert [s.name for s in c.classes_syncing("n", "shared")] == ["one"]
    assert c.classes_syncing("elsewhere", "shared") == []
