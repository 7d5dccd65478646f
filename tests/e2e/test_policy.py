"""Policy and the validating webhook on the real control plane: the bypasses are closed."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import (
    CLIENT_ID,
    E2E_VAULTS,
    TENANT_ID,
    ControlPlane,
    K,
    KvinjectServer,
    access_policy,
    apply_docs,
    class_webhook_removed,
    create,
    get_json,
    mutating_configuration,
    mutating_webhook_in_effect,
    pod_manifest,
    service_account,
    wait_for,
)
from tests.harness.doubles import Double, Request, Response

OTHER_CLIENT = "99999999-8888-7777-6666-555555555555"


def provider_class(namespace: str, name: str, **parameters: str) -> dict[str, Any]:
    params = {
        "keyvaultName": "shape-kv",
        "tenantId": TENANT_ID,
        "objects": "array:\n  - |\n    objectName: db\n    objectType: secret\n",
        **parameters,
    }
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"provider": "azure", "parameters": params},
    }


def hand_written_pod(namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "manual-", "namespace": namespace},
        "spec": {"serviceAccountName": "api", "containers": [{"name": "app", "image": "a:1"}], **spec},
    }


def csi(name: str) -> dict[str, Any]:
    return {
        "name": "secrets",
        "csi": {
            "driver": "secrets-store.csi.k8s.io",
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": name},
        },
    }


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"clientID": OTHER_CLIENT}, f"reads as client id {OTHER_CLIENT}, not {CLIENT_ID}"),
        ({"useVMManagedIdentity": "true"}, "reads with the node's managed identity (useVMManagedIdentity)"),
        ({"usePodIdentity": "true"}, "uses aad-pod-identity (usePodIdentity), which is not allowed"),
    ],
    ids=["foreign-class", "node-identity", "pod-identity"],
)
def test_hand_written_csi_volume_is_validated(
    control_plane: ControlPlane, namespace: str, parameters: dict[str, str], message: str
) -> None:
    doc = provider_class(namespace, "hand-written", **parameters)
    if "clientID" in parameters:
        apply_docs(control_plane, [doc])
    else:  # refused when written now; as classes written before kvinject was installed, judged at the pod
        refused = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
        assert 'admission webhook "validate-classes-others.kvinject.io" denied the request' in refused.stderr
        assert message in refused.stderr
        with class_webhook_removed(control_plane):
            apply_docs(control_plane, [doc])
    result = create(control_plane, hand_written_pod(namespace, {"volumes": [csi("hand-written")]}), check=False)
    assert result.returncode != 0
    assert 'admission webhook "validate-others.kvinject.io" denied the request' in result.stderr
    assert message in result.stderr


def test_hand_written_csi_volume_with_own_identity_is_admitted(control_plane: ControlPlane, namespace: str) -> None:
    apply_docs(control_plane, [provider_class(namespace, "own", clientID=CLIENT_ID)])
    stored = create(control_plane, hand_written_pod(namespace, {"volumes": [csi("own")]}))
    assert stored["metadata"]["name"].startswith("manual-")


def test_second_deployment_cannot_read_the_first_ones_synced_secret(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    first = create(cp, pod_manifest(namespace, {K + "secret-db": "shape-kv/db", K + "env-DB": "db"}))
    synced = first["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"]
    apply_docs(
        cp,
        [
            service_account(namespace, "intruder", OTHER_CLIENT),
            access_policy(
                f"intruder-{namespace}", [(namespace, "intruder")], {"other-kv": ["*"]}, client_id=OTHER_CLIENT
            ),
        ],
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "intruder", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "intruder"}},
            "template": {
                "metadata": {"labels": {"app": "intruder"}},
                "spec": {
                    "serviceAccountName": "intruder",
                    "containers": [
                        {
                            "name": "app",
                            "image": "a:1",
                            "env": [{"name": "STOLEN", "valueFrom": {"secretKeyRef": {"name": synced, "key": "db"}}}],
                        }
                    ],
                },
            },
        },
    }
    apply_docs(cp, [deployment])

    def failure() -> str:
        for rs in get_json(cp, "replicasets", "-n", namespace, "-l", "app=intruder")["items"]:
            for condition in (rs.get("status") or {}).get("conditions") or []:
                if condition["type"] == "ReplicaFailure":
                    return str(condition["message"])
        return ""

    message = wait_for(failure, "the ReplicaSet to report the denial")
    assert 'admission webhook "validate.kvinject.io" denied the request' in message
    assert f"Secret {synced} holds Key Vault objects synced by SecretProviderClass {synced}" in message
    assert f"identity {OTHER_CLIENT} of ServiceAccount {namespace}/intruder may not read shape-kv/db" in message
    assert get_json(cp, "pods", "-n", namespace, "-l", "app=intruder")["items"] == []
    cp.kubectl("delete", "secretaccesspolicy", f"intruder-{namespace}")


class Swapper(Double):
    """A later mutating webhook that changes the ServiceAccount of labelled pods."""

    def __init__(self, workdir: Path, target: str):
        super().__init__(workdir, "swapper.log")
        self.target = target
        self.url = ""

    def _open(self) -> None:
        self.url = self.serve(self._mutate, "swapper").url

    def _mutate(self, request: Request) -> Response:
        review = json.loads(request.body)
        ops = [{"op": "replace", "path": "/spec/serviceAccountName", "value": self.target}]
        return Response.json(
            200,
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(ops).encode()).decode(),
                },
            },
        )

    def configuration(self, name: str) -> dict[str, Any]:
        selector = {"e2e.kvinject.io/swap": "true"}
        hook, url = "swap.e2e.kvinject.io", f"{self.url}/mutate"
        return mutating_configuration(name, hook, url, self.ca_bundle, selector, reinvocationPolicy="Never")


@pytest.fixture
def swapper(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[None]:
    apply_docs(control_plane, [service_account(namespace, "swapped", CLIENT_ID)])
    # A probe the swapper alone acts on (not opted in to kvinject): its answer shows the configuration is live.
    probe = pod_manifest(namespace, {})
    probe["metadata"]["labels"] = {"e2e.kvinject.io/swap": "true"}

    def swapped(pod: dict[str, Any]) -> bool:
        return bool(pod["spec"].get("serviceAccountName") == "swapped")

    name = f"zz-swapper-{uuid.uuid4().hex[:6]}"  # after "kvinject": it changes our output
    with (
        Swapper(tmp_path, "swapped") as hook,
        mutating_webhook_in_effect(control_plane, hook.configuration(name), probe, swapped),
    ):
        yield


def test_later_webhook_swapping_the_service_account_is_denied(
    control_plane: ControlPlane, namespace: str, swapper: None
) -> None:
    pod = pod_manifest(namespace, {K + "secret-db": "shape-kv/db"})
    pod["metadata"]["labels"]["e2e.kvinject.io/swap"] = "true"
    result = create(control_plane, pod, check=False)
    assert result.returncode != 0
    assert "the pod was changed after kvinject injected it (its ServiceAccount is now swapped)" in result.stderr


def namespace_with_mode(cp: ControlPlane, mode: str, relaxable: bool = True) -> str:
    """A namespace labelled with `mode`; on the session server's allowlist (RELAXABLE_NAMESPACES) or not."""
    name = f"e2e-relaxable-{mode}" if relaxable else f"e2e-{mode}-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", name)
    cp.kubectl("label", "namespace", name, f"kvinject.io/enforcement={mode}")
    apply_docs(cp, [service_account(name, "api", CLIENT_ID)])  # federated nowhere
    return name


