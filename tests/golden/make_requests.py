"""Writes the golden AdmissionReview requests (run once; the JSON files are the fixtures).

python -m tests.golden.make_requests
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from tests.harness import RELAXABLE, admission_review, apply, controller_pod, example_cluster
from webhook import review
from webhook.mutation import Mutator
from webhook.names import INJECTED_CONTAINERS, PREFIX
from webhook.settings import Settings

K = PREFIX
CASES = Path(__file__).parent / "cases"
CSI = {
    K + "secret-db-password": "db-password",
    K + "secret-tls.pem": "cert:api-tls",
    K + "env-DB_PASSWORD": "db-password",
}


def injected_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """kvinject's own output for `pod`, produced by the real code path."""
    doc = admission_review(pod)
    mutator = Mutator(Settings(relaxable_namespaces=RELAXABLE), example_cluster())
    outcome = asyncio.run(mutator.mutate(review.decode_review(orjson.dumps(doc))))
    return apply(pod, outcome.ops)


MESH = {"name": "mesh", "image": "mesh:1"}


def with_sidecar(pod: dict[str, Any], copy_from_app: bool = False, record: str | None = None) -> dict[str, Any]:
    """`pod` as a later mutating webhook leaves it: a sidecar appended (with a copy of the app container's mounts
    and env), and kvinject's record rewritten when `record` is given."""
    pod = orjson.loads(orjson.dumps(pod))
    sidecar = dict(MESH)
    if copy_from_app:
        app = pod["spec"]["containers"][0]
        sidecar.update(volumeMounts=app["volumeMounts"], env=app["env"])
    pod["spec"]["containers"].append(sidecar)
    if record is not None:
        pod["metadata"]["annotations"][INJECTED_CONTAINERS] = record
    return pod


def without_record(pod: dict[str, Any]) -> dict[str, Any]:
    """`pod` as a kvinject that kept no record injected it (before an upgrade)."""
    pod = orjson.loads(orjson.dumps(pod))
    del pod["metadata"]["annotations"][INJECTED_CONTAINERS]
    return pod


