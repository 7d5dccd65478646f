"""The shipped manifests hold what a platform team audits: least privilege, a locked-down container,
the webhook settings DESIGN.md promises. (The e2e tier proves the API accepts them.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers import ROOT

BASE = ROOT / "manifests" / "base"


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]


def test_cluster_role_is_the_minimum() -> None:
    (role,) = [d for d in load("rbac.yaml") if d["kind"] == "ClusterRole"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("",), ("serviceaccounts",)): ["get", "list", "watch"],
        (("",), ("namespaces",)): ["get", "list", "watch"],
        (("secrets-store.csi.x-k8s.io",), ("secretproviderclasses",)): ["create", "get", "list", "watch"],
        (("kvinject.io",), ("secretaccesspolicies",)): ["get", "list", "watch"],
    }
    # No secrets, no pods, no wildcards, no update/patch/delete anywhere.
    text = (BASE / "rbac.yaml").read_text()
    assert '"*"' not in text and 'secrets"' not in text.replace("secretproviderclasses", "")


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
    # The only writable place is an in-memory /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


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
    (vhook,) = validating["webhooks"]
    assert vhook["sideEffects"] == "None" and vhook["failurePolicy"] == "Fail" and vhook["matchConditions"]


def test_token_permission_only_in_the_live_verification_overlay() -> None:
    assert "serviceaccounts/token" not in (BASE / "rbac.yaml").read_text()
    overlay = (ROOT / "manifests" / "overlays" / "live-verification" / "kustomization.yaml").read_text()
    assert "serviceaccounts/token" in overlay and '"create"' in overlay
    assert not any(
        "serviceaccounts/token" in p.read_text()
        for p in Path(ROOT / "manifests").rglob("*.yaml")
        if "live-verification" not in str(p)
    )
