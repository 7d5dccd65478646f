"""/validate over ASGI after admission (the red team's findings; the real apiserver: tests/bypasses/test_redteam_*):
a class kvinject's pods read through is judged as kvinject's under audit-first, kvinject-* Secret names are reserved,
kvinject's record on an injected pod is fixed, and ephemeral containers take nothing of kvinject's."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.api.test_validate import CSI_ENV, JSON, csi_volume, hand_written, injected
from tests.bypasses.test_bypasses_api import WORKLOAD, class_review, debugger, ephemeral_update
from tests.harness import EXAMPLES, ROOT, admission_review, controller_pod
from webhook.app import create_app
from webhook.cluster import ClusterError, FileCluster
from webhook.names import CONTAINERS, INJECT_LABEL, INJECTED_CONTAINERS, PREFIX, PROVIDER_CLASS, VOLUME_NAME
from webhook.policy import Enforcement
from webhook.settings import Settings

K = PREFIX
AUDIT_FIRST = Settings(enforcement=Enforcement.ENFORCE, not_opted_in_enforcement=Enforcement.AUDIT)


class Listed(FileCluster):
    """The golden cluster, and the pods the API would list (kvinject's seam `Cluster.namespace_pods`, filtered)."""

    pods: tuple[dict[str, Any], ...] = ()
    failure = ""

    async def namespace_pods(self, namespace: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        if self.failure:
            raise ClusterError(self.failure)
        return [copy.deepcopy(p) for p in self.pods if keep(p)]


def listing(*pods: dict[str, Any], failure: str = "") -> Listed:
    cluster = Listed.from_path(EXAMPLES / "cluster.yaml", ROOT / "tests" / "golden" / "cluster-extra.yaml")
    assert isinstance(cluster, Listed)
    cluster.pods, cluster.failure = pods, failure
    return cluster


async def validate(doc: dict[str, Any], cluster: FileCluster | None = None) -> dict[str, Any]:
    app = create_app(AUDIT_FIRST, cluster or listing())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://k") as c:
        resp = await c.post("/validate", content=orjson.dumps(doc), headers=JSON)
    assert resp.status_code == 200
    answer: dict[str, Any] = resp.json()["response"]
    return answer


def opted_in(name: str, account: str = "api", phase: str = "Running") -> dict[str, Any]:
    """A running pod kvinject injected with the hand-written class payments-shared (kvinject.io/provider-class)."""
    pod = controller_pod(
        annotations={PROVIDER_CLASS: "payments-shared", K + "status": "injected"},
        labels={INJECT_LABEL: "true"},
        service_account=account,
        volumes=[csi_volume("payments-shared", name=VOLUME_NAME)],
    )
    pod["metadata"].update(name=name, namespace="payments")
    pod["status"] = {"phase": phase}
    return pod


def write(name: str, **change: str) -> dict[str, Any]:
    doc = class_review({**WORKLOAD, "objects": OBJECTS, **change})
    doc["request"]["object"]["metadata"]["name"] = name
    return doc


OBJECTS = "array:\n  - |\n    objectName: shared-config\n    objectType: secret\n"


def syncing(name: str, secret: str) -> dict[str, Any]:
    doc = write(name)
    doc["request"]["object"]["spec"]["secretObjects"] = [
        {"secretName": secret, "type": "Opaque", "data": [{"objectName": "shared-config", "key": "c"}]}
    ]
    return doc


NODE = "reads with the node's managed identity"
READS = "SecretProviderClass payments-shared is mounted by pod api-1 (ServiceAccount payments/api): volume kvinject-"
CLASS_WRITES = [
    ("node-identity-read-by-kvinjects-pod", write("payments-shared", useVMManagedIdentity="true"), [opted_in("api-1")],
     [NODE]),
    ("other-vault-read-by-kvinjects-pod", write("payments-shared", keyvaultName="other-kv"), [opted_in("api-1")],
     [READS, "other-kv"]),
    ("both-in-one-denial", write("payments-shared", useVMManagedIdentity="true", keyvaultName="other-kv"),
     [opted_in("api-1")], [NODE, READS]),
    ("unchanged-read-by-kvinjects-pod", write("payments-shared"), [opted_in("api-1")], None),
    ("node-identity-read-by-no-pod", write("payments-shared", useVMManagedIdentity="true"), [], None),
    ("node-identity-of-another-class", write("team-spc", useVMManagedIdentity="true"), [opted_in("api-1")], None),
    ("node-identity-finished-pod", write("payments-shared", useVMManagedIdentity="true"),
     [opted_in("api-1", phase="Succeeded")], None),
    ("other-vault-hand-written-pod", write("payments-shared", keyvaultName="other-kv"),
     [{**hand_written(volumes=[csi_volume("payments-shared")]), "status": {}}], None),
    ("reserved-secret-name", syncing("mine", "kvinject-0123456789abcdef"), [],
     ["secretObjects syncs into Secret kvinject-0123456789abcdef: Secret names starting with kvinject- are"]),
    ("own-secret-name", syncing("mine", "mine-config"), [], None),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "pods", "says"), [c[1:] for c in CLASS_WRITES], ids=[c[0] for c in CLASS_WRITES])
async def test_class_writes_under_audit_first(
    doc: dict[str, Any], pods: list[dict[str, Any]], says: list[str] | None
) -> None:
    answer = await validate(doc, listing(*pods))
    if says is None:
        assert answer["allowed"] is True, answer
        return
    assert answer["allowed"] is False, answer
    assert all(s in answer["status"]["message"] for s in says), answer["status"]["message"]


async def test_pods_alike_are_judged_once() -> None:
    answer = await validate(
        write("payments-shared", keyvaultName="other-kv"), listing(*(opted_in(f"api-{i}") for i in range(3)))
    )
    assert answer["allowed"] is False and answer["status"]["message"].count("is mounted by pod") == 1


async def test_a_problem_of_the_class_is_named_once() -> None:
    answer = await validate(
        write("payments-shared", objects="array:\n  - |\n    objectName: x\n"), listing(opted_in("api-1"))
    )
    assert answer["allowed"] is False and answer["status"]["message"].count("cannot be judged") == 1, answer


async def test_a_class_is_denied_when_the_pods_cannot_be_listed() -> None:
    answer = await validate(write("payments-shared"), listing(failure="list Pod: HTTP 403 forbidden"))
    assert answer["allowed"] is False
    assert "could not list the pods in namespace payments" in answer["status"]["message"]
    assert "HTTP 403 forbidden" in answer["status"]["message"]


def update(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    doc = admission_review(new, operation="UPDATE")
    doc["request"]["oldObject"] = old
    return doc


def edited(pod: dict[str, Any], annotations: dict[str, str | None], labels: dict[str, str | None]) -> dict[str, Any]:
    new = copy.deepcopy(pod)
    for field, changes in (("annotations", annotations), ("labels", labels)):
        values = new["metadata"].setdefault(field, {})
        for key, value in changes.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
    return new


EDITS = [
    ("record-widened", {INJECTED_CONTAINERS: "app,dbg"}, {}, [f"annotation {INJECTED_CONTAINERS} changed"]),
    ("containers-named", {CONTAINERS: "app,dbg"}, {}, [f"annotation {CONTAINERS} added"]),
    ("both-and-the-label", {INJECTED_CONTAINERS: "x", CONTAINERS: "x"}, {INJECT_LABEL: None}, [
        f"annotation {CONTAINERS} added", f"annotation {INJECTED_CONTAINERS} changed",
        f"label {INJECT_LABEL} removed"]),
    ("other-annotation", {"team.example/owner": "alice"}, {"tier": "web"}, None),
]  # fmt: skip


@pytest.mark.parametrize(("annotations", "labels", "says"), [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
async def test_kvinjects_record_is_fixed_on_an_injected_pod(
    annotations: dict[str, str | None], labels: dict[str, str | None], says: list[str] | None
) -> None:
    cluster = listing()
    pod = await injected(controller_pod(annotations=dict(CSI_ENV)), cluster=cluster)
    pod["metadata"]["name"] = "api-1"
    answer = await validate(update(pod, edited(pod, annotations, labels)), cluster)
    if says is None:
        assert answer["allowed"] is True, answer
        return
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert f"kvinject's record of the injection cannot change after admission: {'; '.join(says)};" in message, message


async def test_a_pod_kvinject_did_not_inject_keeps_its_annotations_editable() -> None:
    pod = hand_written()
    answer = await validate(update(pod, edited(pod, {CONTAINERS: "app"}, {INJECT_LABEL: "false"})))
    assert answer["allowed"] is True, answer


EPHEMERAL = [
    ("secrets-volume", debugger(volumeMounts=[{"name": VOLUME_NAME, "mountPath": "/s"}]),
     f"ephemeral container 'debugger' mounts kvinject's volume {VOLUME_NAME}"),
    ("generated-secret", debugger(envFrom=[{"secretRef": {"name": "kvinject-0123456789abcdef"}}]),
     "ephemeral container 'debugger' reads kvinject's Secret kvinject-0123456789abcdef (envFrom)"),
    ("nothing-of-kvinjects", debugger(), None),
]  # fmt: skip


@pytest.mark.parametrize(("container", "says"), [e[1:] for e in EPHEMERAL], ids=[e[0] for e in EPHEMERAL])
async def test_an_ephemeral_container_on_an_injected_pod(container: dict[str, Any], says: str | None) -> None:
    cluster = listing()
    pod = await injected(controller_pod(annotations=dict(CSI_ENV)), cluster=cluster)
    answer = await validate(ephemeral_update(pod, container), cluster)
    if says is None:
        assert answer["allowed"] is True, answer
        return
    assert answer["allowed"] is False and says in answer["status"]["message"], answer
