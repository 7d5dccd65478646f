"""kvinject on the real kube-apiserver: stored pods, generated SecretProviderClasses, denials, selectors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.harness import (
    CLIENT_ID,
    EXAMPLES,
    TENANT_ID,
    ControlPlane,
    K,
    KvinjectServer,
    create,
    get_json,
    pod_manifest,
    provider_classes,
    wait_for,
)
from tests.harness.kube import answered
from webhook.providers.azure import provider_view


def test_deployment_from_examples_is_injected(control_plane: ControlPlane, kvinject: KvinjectServer) -> None:
    cp = control_plane
    cp.kubectl("apply", "-f", str(EXAMPLES / "cluster.yaml"))
    cp.kubectl("apply", "-f", str(EXAMPLES / "deployment-csi.yaml"))
    pods = wait_for(lambda: [p for p in get_json(cp, "pods", "-n", "payments", "-l", "app=api")["items"]], "api pods")
    wait_for(lambda: len(get_json(cp, "pods", "-n", "payments", "-l", "app=api")["items"]) == 2, "2 replicas")
    pods = get_json(cp, "pods", "-n", "payments", "-l", "app=api")["items"]
    classes = {c["metadata"]["name"]: c for c in provider_classes(cp, "payments")}
    for pod in pods:
        assert pod["metadata"]["generateName"].startswith("api-")
        assert pod["metadata"]["annotations"][K + "status"] == "injected"
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "kvinject-secrets"]
        assert volume["csi"]["driver"] == "secrets-store.csi.k8s.io" and volume["csi"]["readOnly"] is True
        name = volume["csi"]["volumeAttributes"]["secretProviderClass"]
        assert name in classes
        for container in pod["spec"]["containers"]:
            assert {"name": "kvinject-secrets", "mountPath": "/mnt/secrets", "readOnly": True} in container[
                "volumeMounts"
            ]
            assert {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": name, "key": "db-password"}},
            } in container["env"]
    generated = classes[name]
    sa = get_json(cp, "serviceaccount", "api", "-n", "payments")
    params = generated["spec"]["parameters"]
    assert params["clientID"] == CLIENT_ID and params["tenantID"] == TENANT_ID
    assert params["keyvaultName"] == "payments-kv"
    assert sorted(o.object_alias for o in provider_view.read(params).objects) == ["db-password", "tls.pem"]
    assert generated["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kvinject"
    assert generated["metadata"]["ownerReferences"][0]["uid"] == sa["metadata"]["uid"]
    assert generated["spec"]["secretObjects"][0]["secretName"] == name

    cp.kubectl("delete", "deployment", "api", "-n", "payments")
    cp.kubectl("delete", "serviceaccount", "api", "-n", "payments")
    wait_for(
        lambda: name not in {c["metadata"]["name"] for c in provider_classes(cp, "payments")},
        "garbage collection of the generated SecretProviderClass",
        timeout=60,
    )


def test_server_side_dry_run_shows_mutation_and_creates_nothing(control_plane: ControlPlane, namespace: str) -> None:
    pod = pod_manifest(namespace, {K + "secret-dry": "dry-kv/only-for-dry-run"})
    out = control_plane.kubectl("create", "--dry-run=server", "-o", "yaml", "-f", "-", input=yaml.safe_dump(pod))
    shown = yaml.safe_load(out.stdout)
    assert shown["metadata"]["annotations"][K + "status"] == "injected"
    assert any(v["name"] == "kvinject-secrets" for v in shown["spec"]["volumes"])
    assert provider_classes(control_plane, namespace) == []


SHAPES = {
    "existing-volumes-and-init-containers": dict(
        volumes=[{"name": "cache", "emptyDir": {}}],
        initContainers=[{"name": "migrate", "image": "m:1", "volumeMounts": [{"name": "cache", "mountPath": "/c"}]}],
    ),
    "envfrom-and-env": dict(
        containers=[
            {
                "name": "app",
                "image": "a:1",
                "env": [{"name": "A", "value": "1"}],
                "envFrom": [{"configMapRef": {"name": "cfg", "optional": True}}],
            }
        ]
    ),
    "multiple-containers": dict(containers=[{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}]),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_apiserver_accepts_every_patch_shape(control_plane: ControlPlane, namespace: str, shape: str) -> None:
    pod = pod_manifest(namespace, {K + "secret-db": "shape-kv/db", K + "env-DB": "db"}, **copy.deepcopy(SHAPES[shape]))
    stored = create(control_plane, pod)
    targets = stored["spec"]["containers"]
    for c in targets:
        assert any(m["name"] == "kvinject-secrets" for m in c["volumeMounts"])
        assert next(e for e in c["env"] if e["name"] == "DB")["valueFrom"]["secretKeyRef"]["key"] == "db"
    for c in stored["spec"].get("initContainers", []):
        assert all(m["name"] != "kvinject-secrets" for m in c.get("volumeMounts", []))


def test_containers_selection(control_plane: ControlPlane, namespace: str) -> None:
    pod = pod_manifest(
        namespace,
        {K + "secret-db": "shape-kv/db", K + "containers": "side,migrate"},
        containers=[{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}],
        initContainers=[{"name": "migrate", "image": "m:1"}],
    )
    stored = create(control_plane, pod)
    mounted = {
        c["name"]
        for c in stored["spec"]["containers"] + stored["spec"]["initContainers"]
        if any(m["name"] == "kvinject-secrets" for m in c.get("volumeMounts", []))
    }
    assert mounted == {"side", "migrate"}


@pytest.mark.parametrize(
    ("annotations", "spec", "message"),
    [
        (
            {K + "secret-db": "deny-kv/db"},
            {"serviceAccountName": "default"},
            "ServiceAccount {ns}/default has no azure.workload.identity/client-id annotation",
        ),
        (
            {K + "secret-../x": "deny-kv/db", K + "mode": "sidecar"},
            {},
            "2 annotation problems: (1) kvinject.io/mode: 'sidecar' must be csi or init",
        ),
        (
            {K + "secret-db": "deny-kv/db", K + "env-DB": "db"},
            {"containers": [{"name": "app", "image": "a:1", "env": [{"name": "DB", "value": "x"}]}]},
            "container 'app' already defines env 'DB'",
        ),
    ],
    ids=["missing-client-id", "bad-annotation", "collision"],
)
def test_denials_reach_kubectl_with_our_message(
    control_plane: ControlPlane, namespace: str, annotations: dict[str, str], spec: dict[str, Any], message: str
) -> None:
    pod = pod_manifest(namespace, annotations, **spec)
    result = create(control_plane, pod, check=False)
    assert result.returncode != 0
    assert 'admission webhook "mutate.kvinject.io" denied the request: kvinject denied pod probe-*' in result.stderr
    assert message.format(ns=namespace) in result.stderr


def admissions(server: KvinjectServer) -> float:
    total = 0.0
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("kvinject_admissions_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_selectors_keep_other_pods_away(control_plane: ControlPlane, namespace: str, kvinject: KvinjectServer) -> None:
    before = admissions(kvinject)
    mutated, validated = answered(kvinject, "mutate"), answered(kvinject, "validate")
    unlabelled = pod_manifest(namespace, {K + "secret-db": "x-kv/db"})
    unlabelled["metadata"]["labels"] = {}
    stored = create(control_plane, unlabelled)
    assert K + "status" not in stored["metadata"]["annotations"]
    # Never mutated; validated once, only to warn that its kvinject annotations do nothing (docs/rollout.md).
    assert (answered(kvinject, "mutate"), answered(kvinject, "validate")) == (mutated, validated + 1)
    system = pod_manifest("kube-system", {K + "secret-db": "x-kv/db"}, serviceAccountName="default")
    stored = create(control_plane, system)
    assert K + "status" not in stored["metadata"]["annotations"]
    control_plane.kubectl("delete", "pod", stored["metadata"]["name"], "-n", "kube-system", "--wait=false")
    assert admissions(kvinject) == before + 1


def test_cache_sees_new_and_changed_service_accounts(control_plane: ControlPlane, namespace: str) -> None:
    """A ServiceAccount annotated after a denial is honoured on the next pod: the cache follows the watch."""
    pod = pod_manifest(namespace, {K + "secret-db": "late-kv/db"}, serviceAccountName="late")
    control_plane.kubectl("create", "serviceaccount", "late", "-n", namespace)
    result = create(control_plane, pod, check=False)
    assert f"ServiceAccount {namespace}/late has no azure.workload.identity/client-id" in result.stderr
    control_plane.kubectl(
        "annotate", "serviceaccount", "late", "-n", namespace, f"azure.workload.identity/client-id={CLIENT_ID}"
    )
    wait_for(lambda: create(control_plane, pod, check=False).returncode == 0, "annotation seen", timeout=15)


def test_shipped_manifests_were_accepted_by_the_api(control_plane: ControlPlane, kvinject: KvinjectServer) -> None:
    for kind, name in [
        ("deployment", "kvinject"),
        ("service", "kvinject"),
        ("poddisruptionbudget", "kvinject"),
        ("serviceaccount", "kvinject"),
    ]:
        assert get_json(control_plane, kind, name, "-n", "kvinject")["metadata"]["name"] == name
    stored = get_json(control_plane, "mutatingwebhookconfiguration", "kvinject")["webhooks"][0]
    assert stored["clientConfig"]["url"] == kvinject.url + "/mutate"
    assert stored["objectSelector"] == {"matchLabels": {"kvinject.io/inject": "true"}}
    assert (stored["sideEffects"], stored["failurePolicy"], stored["reinvocationPolicy"]) == (
        "NoneOnDryRun",
        "Fail",
        "IfNeeded",
    )


def test_webhook_down_refuses_opted_in_pods_only(
    control_plane: ControlPlane, namespace: str, kvinject: KvinjectServer
) -> None:
    kvinject.stop()
    try:
        result = create(control_plane, pod_manifest(namespace, {K + "secret-db": "down-kv/db"}), check=False)
        assert result.returncode != 0
        assert 'failed calling webhook "mutate.kvinject.io"' in result.stderr
        other = pod_manifest(namespace, {})
        other["metadata"]["labels"] = {"app": "unrelated"}
        assert create(control_plane, other)["metadata"]["name"].startswith("probe-")
    finally:
        kvinject.start()
    assert (
        create(control_plane, pod_manifest(namespace, {K + "secret-db": "down-kv/db"}))["metadata"]["annotations"][
            K + "status"
        ]
        == "injected"
    )
