"""kvinject beside the real Azure Workload Identity webhook, called first or last, with reinvocation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.harness import (
    AZWI_PORT,
    CLIENT_ID,
    AzwiWebhook,
    Binaries,
    ControlPlane,
    K,
    KvinjectServer,
    create,
    isolated_network,
    mutating_configuration,
    mutating_webhook_in_effect,
    pod_manifest,
    unavailable,
)


@pytest.fixture(scope="module")
def azwi(
    e2e_binaries: Binaries,
    control_plane: ControlPlane,
    kvinject: KvinjectServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The peer webhook process; yields its caBundle."""
    if not isolated_network():
        unavailable("the Azure Workload Identity webhook binds all interfaces: run under tests/isolated.sh (make test)")
    e2e_binaries.require("azwi_webhook")
    workdir = tmp_path_factory.mktemp("azwi")
    with AzwiWebhook(e2e_binaries.azwi_webhook, workdir, control_plane.kubeconfig) as peer:
        yield peer.ca_bundle


def peer_configuration(name: str, ca_bundle: str) -> dict[str, Any]:
    """Shaped like the peer's own chart: pods labelled azure.workload.identity/use=true."""
    return mutating_configuration(
        name,
        "mutation.azure-workload-identity.io",
        f"https://127.0.0.1:{AZWI_PORT}/mutate-v1-pod",
        ca_bundle,
        {"azure.workload.identity/use": "true"},
        matchPolicy="Equivalent",
        reinvocationPolicy="IfNeeded",
        timeoutSeconds=10,
    )


def _peer_injected(pod: dict[str, Any]) -> bool:
    return any(e.get("name") == "AZURE_CLIENT_ID" for c in pod["spec"]["containers"] for e in c.get("env", []))


@contextmanager
def peer_installed(cp: ControlPlane, namespace: str, config_name: str, ca_bundle: str) -> Iterator[None]:
    """The peer's configuration, in effect (probed with dry runs) until the block ends, then gone again."""
    probe = pod_manifest(namespace, {})
    probe["metadata"]["labels"] = {"azure.workload.identity/use": "true"}
    with mutating_webhook_in_effect(cp, peer_configuration(config_name, ca_bundle), probe, _peer_injected):
        yield


# The apiserver calls mutating configurations sorted by name: "a-…" before "kvinject", "z-…" after.
@pytest.mark.parametrize("config_name", ["a-azure-wi-webhook", "z-azure-wi-webhook"], ids=["peer-first", "peer-last"])
def test_both_injections_without_duplicates(
    control_plane: ControlPlane, namespace: str, azwi: str, config_name: str
) -> None:
    with peer_installed(control_plane, namespace, config_name, azwi):
        pod = pod_manifest(
            namespace,
            {K + "secret-db": "peer-kv/db", K + "env-DB": "db"},
            containers=[{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}],
        )
        pod["metadata"]["labels"]["azure.workload.identity/use"] = "true"
        stored = create(control_plane, pod)

    spec = stored["spec"]
    volume_names = Counter(v["name"] for v in spec["volumes"])
    assert all(n == 1 for n in volume_names.values()), volume_names
    assert "kvinject-secrets" in volume_names
    assert any(
        "projected" in v
        and any("serviceAccountToken" in s for s in v["projected"]["sources"])
        and v["name"] != "kube-api-access"
        and not v["name"].startswith("kube-api-access")
        for v in spec["volumes"]
    ), "the peer's token volume"
    assert stored["metadata"]["annotations"][K + "status"] == "injected"
    for container in spec["containers"]:
        env = Counter(e["name"] for e in container["env"])
        assert all(n == 1 for n in env.values()), (container["name"], env)
        assert {
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST",
            "DB",
        } <= set(env)
        assert next(e for e in container["env"] if e["name"] == "AZURE_CLIENT_ID")["value"] == CLIENT_ID
        paths = Counter(m["mountPath"] for m in container["volumeMounts"])
        assert all(n == 1 for n in paths.values()), paths
        assert {"name": "kvinject-secrets", "mountPath": "/mnt/secrets", "readOnly": True} in container["volumeMounts"]


@pytest.mark.parametrize("config_name", ["a-azure-wi-webhook", "z-azure-wi-webhook"], ids=["peer-first", "peer-last"])
def test_init_mode_beside_the_peer(control_plane: ControlPlane, namespace: str, azwi: str, config_name: str) -> None:
    with peer_installed(control_plane, namespace, config_name, azwi):
        pod = pod_manifest(namespace, {K + "mode": "init", K + "secret-db": "peer-kv/db"})
        pod["metadata"]["labels"]["azure.workload.identity/use"] = "true"
        stored = create(control_plane, pod)
    spec = stored["spec"]
    assert all(n == 1 for n in Counter(v["name"] for v in spec["volumes"]).values())
    (fetch,) = [c for c in spec["initContainers"] if c["name"] == "kvinject-fetch"]
    env = Counter(e["name"] for e in fetch["env"])
    assert all(n == 1 for n in env.values()), env
    values = {e["name"]: e.get("value") for e in fetch["env"]}
    # Whoever came first, kvinject-fetch reads the token kvinject mounted for it.
    assert values["AZURE_FEDERATED_TOKEN_FILE"] == "/var/run/secrets/kvinject/azure-token/azure-identity-token"
    assert any(m["name"] == "kvinject-azure-token" for m in fetch["volumeMounts"])
    app = spec["containers"][0]
    assert "AZURE_CLIENT_ID" in {e["name"] for e in app["env"]}  # the peer's injection is intact
    assert {"name": "kvinject-secrets", "mountPath": "/mnt/secrets", "readOnly": True} in app["volumeMounts"]
