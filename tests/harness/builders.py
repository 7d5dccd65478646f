"""Builders of real-shaped objects for tests: controller-made pods, AdmissionReviews, clusters."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import jsonpatch

from webhook.cluster import FileCluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
VAULT = "kv-e2e"  # the vault of the `key_vault` fixture
# Every vault the e2e `namespace` fixture's SecretAccessPolicy grants.
E2E_VAULTS = [VAULT, "kv-locked", "shape-kv", "deny-kv", "x-kv", "late-kv", "down-kv", "dry-kv", "peer-kv"]


def controller_pod(
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    service_account: str | None = "api",
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A pod as a ReplicaSet controller sends it: generateName, ownerReferences, no name or namespace."""
    pod_spec: dict[str, Any] = {
        "containers": containers
        if containers is not None
        else [
            {
                "name": "app",
                "image": "registry.example.com/api:1.0",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            },
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        **spec,
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
        pod_spec["serviceAccount"] = service_account
    return {
        "metadata": {
            "generateName": "api-7d9f8c6b5-",
            "creationTimestamp": None,
            "labels": {"app": "api", "pod-template-hash": "7d9f8c6b5", "kvinject.io/inject": "true"}
            if labels is None
            else labels,
            "annotations": annotations
            if annotations is not None
            else {"kvinject.io/secret-db-password": "db-password"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "api-7d9f8c6b5",
                    "uid": "0c5b5a53-5f59-4d8a-9a7e-2f0f1f4b6a11",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec,
        "status": {},
    }


def admission_review(
    pod: dict[str, Any] | None,
    namespace: str = "payments",
    operation: str = "CREATE",
    kind: str = "Pod",
    dry_run: bool = False,
    uid: str | None = None,
) -> dict[str, Any]:
    group = "" if kind == "Pod" else "apps"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "requestResource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def example_cluster(*extra: Path) -> FileCluster:
    """examples/cluster.yaml, plus further files of objects."""
    return FileCluster.from_path(EXAMPLES / "cluster.yaml", *extra)


# The golden cluster's namespaces whose enforcement label loosens the server's setting (warn, audit).
RELAXABLE = frozenset({"sandbox", "observed"})


def golden_cluster() -> FileCluster:
    return example_cluster(ROOT / "tests" / "golden" / "cluster-extra.yaml")


def apply(pod: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    return result
