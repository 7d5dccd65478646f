"""Whose a pod or class is (webhook/rollout.py), the annotation warning, and the Events kvinject writes
(webhook/cluster/events.py) through its own cluster seam."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.harness import admission_review, controller_pod
from webhook import review, rollout
from webhook.cluster import FileCluster
from webhook.cluster.events import EventRecorder, Involved, Notice, involved_in
from webhook.metrics import Metrics
from webhook.names import PREFIX

K = PREFIX


def pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return controller_pod(annotations=annotations or {}, labels=labels or {"app": "x"}, **spec)


def csi(cls: str, name: str = "v") -> dict[str, Any]:
    return {
        "name": name,
        "csi": {"driver": "secrets-store.csi.k8s.io", "volumeAttributes": {"secretProviderClass": cls}},
    }


def env_secret(name: str) -> list[dict[str, Any]]:
    return [{"name": "app", "image": "a", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": name}}}]}]


KVINJECTS = [
    ("opt-in-label", pod({K + "inject": "true"}), True),
    ("opt-in-label-any-value", pod({K + "inject": "yes"}), True),
    ("status-annotation", pod(annotations={K + "status": "injected"}), True),
    ("init-container", pod(initContainers=[{"name": "kvinject-fetch", "image": "x"}]), True),
    (
        "refresh-sidecar",
        pod(initContainers=[{"name": "kvinject-refresh", "image": "x", "restartPolicy": "Always"}]),
        True,
    ),
    ("secrets-volume", pod(volumes=[{"name": "kvinject-secrets", "emptyDir": {}}]), True),
    ("token-volume", pod(volumes=[{"name": "kvinject-azure-token", "projected": {"sources": []}}]), True),
    ("generated-class", pod(volumes=[csi("kvinject-api-0123")]), True),
    ("synced-secret-env", pod(containers=env_secret("kvinject-api-0123")), True),
    (
        "synced-secret-envfrom",
        pod(containers=[{"name": "a", "image": "a", "envFrom": [{"secretRef": {"name": "kvinject-x"}}]}]),
        True,
    ),
    ("synced-secret-volume", pod(volumes=[{"name": "s", "secret": {"secretName": "kvinject-x"}}]), True),
    (
        "synced-secret-projected",
        pod(volumes=[{"name": "s", "projected": {"sources": [{"secret": {"name": "kvinject-x"}}]}}]),
        True,
    ),
    ("hand-written-class", pod(volumes=[csi("team-spc")]), False),
    ("hand-written-secret", pod(containers=env_secret("db")), False),
    ("annotations-only", pod(annotations={K + "secret-db": "kv/db"}), False),
    ("nothing", pod(), False),
    ("other-driver", pod(volumes=[{"name": "v", "csi": {"driver": "other", "volumeAttributes": {}}}]), False),
]


@pytest.mark.parametrize(("doc", "expected"), [c[1:] for c in KVINJECTS], ids=[c[0] for c in KVINJECTS])
def test_whose_pod(doc: dict[str, Any], expected: bool) -> None:
    assert rollout.pod_is_kvinjects(doc) is expected


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"name": "kvinject-api-1"}, True),
        ({"name": "own", "labels": {"app.kubernetes.io/managed-by": "kvinject"}}, True),
        ({"name": "own", "labels": {"app.kubernetes.io/managed-by": "helm"}}, False),
        ({"name": "team-spc"}, False),
    ],
    ids=["generated-name", "managed-by-label", "other-manager", "hand-written"],
)
def test_whose_class(meta: dict[str, Any], expected: bool) -> None:
    assert rollout.class_is_kvinjects({"metadata": meta, "spec": {"provider": "azure"}}) is expected


IGNORED = [
    ("annotations-without-label", pod(annotations={K + "secret-db": "kv/db"}), "but not the label kvinject.io/inject"),
    ("inject-yes", pod({K + "inject": "yes"}, {K + "secret-db": "kv/db"}), "labelled kvinject.io/inject: 'yes'"),
    ("inject-yes-no-annotations", pod({K + "inject": "yes"}), 'not "true"'),
    ("opted-in", pod({K + "inject": "true"}, {K + "secret-db": "kv/db"}), ""),
    ("status-only", pod(annotations={K + "status": "injected"}), ""),
    ("other-annotations", pod(annotations={"example.com/x": "y"}), ""),
]


@pytest.mark.parametrize(("doc", "says"), [c[1:] for c in IGNORED], ids=[c[0] for c in IGNORED])
def test_ignored_annotations_are_named(doc: dict[str, Any], says: str) -> None:
    problem = rollout.ignored_annotations(doc)
    assert (says in problem and "injects nothing" in problem) if says else problem == ""


def request_of(doc: dict[str, Any], kind: str = "Pod") -> review.Request:
    raw = admission_review(doc, kind=kind)
    if kind != "Pod":
        raw["request"]["kind"] = {"group": "secrets-store.csi.x-k8s.io", "version": "v1", "kind": kind}
    return review.decode_review(orjson.dumps(raw))


def test_events_go_to_the_pods_controller() -> None:
    owned = pod()
    owned["metadata"]["ownerReferences"].insert(0, {"apiVersion": "v1", "kind": "Other", "name": "o", "uid": "u0"})
    assert involved_in(request_of(owned)) == Involved(
        "apps/v1", "ReplicaSet", "api-7d9f8c6b5", "payments", "0c5b5a53-5f59-4d8a-9a7e-2f0f1f4b6a11"
    )


def test_a_pod_getting_ephemeral_containers_is_named_itself() -> None:
    running = pod()
    running["metadata"].update(name="api-7d9f8c6b5-abcde", uid="u3")
    raw = admission_review(running, operation="UPDATE")
    raw["request"]["subResource"] = "ephemeralcontainers"
    assert involved_in(review.decode_review(orjson.dumps(raw))) == Involved(
        "v1", "Pod", "api-7d9f8c6b5-abcde", "payments", "u3"
    )


def test_a_bare_pod_is_named_itself_with_its_uid_when_the_request_has_one() -> None:
    bare = pod()
    bare["metadata"] = {"name": "manual", "uid": "u1"}
    assert involved_in(request_of(bare)) == Involved("v1", "Pod", "manual", "payments", "u1")
    bare["metadata"] = {}
    assert involved_in(request_of(bare)) is None


def test_a_class_is_named_itself() -> None:
    cls = {"metadata": {"name": "team-spc", "uid": "u2"}, "spec": {"provider": "azure"}}
    assert involved_in(request_of(cls, "SecretProviderClass")) == Involved(
        "secrets-store.csi.x-k8s.io/v1", "SecretProviderClass", "team-spc", "payments", "u2"
    )


class Recording(FileCluster):
    """kvinject's event seam, recorded (the API writing is proven on the real apiserver, tests/e2e/test_rollout)."""

    def __init__(self, gone: bool = False) -> None:
        super().__init__([])
        self.created: list[dict[str, Any]] = []
        self.updated: list[tuple[str, dict[str, Any]]] = []
        self.gone = gone

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        assert event["metadata"]["namespace"] == namespace
        self.created.append(event)

    def update_event(self, namespace: str, name: str, changes: dict[str, Any]) -> bool:
        if self.gone:
            return False
        self.updated.append((name, changes))
        return True


