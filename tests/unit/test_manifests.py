"""The shipped manifests hold what a platform team audits: least privilege, a locked-down container,
the webhook settings DESIGN.md promises. (The e2e tier proves the API accepts them.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.harness import ROOT
from webhook.providers.azure import names as azure_names
from webhook.providers.azure import verify

BASE = ROOT / "manifests" / "base"


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]


def test_cluster_role_is_the_minimum() -> None:
    def rules(kind: str) -> dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], list[str]]:
        (role,) = [d for d in load("rbac.yaml") if d["kind"] == kind]
        return {
            (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r.get("resourceNames", ()))): sorted(r["verbs"])
            for r in role["rules"]
        }

    admission = ("admissionregistration.k8s.io",)
    assert rules("ClusterRole") == {
        (("",), ("serviceaccounts",), ()): ["get", "list", "watch"],
        (("",), ("namespaces",), ()): ["get", "list", "watch"],
        (("secrets-store.csi.x-k8s.io",), ("secretproviderclasses",), ()): ["create", "get", "list", "watch"],
        (("kvinject.io",), ("secretaccesspolicies",), ()): ["get", "list", "watch"],
        # The opted-in pods of a namespace whose SecretProviderClass is written (a label-selected list).
        (("",), ("pods",), ()): ["list"],
        # Events about what it denied or would deny; patch only to count repeats of its own.
        (("",), ("events",), ()): ["create", "patch"],
        # Certificate mode self: the caBundle of its own webhook configurations, by name only.
        (admission, ("mutatingwebhookconfigurations",), ("kvinject",)): ["get", "patch", "update"],
        (admission, ("validatingwebhookconfigurations",), ("kvinject", "kvinject-provider-classes")): [
            "get",
            "patch",
            "update",
        ],
        # restart-on-change: the driver's per-pod version records, whose pods and workloads they are, and the
        # patch that rolls a workload (get+patch on the three kinds it rolls; its pods through the list above).
        (("secrets-store.csi.x-k8s.io",), ("secretproviderclasspodstatuses",), ()): ["list", "watch"],
        (("apps",), ("replicasets",), ()): ["get"],
        (("apps",), ("deployments", "statefulsets", "daemonsets"), ()): ["get", "patch"],
    }
    # Secrets: only in kvinject's namespace (a Role), only its own by name, except create (RBAC cannot name it).
    assert rules("Role") == {
        (("",), ("secrets",), ("kvinject-tls",)): ["get", "list", "update", "watch"],
        (("",), ("secrets",), ()): ["create"],
    }
    # Pods are only listed (no get, no watch: never cached), no wildcards, no delete anywhere.
    verbs = [v for kind in ("ClusterRole", "Role") for vs in rules(kind).values() for v in vs]
    resources = [r for kind in ("ClusterRole", "Role") for key in rules(kind) for r in key[1]]
    assert "*" not in verbs + resources and "delete" not in verbs
    assert [vs for kind in ("ClusterRole", "Role") for key, vs in rules(kind).items() if "pods" in key[1]] == [["list"]]


def test_every_rule_is_justified_by_a_comment() -> None:
    lines = (BASE / "rbac.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            assert lines[i - 1].strip().startswith("#"), f"rule at line {i + 1} has no comment above it"


def test_container_is_non_root_read_only_and_without_capabilities() -> None:
    (deployment,) = load("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert deployment["spec"]["replicas"] >= 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["lifecycle"]["preStop"]
    # The only writable places are in memory: /tmp, and /certs where certificate mode self writes the leaf.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "certs", "mountPath": "/certs"} in container["volumeMounts"]
    assert all(v["emptyDir"]["medium"] == "Memory" for v in pod["volumes"])


def test_image_runs_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user and all(u.split(":")[0] not in ("0", "root") for u in user)


def test_webhook_configurations() -> None:
    (mutating,) = load("mutatingwebhook.yaml")
    (hook,) = mutating["webhooks"]
    assert hook["objectSelector"] == {"matchLabels": {"kvinject.io/inject": "true"}}
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "kvinject"]
    assert [(r["operations"], r["resources"]) for r in hook["rules"]] == [
        (["CREATE"], ["pods"]),
        (["UPDATE"], ["pods/ephemeralcontainers"]),
    ]
    assert (hook["sideEffects"], hook["failurePolicy"], hook["reinvocationPolicy"]) == (
        "NoneOnDryRun",
        "Fail",
        "IfNeeded",
    )
    assert hook["timeoutSeconds"] <= 10 and hook["admissionReviewVersions"] == ["v1"]
    (validating,) = load("validatingwebhook.yaml")
    ours, others = validating["webhooks"]
    assert (ours["name"], ours["failurePolicy"]) == ("validate.kvinject.io", "Fail")
    # Audit-first: what is not kvinject's fails open until the platform enforces (docs/rollout.md).
    assert (others["name"], others["failurePolicy"]) == ("validate-others.kvinject.io", "Ignore")
    # Pod UPDATEs go to kvinject's entry only: its record on its own pods stays as admitted.
    update = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods"]}
    assert [r for r in ours["rules"] if r != {**update, "scope": "Namespaced"}] == others["rules"]
    for hook in (ours, others):
        assert hook["sideEffects"] == "None"
    # The two entries split one set: the second takes exactly what the first does not.
    kvinject_pod, record = ours["matchConditions"]
    assert record["name"] == "changes-kvinjects-record"  # of pod UPDATEs, only those changing kvinject's record
    not_kvinject, relevant = others["matchConditions"]
    assert " ".join(not_kvinject["expression"].split()) == f"!( {' '.join(kvinject_pod['expression'].split())} )"
    assert "k.startsWith('kvinject.io/')" in relevant["expression"]  # annotations without the label: warned
    (classes,) = load("classwebhook.yaml")
    ours, others = classes["webhooks"]
    assert [ours["name"], ours["failurePolicy"], others["name"], others["failurePolicy"]] == [
        "validate-classes.kvinject.io",
        "Fail",
        "validate-classes-others.kvinject.io",
        "Ignore",
    ]
    assert ours["matchConditions"][0] == others["matchConditions"][0]  # classes of the stores kvinject serves
    assert others["matchConditions"][1]["expression"] == f"!({ours['matchConditions'][1]['expression']})"


def test_deployment_names_the_rollout_setting() -> None:
    (deployment,) = load("deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KVINJECT_NOT_OPTED_IN_ENFORCEMENT"] == "audit"


def test_token_permission_only_in_the_live_verification_overlay() -> None:
    assert "serviceaccounts/token" not in (BASE / "rbac.yaml").read_text()
    overlay = (ROOT / "manifests" / "components" / "live-verification" / "kustomization.yaml").read_text()
    assert "serviceaccounts/token" in overlay and '"create"' in overlay
    assert not any(
        "serviceaccounts/token" in p.read_text()
        for p in Path(ROOT / "manifests").rglob("*.yaml")
        if "live-verification" not in str(p)
    )


OVERLAY = ROOT / "manifests" / "components" / "live-verification"
KVINJECT_SA = "system:serviceaccount:kvinject:kvinject"


def kustomization(directory: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return doc


def policy_and_binding(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}
    assert set(docs) == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    policy, binding = docs["ValidatingAdmissionPolicy"], docs["ValidatingAdmissionPolicyBinding"]
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    return policy, binding


def test_reserved_provider_classes_policy_is_in_the_base() -> None:
    base = kustomization(BASE)
    assert "reserved-provider-classes.yaml" in base["resources"]
    # kustomize would give the cluster-scoped policy the base's namespace (kubernetes-sigs/kustomize#6051).
    (transformer,) = [yaml.safe_load(t) for t in base["transformers"]]
    assert transformer["target"]["kind"] == "ValidatingAdmissionPolicy|ValidatingAdmissionPolicyBinding"
    assert yaml.safe_load(transformer["patch"]) == [{"op": "remove", "path": "/metadata/namespace"}]
    policy, _ = policy_and_binding(BASE / "reserved-provider-classes.yaml")
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["secrets-store.csi.x-k8s.io"] and rule["resources"] == ["secretproviderclasses"]
    assert rule["operations"] == ["CREATE", "UPDATE", "DELETE"]
    assert "matchConditions" not in policy["spec"]  # every SecretProviderClass request is judged
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    for name, obj in (("newReserved", "object"), ("oldReserved", "oldObject")):  # the old object counts too
        assert f"{obj}.metadata.name.startsWith('kvinject-')" in variables[name]
        assert f"{obj}.metadata.labels['app.kubernetes.io/managed-by'] == 'kvinject'" in variables[name]
    (validation,) = policy["spec"]["validations"]
    expression = " ".join(validation["expression"].split())
    assert f"request.userInfo.username == '{KVINJECT_SA}'" in expression
    # Only deletions are open to the two controllers that clean up after owners and namespaces.
    assert "(request.operation == 'DELETE' && request.userInfo.username in [" in expression
    assert expression.count("system:serviceaccount:") == 3
    assert "generic-garbage-collector" in expression and "namespace-controller" in expression


def test_token_request_policy_is_in_the_live_verification_overlay_only() -> None:
    assert kustomization(OVERLAY)["resources"] == ["token-request-policy.yaml"]
    assert not any("kvinject-token-requests" in p.read_text() for p in BASE.glob("*.yaml"))
    policy, _ = policy_and_binding(OVERLAY / "token-request-policy.yaml")
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == ([""], ["serviceaccounts/token"], ["CREATE"])
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == f"request.userInfo.username == '{KVINJECT_SA}'"
    expressions = " ".join(" ".join(v["expression"].split()) for v in policy["spec"]["validations"])
    assert (
        "(object.spec.audiences == ['api://AzureADTokenExchange'] || object.spec.audiences == ['vault'])" in expressions
    )
    assert "object.spec.expirationSeconds <= 600" in expressions
    assert "object.spec.boundObjectRef == null" in expressions
    assert "['kube-system', 'kube-public', 'kube-node-lease', 'kvinject']" in expressions
    assert all(v.get("message") for v in policy["spec"]["validations"])


def test_token_policy_matches_what_live_verification_requests() -> None:
    assert azure_names.TOKEN_AUDIENCE == "api://AzureADTokenExchange" and verify.TOKEN_SECONDS <= 600