def requests() -> dict[str, dict[str, Any]]:
    existing = controller_pod(
        annotations=dict(CSI),
        containers=[
            {
                "name": "app",
                "image": "api:1",
                "envFrom": [{"configMapRef": {"name": "api-config"}}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}],
                "volumeMounts": [
                    {
                        "name": "kube-api-access-x1",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        "readOnly": True,
                    }
                ],
            }
        ],
        initContainers=[{"name": "migrate", "image": "api:1", "command": ["migrate"]}],
        volumes=[
            {"name": "cache", "emptyDir": {}},
            {
                "name": "kube-api-access-x1",
                "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]},
            },
        ],
    )
    injected = injected_pod(controller_pod(annotations=dict(CSI)))
    two = controller_pod(
        annotations={**CSI, K + "containers": "worker"},
        containers=[{"name": "app", "image": "a"}, {"name": "worker", "image": "w"}],
    )
    named_mesh = controller_pod(annotations={**CSI, K + "containers": "app,mesh"})
    user_record = controller_pod(annotations={**CSI, INJECTED_CONTAINERS: "app,mesh"})
    return {
        "already-injected-legacy": admission_review(without_record(injected), uid="uid-injected-legacy"),
        "reinvoked-sidecar-added": admission_review(with_sidecar(injected), uid="uid-sidecar"),
        "named-sidecar-not-yet-added": admission_review(named_mesh, uid="uid-named-sidecar-pending"),
        "reinvoked-named-sidecar-added": admission_review(
            with_sidecar(injected_pod(named_mesh)), uid="uid-named-sidecar"
        ),
        "deny-reinvoked-sidecar-copied-mount": admission_review(
            with_sidecar(injected, copy_from_app=True), uid="uid-sidecar-copy"
        ),
        "deny-reinvoked-record-widened": admission_review(
            with_sidecar(injected, record="app,mesh"), uid="uid-record-widened"
        ),
        "deny-user-written-record": admission_review(user_record, uid="uid-user-record"),
        "controller-pod-csi": admission_review(controller_pod(annotations=dict(CSI)), uid="uid-controller-pod-csi"),
        "existing-init-volumes-envfrom": admission_review(existing, uid="uid-existing"),
        "containers-selection": admission_review(two, uid="uid-selection"),
        "already-injected": admission_review(injected, uid="uid-injected"),
        "dry-run": admission_review(controller_pod(annotations=dict(CSI)), dry_run=True, uid="uid-dry-run"),
        "provider-class": admission_review(
            controller_pod(annotations={K + "provider-class": "payments-shared", K + "env-SHARED": "shared-config"}),
            uid="uid-pc",
        ),
        "not-opted-in": admission_review(controller_pod(labels={"app": "api"}), uid="uid-not-opted-in"),
        "deployment-ignored": admission_review({"metadata": {"name": "api"}}, kind="Deployment", uid="uid-deploy"),
        "update-ignored": admission_review(controller_pod(), operation="UPDATE", uid="uid-update"),
        "deny-bad-annotations": admission_review(
            controller_pod(annotations={K + "secret-../x": "db", K + "mode": "sidecar", K + "env-DB": "nope"}),
            uid="uid-bad",
        ),
        "deny-no-client-id": admission_review(controller_pod(service_account=None), uid="uid-no-client-id"),
        "deny-missing-service-account": admission_review(controller_pod(service_account="ghost"), uid="uid-ghost"),
        "deny-collision": admission_review(
            controller_pod(
                annotations=dict(CSI),
                containers=[{"name": "app", "image": "a", "env": [{"name": "DB_PASSWORD", "value": "literal"}]}],
            ),
            uid="uid-collide",
        ),
        "deny-two-vaults": admission_review(
            controller_pod(annotations={K + "secret-a": "payments-kv/a", K + "secret-b": "shared-kv/b"}),
            uid="uid-two-vaults",
        ),
        "deny-provider-class-missing": admission_review(
            controller_pod(annotations={K + "provider-class": "nope"}), uid="uid-pc-missing"
        ),
        "deny-no-object": admission_review(None, uid="uid-no-object"),
        "init-mode-two-vaults": admission_review(
            controller_pod(
                annotations={
                    K + "mode": "init",
                    K + "secret-db-password": "db-password",
                    K + "secret-legacy": "shared-kv/legacy-token",
                    K + "secret-tls.pem": "cert:api-tls",
                },
                containers=[{"name": "app", "image": "api:1"}, {"name": "side", "image": "s:1"}],
                initContainers=[{"name": "migrate", "image": "api:1"}],
                volumes=[{"name": "cache", "emptyDir": {}}],
                securityContext={"fsGroup": 2000, "runAsNonRoot": True},
            ),
            uid="uid-init",
        ),
        "init-mode-last-with-init-target": admission_review(
            controller_pod(
                annotations={
                    K + "mode": "init",
                    K + "secret-db-password": "db-password",
                    K + "init-first": "false",
                    K + "containers": "migrate,app",
                },
                initContainers=[{"name": "migrate", "image": "api:1"}],
            ),
            uid="uid-init-last",
        ),
        "deny-init-mode-env-and-key": admission_review(
            controller_pod(
                annotations={
                    K + "mode": "init",
                    K + "secret-db-password": "db-password",
                    K + "env-DB": "db-password",
                    K + "secret-signing": "key:signing-key",
                }
            ),
            uid="uid-init-env",
        ),
        "deny-policy-object-not-allowed": admission_review(
            controller_pod(
                annotations={
                    K + "secret-db": "db-password",
                    K + "secret-other": "other-secret",
                    K + "secret-k": "key:api-tls",
                }
            ),
            uid="uid-policy-object",
        ),
        "deny-policy-not-federated": admission_review(controller_pod(service_account="batch"), uid="uid-not-fed"),
        "deny-policy-no-policy": admission_review(controller_pod(service_account="orphan"), uid="uid-no-policy"),
        "deny-policy-tenant-mismatch": admission_review(controller_pod(service_account="foreign"), uid="uid-tenant"),
        "deny-provider-class-node-identity": admission_review(
            controller_pod(annotations={K + "provider-class": "node-identity"}), uid="uid-node-identity"
        ),
        "policy-glob-allowed": admission_review(
            controller_pod(annotations={K + "secret-legacy": "shared-kv/legacy-token@0f3c9a"}), uid="uid-glob"
        ),
        "policy-warn-mode": admission_review(
            controller_pod(annotations={K + "secret-x": "not-granted"}), namespace="sandbox", uid="uid-warn"
        ),
        "policy-audit-mode": admission_review(
            controller_pod(annotations={K + "secret-x": "not-granted"}), namespace="observed", uid="uid-audit"
        ),
    }


def main() -> None:
    CASES.mkdir(exist_ok=True)
    for name, doc in requests().items():
        (CASES / f"{name}.request.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()