def policy_metric(server: KvinjectServer, outcome: str) -> float:
    total = 0.0
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("kvinject_policy_decisions_total{") and f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("mode", ["warn", "audit"])
def test_warn_and_audit_modes_admit_with_findings(
    control_plane: ControlPlane, kvinject: KvinjectServer, mode: str
) -> None:
    ns = namespace_with_mode(control_plane, mode)
    before = policy_metric(kvinject, "would-deny")
    result = control_plane.kubectl(
        "create", "-o", "json", "-f", "-", input=yaml.safe_dump(pod_manifest(ns, {K + "secret-db": "shape-kv/db"}))
    )
    stored = json.loads(result.stdout)
    assert stored["metadata"]["annotations"][K + "status"] == "injected"
    # Other tests may have left policies of this identity behind: the finding is "not granted" either way.
    warned = f"kvinject ({mode} mode) would deny: " in result.stderr and f"{ns}/api" in result.stderr
    assert warned is (mode == "warn"), result.stderr
    assert policy_metric(kvinject, "would-deny") >= before + 1
    control_plane.kubectl("delete", "namespace", ns, "--wait=false")


@pytest.mark.parametrize("mode", ["warn", "audit"])
def test_a_loosening_label_outside_the_allowlist_changes_nothing(control_plane: ControlPlane, mode: str) -> None:
    """An app team that can label its namespace cannot switch enforcement off for itself."""
    ns = namespace_with_mode(control_plane, mode, relaxable=False)
    result = create(control_plane, pod_manifest(ns, {K + "secret-db": "shape-kv/db"}), check=False)
    assert result.returncode != 0
    assert 'admission webhook "mutate.kvinject.io" denied the request' in result.stderr
    assert f"ServiceAccount {ns}/api" in result.stderr
    control_plane.kubectl("delete", "namespace", ns, "--wait=false")


def test_enforce_mode_denial_text(control_plane: ControlPlane, namespace: str) -> None:
    result = create(control_plane, pod_manifest(namespace, {K + "secret-db": "forbidden-kv/db"}), check=False)
    assert f"identity {CLIENT_ID} of ServiceAccount {namespace}/api may not read forbidden-kv/db;" in result.stderr
    assert "(SecretAccessPolicies considered: " in result.stderr and f"grant-{namespace}" in result.stderr


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"identity": {"clientId": "not-a-guid", "tenantId": TENANT_ID}}, "spec.identity.clientId"),
        (
            {"federatedServiceAccounts": [{"namespace": "Bad_NS", "name": "api"}]},
            "spec.federatedServiceAccounts[0].namespace",
        ),
        ({"allow": [{"vault": "x", "objects": ["a"]}]}, "spec.allow[0].vault"),
        ({"allow": [{"vault": "payments-kv", "objects": ["blob:a"]}]}, "spec.allow[0].objects[0]"),
        ({"allow": []}, "spec.allow"),
    ],
    ids=["client-id-guid", "namespace-name", "vault-name", "object-type", "empty-allow"],
)
def test_crd_schema_rejects_invalid_policies(
    control_plane: ControlPlane, kvinject: KvinjectServer, spec: dict[str, Any], field: str
) -> None:
    policy = access_policy(f"invalid-{uuid.uuid4().hex[:6]}", [("payments", "api")], {"payments-kv": ["a"]})
    policy["spec"].update(spec)  # type: ignore[attr-defined]
    result = control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(policy), check=False)
    assert result.returncode != 0 and field in result.stderr, result.stderr


def test_printer_columns(control_plane: ControlPlane, namespace: str) -> None:
    out = control_plane.kubectl("get", "sap", f"grant-{namespace}").stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "CLIENT", "ID", "SERVICE"]
    # kubectl prints the first element of an array column.
    assert row.split()[1:4] == [CLIENT_ID, "api", E2E_VAULTS[0]]