RS = Involved("apps/v1", "ReplicaSet", "api-1", "team", "uid-1")


def count(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("kvinject_events_total", {"result": result}) or 0.0


def test_repeats_are_aggregated_into_one_event() -> None:
    cluster, metrics = Recording(), Metrics()
    recorder = EventRecorder(cluster, metrics, "replica-a")
    for _ in range(3):
        recorder.record(Notice(RS, "KvinjectWouldDeny", "m"))
    asyncio.run(recorder.flush())
    (event,) = cluster.created
    assert (event["count"], event["reason"], event["involvedObject"]["uid"]) == (3, "KvinjectWouldDeny", "uid-1")
    assert event["metadata"]["name"].startswith("api-1.") and event["source"] == {"component": "kvinject"}
    recorder.record(Notice(RS, "KvinjectWouldDeny", "m"))
    recorder.record(Notice(RS, "KvinjectWouldDeny", "m"))
    asyncio.run(recorder.flush())
    assert [(name, changes["count"]) for name, changes in cluster.updated] == [(event["metadata"]["name"], 5)]
    asyncio.run(recorder.flush())  # nothing pending: nothing written
    assert len(cluster.created) == 1 and len(cluster.updated) == 1 and count(metrics, "written") == 2


def test_an_expired_event_is_created_again() -> None:
    cluster = Recording(gone=True)
    recorder = EventRecorder(cluster, Metrics(), "replica-a")
    for _ in range(2):
        recorder.record(Notice(RS, "KvinjectDenied", "m"))
        asyncio.run(recorder.flush())
    assert [e["count"] for e in cluster.created] == [1, 1]


def test_writes_per_flush_are_bounded_and_the_rest_waits() -> None:
    cluster = Recording()
    recorder = EventRecorder(cluster, Metrics(), "replica-a", per_flush=2)
    for i in range(5):
        recorder.record(Notice(RS, "KvinjectWouldDeny", f"m{i}"))
    asyncio.run(recorder.flush())
    assert [e["message"] for e in cluster.created] == ["m0", "m1"]
    asyncio.run(recorder.flush())
    asyncio.run(recorder.flush())
    assert [e["message"] for e in cluster.created] == [f"m{i}" for i in range(5)]


def test_beyond_capacity_notices_are_dropped_and_counted() -> None:
    cluster, metrics = Recording(), Metrics()
    recorder = EventRecorder(cluster, metrics, "replica-a", capacity=2)
    for i in range(3):
        recorder.record(Notice(RS, "KvinjectWouldDeny", f"m{i}"))
    assert count(metrics, "dropped") == 1
    asyncio.run(recorder.flush())
    recorder.record(Notice(RS, "KvinjectWouldDeny", "m3"))  # written entries make room
    asyncio.run(recorder.flush())
    assert [e["message"] for e in cluster.created] == ["m0", "m1", "m3"]


def test_messages_are_bounded() -> None:
    cluster = Recording()
    recorder = EventRecorder(cluster, Metrics(), "replica-a")
    recorder.record(Notice(RS, "KvinjectDenied", "x" * 5000))
    asyncio.run(recorder.flush())
    assert len(cluster.created[0]["message"]) == 1024


def test_what_is_pending_at_shutdown_is_written() -> None:
    cluster = Recording()

    async def serve_briefly() -> None:
        recorder = EventRecorder(cluster, Metrics(), "replica-a", interval=3600)  # the loop never flushes here
        recorder.start()
        recorder.record(Notice(RS, "KvinjectDenied", "m"))
        await recorder.stop()

    asyncio.run(serve_briefly())
    assert [e["message"] for e in cluster.created] == ["m"]
