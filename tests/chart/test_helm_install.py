"""`helm install`, `helm upgrade` and `helm uninstall` of the chart on the e2e control plane (real kube-apiserver,
etcd and kube-controller-manager; no node, so kvinject's pods stay Pending and helm runs without --wait).

The module has its own control plane: the session's (tests/conftest.py) has kvinject installed from manifests/ under
the same cluster-wide names. What the API holds is compared with what `helm template` renders for the same values.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.rendered import Objects, webhooks
from tests.chart.test_render import CASES as RENDER_CASES
from tests.harness import Binaries, ControlPlane, wait_for
from tests.harness.helm import Helm, by_key

pytestmark = pytest.mark.e2e

NAMESPACE = "kvinject"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
INSTALL = {"tenantId": TENANT}
UPGRADE = {
    "tenantId": TENANT,
    "rollout": "enforce",
    "enforcement": "warn",
    "replicaCount": 3,
    "liveVerification": {"enabled": True},
}
PLURAL = {
    "ClusterRole": "clusterrole",
    "ClusterRoleBinding": "clusterrolebinding",
    "CustomResourceDefinition": "customresourcedefinition",
    "Deployment": "deployment.apps",
    "MutatingWebhookConfiguration": "mutatingwebhookconfiguration",
    "PodDisruptionBudget": "poddisruptionbudget",
    "Role": "role",
    "RoleBinding": "rolebinding",
    "Service": "service",
    "ServiceAccount": "serviceaccount",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicy",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybinding",
    "ValidatingWebhookConfiguration": "validatingwebhookconfiguration",
}


@pytest.fixture(scope="module")
def cluster(e2e_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    binaries = e2e_binaries
    with ControlPlane(tmp_path_factory.mktemp("helm-controlplane"), binaries=binaries) as cp:
        cp.apply_crd(binaries.spc_crd)  # what kvinject reads and creates; the Secrets Store CSI driver's own CRD
        # The namespace first (helm keeps its release there), restricted as the base's Namespace is.
        cp.kubectl("create", "namespace", NAMESPACE)
        cp.kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
        yield cp
        cp.check_alive()


@pytest.fixture(scope="module")
def helm_on_cluster(helm: Helm, cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm.create(tmp_path_factory.mktemp("helm-release"), kubeconfig=cluster.kubeconfig)


def live(cp: ControlPlane, obj: dict[str, Any]) -> dict[str, Any] | None:
    meta = obj["metadata"]
    ns = ["--namespace", meta["namespace"]] if meta.get("namespace") else []
    result = cp.kubectl("get", PLURAL[obj["kind"]], meta["name"], *ns, "-o", "json", "--ignore-not-found", check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def contained(rendered: Any, stored: Any, path: str = "") -> list[str]:
    """Where ``rendered`` is not part of ``stored`` (the API adds defaults; it may not change what was sent).
    Strings are compared with their whitespace runs collapsed: YAML parsers differ on folded scalars."""
    if isinstance(rendered, dict):
        if not isinstance(stored, dict):
            return [f"{path}: {stored!r} is not an object"]
        return [p for k, v in rendered.items() for p in contained(v, stored.get(k, _MISSING), f"{path}.{k}")]
    if isinstance(rendered, list):
        if not isinstance(stored, list) or len(stored) != len(rendered):
            return [f"{path}: {stored!r} != {rendered!r}"]
        return [
            p for i, (a, b) in enumerate(zip(rendered, stored, strict=True)) for p in contained(a, b, f"{path}[{i}]")
        ]
    if isinstance(rendered, str) and isinstance(stored, str):
        return [] if rendered.split() == stored.split() else [f"{path}: {stored!r} != {rendered!r}"]
    return [] if rendered == stored else [f"{path}: {stored!r} != {rendered!r}"]


_MISSING = object()


def assert_release_is_live(cp: ControlPlane, rendered: Objects) -> None:
    """Every rendered object is in the API with the rendered content."""
    problems = []
    for obj in rendered:
        stored = wait_for(lambda o=obj: live(cp, o), f"{obj['kind']} {obj['metadata']['name']} in the API")
        problems += [f"{obj['kind']} {obj['metadata']['name']}{p}" for p in contained(obj, stored)]
    assert not problems, "\n".join(problems)


def crd_established(cp: ControlPlane) -> bool:
    crd = json.loads(cp.kubectl("get", "crd", "secretaccesspolicies.kvinject.io", "-o", "json").stdout)
    return any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"].get("conditions", []))


def kvinject_objects(cp: ControlPlane) -> list[str]:
    """Whatever of kvinject is left in the API, the CRD apart."""
    kinds = ",".join(
        [
            "clusterrole",
            "clusterrolebinding",
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
            "validatingadmissionpolicy",
            "validatingadmissionpolicybinding",
        ]
    )
    cluster_wide = cp.kubectl("get", kinds, "-o", "name").stdout.split()
    namespaced = cp.kubectl(
        "get", "deployment,replicaset,service,serviceaccount,role,rolebinding,poddisruptionbudget,secret",
        "-n", NAMESPACE, "-o", "name",
    ).stdout.split()  # fmt: skip
    return [n for n in cluster_wide + namespaced if "kvinject" in n]


def ca_bundle(cp: ControlPlane) -> str:
    return base64.b64encode(Path(cp.ca_file).read_bytes()).decode()


def test_install_upgrade_uninstall(cluster: ControlPlane, helm_on_cluster: Helm, helm: Helm) -> None:
    cp = cluster
    # -- install ------------------------------------------------------------------------------------
    helm_on_cluster.release("install", INSTALL, NAMESPACE)
    installed = helm.template(INSTALL, namespace=NAMESPACE)
    assert {o["kind"] for o in installed} >= {
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    assert_release_is_live(cp, installed)
    wait_for(lambda: crd_established(cp), "the SecretAccessPolicy CRD Established")
    # The pods pass the namespace's restricted Pod Security level (they are created, and stay Pending: no node).
    wait_for(
        lambda: len(cp.kubectl("get", "pods", "-n", NAMESPACE, "-o", "name").stdout.split()) == 2,
        "kvinject's 2 pods created by its ReplicaSet",
    )
    status = json.loads(helm_on_cluster.run("status", "kvinject", "-n", NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed" and status["version"] == 1
    notes = helm_on_cluster.run("get", "notes", "kvinject", "-n", NAMESPACE).stdout
    assert "Rollout: audit-first" in notes and "Certificates: self" in notes

    # kvinject (self certificate mode) writes the caBundle into its webhooks: an upgrade must keep it.
    for kind, name in (("mutatingwebhookconfiguration", "kvinject"), ("validatingwebhookconfiguration", "kvinject")):
        config = json.loads(cp.kubectl("get", kind, name, "-o", "json").stdout)
        patch = [
            {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": ca_bundle(cp)}
            for i in range(len(config["webhooks"]))
        ]
        cp.kubectl("patch", kind, name, "--type=json", "-p", json.dumps(patch))

    # -- upgrade: rollout enforce, enforcement warn, 3 replicas, live verification ----------------------
    helm_on_cluster.release("upgrade", UPGRADE, NAMESPACE)
    upgraded = helm.template(UPGRADE, namespace=NAMESPACE)
    assert_release_is_live(cp, upgraded)
    stored = by_key(
        [
            o
            for o in (live(cp, obj) for obj in upgraded)
            if o is not None  # assert_release_is_live waited for every one
        ]
    )
    validating = stored[("ValidatingWebhookConfiguration", "", "kvinject")]
    assert {h["name"]: h["failurePolicy"] for h in validating["webhooks"]} == {
        "validate.kvinject.io": "Fail",
        "validate-others.kvinject.io": "Fail",
    }
    assert all(h["clientConfig"].get("caBundle") == ca_bundle(cp) for h in validating["webhooks"])
    deployment = stored[("Deployment", NAMESPACE, "kvinject")]
    assert deployment["spec"]["replicas"] == 3
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["KVINJECT_NOT_OPTED_IN_ENFORCEMENT"] == "enforce" and env["KVINJECT_ENFORCEMENT"] == "warn"
    assert env["KVINJECT_LIVE_VERIFY"] == "true"
    notes = helm_on_cluster.run("get", "notes", "kvinject", "-n", NAMESPACE).stdout
    assert "Rollout: enforce" in notes and "enforcement=warn" in notes and "Live verification: on" in notes
    role = stored[("ClusterRole", "", "kvinject")]
    assert {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]} in role["rules"]
    assert ("ValidatingAdmissionPolicy", "", "kvinject-token-requests") in stored
    assert set(webhooks(upgraded)) == {
        h["name"] for c in stored.values() if c["kind"].endswith("WebhookConfiguration") for h in c["webhooks"]
    }

    # -- upgrade to a user-provided certificate: files mode, the user's Secret and caBundle; the live
    # verification objects of the previous revision are removed -------------------------------------------
    user_ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nTUlJ\n-----END CERTIFICATE-----\n").decode()
    secret_mode = {**INSTALL, "certificates": {"mode": "secret", "secretName": "mine", "caBundle": user_ca}}
    helm_on_cluster.release("upgrade", secret_mode, NAMESPACE)
    assert_release_is_live(cp, helm.template(secret_mode, namespace=NAMESPACE))
    deployment = live(cp, {"kind": "Deployment", "metadata": {"name": "kvinject", "namespace": NAMESPACE}})
    assert deployment is not None
    assert {"name": "certs", "secret": {"secretName": "mine", "defaultMode": 420}} in deployment["spec"]["template"][
        "spec"
    ]["volumes"]
    assert live(cp, {"kind": "ValidatingAdmissionPolicy", "metadata": {"name": "kvinject-token-requests"}}) is None
    history = json.loads(helm_on_cluster.run("history", "kvinject", "-n", NAMESPACE, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2, 3]

    # -- uninstall: nothing of kvinject is left but the CRD (crds.keep: the SecretAccessPolicies stay) ----
    cp.kubectl("apply", "-f", "-", input=json.dumps(POLICY))
    helm_on_cluster.run("uninstall", "kvinject", "-n", NAMESPACE)
    wait_for(lambda: not kvinject_objects(cp), "every kvinject object gone", context=lambda: str(kvinject_objects(cp)))
    assert crd_established(cp)
    assert cp.kubectl("get", "secretaccesspolicy", "grant", "-o", "name").stdout.strip() == (
        "secretaccesspolicy.kvinject.io/grant"
    )

    # -- reinstall over the kept CRD, then uninstall with crds.keep=false: the CRD goes too --------------
    no_keep = {**INSTALL, "crds": {"keep": False}}
    helm_on_cluster.release("install", no_keep, NAMESPACE)
    assert_release_is_live(cp, helm.template(no_keep, namespace=NAMESPACE))
    helm_on_cluster.run("uninstall", "kvinject", "-n", NAMESPACE)
    wait_for(lambda: not kvinject_objects(cp), "every kvinject object gone", context=lambda: str(kvinject_objects(cp)))
    wait_for(
        lambda: not cp.kubectl("get", "crd", "-o", "name").stdout.count("secretaccesspolicies.kvinject.io"),
        "the SecretAccessPolicy CRD deleted",
    )


POLICY = {
    "apiVersion": "kvinject.io/v1alpha1",
    "kind": "SecretAccessPolicy",
    "metadata": {"name": "grant"},
    "spec": {
        "identity": {"clientId": "11111111-2222-3333-4444-555555555555", "tenantId": TENANT},
        "federatedServiceAccounts": [{"namespace": "team", "name": "api"}],
        "allow": [{"vault": "kv-team", "objects": ["db-password"]}],
    },
}


NOT_SERVED_HERE = {"ServiceMonitor", "Certificate", "Issuer"}  # CRDs of the Prometheus Operator and cert-manager


@pytest.mark.parametrize(("values", "namespace"), [c[1:3] for c in RENDER_CASES], ids=[c[0] for c in RENDER_CASES])
def test_the_api_server_accepts_every_rendering(
    cluster: ControlPlane, helm: Helm, values: dict[str, Any], namespace: str
) -> None:
    """Each values table of test_render.py renders objects the real API server validates (server-side dry run:
    schemas, CEL expressions of the webhooks' matchConditions and the admission policies)."""
    if namespace != NAMESPACE:
        cluster.kubectl("create", "namespace", namespace, check=False)
    rendered = [o for o in helm.template(values, namespace=namespace) if o["kind"] not in NOT_SERVED_HERE]
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered}),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(rendered), result.stdout
