"""/validate over ASGI: the final pod re-checked, hand-written or injected."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import RELAXABLE, TENANT_ID, admission_review, apply, controller_pod, golden_cluster
from webhook import review
from webhook.app import create_app
from webhook.cluster import FileCluster
from webhook.names import PREFIX
from webhook.settings import Settings

K = PREFIX
JSON = {"Content-Type": "application/json"}


def csi_volume(provider_class: str, name: str = "secrets") -> dict[str, Any]:
    return {
        "name": name,
        "csi": {
            "driver": "secrets-store.csi.k8s.io",
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": provider_class},
        },
    }


def hand_written(
    service_account: str = "api", volumes: list[dict[str, Any]] | None = None, env: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A pod written by hand: no opt-in label, no kvinject annotations."""
    pod = controller_pod(annotations={}, labels={"app": "x"}, service_account=service_account, volumes=volumes or [])
    if env:
        pod["spec"]["containers"][0]["env"] = env
    return pod


def synced_env(secret: str) -> list[dict[str, Any]]:
    return [{"name": "CONFIG", "valueFrom": {"secretKeyRef": {"name": secret, "key": "config"}}}]


async def post(
    path: str, doc: dict[str, Any], cluster: FileCluster | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    app = create_app(settings or Settings(relaxable_namespaces=RELAXABLE), cluster or golden_cluster())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://k") as c:
        resp = await c.post(path, content=orjson.dumps(doc), headers=JSON)
    assert resp.status_code == 200
    answer: dict[str, Any] = resp.json()["response"]
    assert answer["uid"] == doc["request"]["uid"]
    return answer


async def injected(
    pod: dict[str, Any], namespace: str = "payments", cluster: FileCluster | None = None
) -> dict[str, Any]:
    """kvinject's own output for `pod` (the real mutating path; the class it creates goes into `cluster`)."""
    answer = await post("/mutate", admission_review(pod, namespace=namespace), cluster)
    assert answer["allowed"], answer
    return apply(pod, review.decode_patch({"response": answer}))


def swap_service_account(pod: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["spec"]["serviceAccountName"] = pod["spec"]["serviceAccount"] = "worker"
    return pod


def drop_env(pod: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["spec"]["containers"][0]["env"] = []
    return pod


def drop_mount(pod: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["spec"]["containers"][0]["volumeMounts"] = []
    return pod


def retarget_volume(pod: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["spec"]["volumes"][0]["csi"]["volumeAttributes"]["secretProviderClass"] = "payments-shared"
    return pod


CSI_ENV = {K + "secret-db-password": "db-password", K + "env-DB_PASSWORD": "db-password"}

HAND_WRITTEN = [
    ("own-class-allowed", hand_written(volumes=[csi_volume("payments-shared")]), None),
    ("no-relevant-parts", hand_written(), None),
    ("other-provider-ignored", None, None),
    (
        "node-identity-class",
        hand_written(volumes=[csi_volume("node-identity")]),
        "volume secrets: SecretProviderClass payments/node-identity reads with the node's managed identity"
        " (useVMManagedIdentity), which is not allowed",
    ),
    (
        "foreign-class",
        hand_written("worker", volumes=[csi_volume("payments-shared")]),
        "volume secrets: SecretProviderClass payments/payments-shared reads as client id"
        " 11111111-2222-3333-4444-555555555555, not 66666666-7777-8888-9999-000000000000, the workload identity"
        " of the pod's ServiceAccount",
    ),
    (
        "missing-class",
        hand_written(volumes=[csi_volume("ghost")]),
        "volume secrets mounts SecretProviderClass payments/ghost, which does not exist",
    ),
    (
        "reads-synced-secret-of-another-identity",
        hand_written("worker", env=synced_env("payments-shared")),
        "Secret payments-shared holds Key Vault objects synced by SecretProviderClass payments-shared: identity"
        " 66666666-7777-8888-9999-000000000000 of ServiceAccount payments/worker may not read"
        " payments-kv/shared-config; it may read payments-kv: queue-*",
    ),
    ("reads-synced-secret-authorized", hand_written("api", env=synced_env("payments-shared")), None),
    (
        "unfederated-sa-mounts-class",
        hand_written("default", volumes=[csi_volume("payments-shared")]),
        "ServiceAccount payments/default has no azure.workload.identity/client-id annotation",
    ),
]


@pytest.mark.parametrize(("pod", "message"), [c[1:] for c in HAND_WRITTEN], ids=[c[0] for c in HAND_WRITTEN])
async def test_hand_written_pods(pod: dict[str, Any] | None, message: str | None) -> None:
    if pod is None:  # a Secrets Store volume of a provider kvinject serves no store for: not its business
        cluster = golden_cluster()
        cluster.apply(
            "ADDED",
            {
                "kind": "SecretProviderClass",
                "metadata": {"name": "gcp-db", "namespace": "payments"},
                "spec": {"provider": "gcp", "parameters": {"secrets": "- resourceName: x"}},
            },
        )
        answer = await post("/validate", admission_review(hand_written(volumes=[csi_volume("gcp-db")])), cluster)
    else:
        answer = await post("/validate", admission_review(pod))
    if message is None:
        assert answer["allowed"] is True, answer
    else:
        assert answer["allowed"] is False
        assert message in answer["status"]["message"], answer["status"]["message"]
        assert answer["status"]["message"].startswith("kvinject denied pod of ReplicaSet api-7d9f8c6b5")


TAMPERING: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str | None]] = [
    ("untouched", lambda p: p, None),
    (
        "service-account-swapped",
        swap_service_account,
        "the pod was changed after kvinject injected it (its ServiceAccount is now worker)",
    ),
    (
        "env-removed",
        drop_env,
        "the pod was changed after kvinject injected it (its ServiceAccount is now api):"
        " missing /spec/containers/0/env",
    ),
    (
        "mount-removed",
        drop_mount,
        "container 'app' is recorded in kvinject.io/injected-containers as injected but does not mount"
        " kvinject-secrets",
    ),
    (
        "volume-retargeted",
        retarget_volume,
        "the pod already has a volume named 'kvinject-secrets' that kvinject did not add",
    ),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in TAMPERING], ids=[c[0] for c in TAMPERING])
async def test_injected_pods_changed_later_are_denied(
    change: Callable[[dict[str, Any]], dict[str, Any]], message: str | None
) -> None:
    cluster = golden_cluster()
    final = change(await injected(controller_pod(annotations=dict(CSI_ENV)), cluster=cluster))
    answer = await post("/validate", admission_review(final), cluster)
    if message is None:
        assert answer["allowed"] is True, answer
        assert answer["auditAnnotations"]["decision"] == "allowed"
    else:
        assert answer["allowed"] is False and message in answer["status"]["message"], answer


async def test_dry_run_injection_validates_against_the_class_it_would_create() -> None:
    pod = controller_pod(annotations=dict(CSI_ENV))
    answer = await post("/mutate", admission_review(pod, dry_run=True))
    final = apply(pod, review.decode_patch({"response": answer}))
    cluster = golden_cluster()  # nothing was created
    result = await post("/validate", admission_review(final, dry_run=True), cluster)
    assert result["allowed"] is True, result
    assert cluster.created == []


def node_identity_in(namespace: str) -> tuple[dict[str, Any], FileCluster]:
    """A hand-written pod mounting a node-identity class of `namespace`, and the golden cluster holding it."""
    cluster = golden_cluster()
    cluster.apply(
        "ADDED",
        {
            "kind": "SecretProviderClass",
            "metadata": {"name": "node-identity", "namespace": namespace},
            "spec": {
                "provider": "azure",
                "parameters": {"useVMManagedIdentity": "true", "keyvaultName": "payments-kv", "tenantID": TENANT_ID},
            },
        },
    )
    return hand_written(volumes=[csi_volume("node-identity")]), cluster


@pytest.mark.parametrize(("namespace", "warned"), [("sandbox", True), ("observed", False)], ids=["warn", "audit"])
async def test_warn_and_audit_modes_let_pods_through(namespace: str, warned: bool) -> None:
    pod, cluster = node_identity_in(namespace)
    answer = await post("/validate", admission_review(pod, namespace=namespace), cluster)
    assert answer["allowed"] is True
    mode = "warn" if warned else "audit"
    assert answer["auditAnnotations"]["decision"] == f"would-deny ({mode})"
    assert bool(answer.get("warnings")) is warned


@pytest.mark.parametrize("namespace", ["sandbox", "observed"])
async def test_enforcement_labels_do_not_loosen_outside_the_allowlist(namespace: str) -> None:
    pod, cluster = node_identity_in(namespace)
    answer = await post("/validate", admission_review(pod, namespace=namespace), cluster, Settings())
    assert answer["allowed"] is False
    assert "useVMManagedIdentity" in answer["status"]["message"]


async def test_node_identity_allowed_by_setting() -> None:
    pod = hand_written(volumes=[csi_volume("node-identity")])
    settings = Settings(allow_node_identity=True)
    answer = await post("/validate", admission_review(pod), settings=settings)
    # The identity is allowed; its objects are still checked against the pod's own identity.
    assert answer["allowed"] is True, answer


async def test_decisions_are_counted_by_outcome_and_reason() -> None:
    cluster = golden_cluster()
    app = create_app(Settings(), cluster)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://k") as c:
        for pod in (
            hand_written(volumes=[csi_volume("payments-shared")]),
            hand_written("worker", env=synced_env("payments-shared")),
        ):
            await c.post("/validate", content=orjson.dumps(admission_review(pod)), headers=JSON)
        text = (await c.get("/metrics")).text
    assert 'kvinject_policy_decisions_total{endpoint="validate",outcome="allowed",reason="allowed"} 1.0' in text
    assert 'kvinject_policy_decisions_total{endpoint="validate",outcome="denied",reason="synced-secret"} 1.0' in text


VAULT_CLASS = {
    "kind": "SecretProviderClass",
    "metadata": {"name": "vault-db", "namespace": "payments"},
    "spec": {"provider": "vault", "parameters": {"roleName": "db"}},
}


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("https://vault.example:8200", "ServiceAccount payments/api has no vault.kvinject.io/role annotation"),
        ("", "kvinject has no HashiCorp Vault configured (KVINJECT_HASHICORP_VAULT_ADDRESS is unset)"),
    ],
    ids=["vault-configured", "no-vault-configured"],
)
async def test_a_vault_volume_is_judged_with_the_pods_vault_identity(address: str, message: str) -> None:
    # A pod of store azure mounting a hand-written provider: vault class reads as its Vault role there; with no
    # Vault configured, kvinject cannot judge it and says so.
    cluster = golden_cluster()
    cluster.apply("ADDED", VAULT_CLASS)
    settings = Settings(relaxable_namespaces=RELAXABLE, hashicorp_vault_address=address)
    answer = await post(
        "/validate", admission_review(hand_written(volumes=[csi_volume("vault-db")])), cluster, settings
    )
    assert answer["allowed"] is False
    assert message in answer["status"]["message"]
