"""restart-on-change's planner (webhook/restarts.py): given what pods mount, the record and the rollout, what to do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from webhook import restarter, restarts
from webhook.names import RESTART_STATE, RESTARTED_AT
from webhook.restarts import (
    Change,
    DeferReason,
    Idle,
    Mount,
    Owner,
    Policy,
    Record,
    Restart,
    State,
    Workload,
    WorkloadId,
)

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
POLICY = Policy(min_interval=timedelta(minutes=5), retry=timedelta(seconds=15))
DEPLOY = WorkloadId("Deployment", "shop", "api")
CLASS = "kvinject-abc"
DB = f"{CLASS}/secret/db"
TLS = f"{CLASS}/cert/tls"


def mount(pod: str, db: str | None = "v1", tls: str | None = None, live: bool = True, cls: str = CLASS) -> Mount:
    versions = tuple((oid, v) for oid, v in (("secret/db", db), ("cert/tls", tls)) if v is not None)
    return Mount(pod, f"uid-{pod}", cls, versions, live)


def workload(
    state: State | None, busy: str | None = None, opted_in: bool = True, unsupported: str | None = None
) -> Workload:
    return Workload(DEPLOY, opted_in, state, busy, unsupported)


@dataclass(frozen=True)
class Case:
    id: str
    workload: Workload
    mounts: tuple[Mount, ...]
    expected: restarts.Action
    now: datetime = NOW


CASES = [
    Case(
        "first-sight-records-without-rolling",
        workload(None),
        (mount("a"), mount("b")),
        Record(State({DB: "v1"})),
    ),
    Case(
        "first-sight-pods-disagree-waits",
        workload(None),
        (mount("a", "v1"), mount("b", "v2")),
        Idle("its pods mount different versions and there is no record yet"),
    ),
    Case(
        "unchanged-is-idle",
        workload(State({DB: "v1"})),
        (mount("a"), mount("b")),
        Idle("no mounted version changed"),
    ),
    Case(
        "one-pod-rotated-rolls-once",
        workload(State({DB: "v1"})),
        (mount("a", "v2"), mount("b", "v1"), mount("c", "v1")),
        Restart((Change(DB, "v1", "v2", 1),), State({DB: "v2"}, NOW)),
    ),
    Case(
        "coalesced-every-pod-rotated-one-restart",
        workload(State({DB: "v1"})),
        (mount("a", "v2"), mount("b", "v2"), mount("c", "v2")),
        Restart((Change(DB, "v1", "v2", 3),), State({DB: "v2"}, NOW)),
    ),
    Case(
        "after-the-restart-new-pods-mount-the-recorded-version",
        workload(State({DB: "v2"}, NOW - timedelta(minutes=1))),
        (mount("d", "v2"), mount("e", "v2"), mount("f", "v2")),
        Idle("no mounted version changed"),
    ),
    Case(
        "kvinject-restarted-with-recorded-state-rolls-nothing",
        workload(State({DB: "v2", TLS: "t1"}, NOW - timedelta(days=3))),
        (mount("d", "v2", "t1"), mount("e", "v2", "t1")),
        Idle("no mounted version changed"),
    ),
    Case(
        "kvinject-restarted-missed-a-rotation-rolls",
        workload(State({DB: "v1", TLS: "t1"}, NOW - timedelta(days=3))),
        (mount("d", "v2", "t1"), mount("e", "v2", "t1")),
        Restart((Change(DB, "v1", "v2", 2),), State({DB: "v2", TLS: "t1"}, NOW)),
    ),
    Case(
        "two-objects-changed-one-restart",
        workload(State({DB: "v1", TLS: "t1"})),
        (mount("a", "v2", "t2"), mount("b", "v1", "t2")),
        Restart((Change(TLS, "t1", "t2", 2), Change(DB, "v1", "v2", 1)), State({DB: "v2", TLS: "t2"}, NOW)),
    ),
    Case(
        "rate-limited-defers-until-the-interval-ends",
        workload(State({DB: "v2"}, NOW - timedelta(minutes=2))),
        (mount("a", "v3"),),
        restarts.Defer(
            DeferReason.RATE_LIMITED,
            "it was rolled at 2026-11-30T11:58:00Z",
            timedelta(minutes=3),
            (Change(DB, "v2", "v3", 1),),
        ),
    ),
    Case(
        "rate-limit-over-rolls",
        workload(State({DB: "v2"}, NOW - timedelta(minutes=5))),
        (mount("a", "v3"),),
        Restart((Change(DB, "v2", "v3", 1),), State({DB: "v3"}, NOW)),
    ),
    Case(
        "ongoing-rollout-defers",
        workload(State({DB: "v1"}), busy="1 of 3 replicas are updated"),
        (mount("a", "v2"),),
        restarts.Defer(
            DeferReason.ROLLOUT,
            "its rollout is not done: 1 of 3 replicas are updated",
            timedelta(seconds=15),
            (Change(DB, "v1", "v2", 1),),
        ),
    ),
    Case(
        "terminating-old-pods-are-no-change",
        workload(State({DB: "v2"}, NOW - timedelta(minutes=1))),
        (mount("old", "v1", live=False), mount("new", "v2")),
        Idle("no mounted version changed"),
    ),
    Case(
        "not-opted-in-never-rolls",
        workload(State({DB: "v1"}), opted_in=False),
        (mount("a", "v2"),),
        Idle("its pod template does not opt in to restart-on-change"),
    ),
    Case(
        "on-delete-strategy-never-rolls",
        workload(State({DB: "v1"}), unsupported="its updateStrategy is OnDelete"),
        (mount("a", "v2"),),
        Idle("its updateStrategy is OnDelete"),
    ),
    Case(
        "object-added-by-a-new-template-is-recorded",
        workload(State({DB: "v1"})),
        (mount("a", "v1", "t1"), mount("b", "v1", "t1")),
        Record(State({DB: "v1", TLS: "t1"})),
    ),
    Case(
        "object-gone-after-the-rollout-is-forgotten",
        workload(State({DB: "v1", TLS: "t1"}, NOW - timedelta(days=1))),
        (mount("a", "v1"),),
        Record(State({DB: "v1"}, NOW - timedelta(days=1))),
    ),
    Case(
        "object-gone-during-a-rollout-is-kept",
        workload(State({DB: "v1", TLS: "t1"}), busy="1 old replicas are still running"),
        (mount("a", "v1"),),
        Idle("no mounted version changed"),
    ),
    Case(
        "new-class-after-a-template-change-is-recorded-not-rolled",
        workload(State({DB: "v1"})),
        (mount("a", "v1", cls="kvinject-new"),),
        Record(State({"kvinject-new/secret/db": "v1"})),
    ),
    Case(
        "no-live-pods-is-idle",
        workload(State({DB: "v1"})),
        (mount("a", "v2", live=False),),
        Idle("no live pod reports mounted versions"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    assert restarts.plan(case.workload, case.mounts, case.now, POLICY) == case.expected


@pytest.mark.parametrize(
    ("pod_owner", "rs_owner", "expected"),
    [
        (Owner("ReplicaSet", "api-5d9"), Owner("Deployment", "api"), WorkloadId("Deployment", "shop", "api")),
        (Owner("StatefulSet", "db"), None, WorkloadId("StatefulSet", "shop", "db")),
        (Owner("DaemonSet", "agent"), None, WorkloadId("DaemonSet", "shop", "agent")),
        (None, None, "a bare pod has no controller"),
        (Owner("Job", "migrate"), None, "a Job's pods run to completion"),
        (Owner("ReplicaSet", "lonely"), None, "a ReplicaSet without a Deployment"),
        (Owner("ReplicaSet", "argo"), Owner("Rollout", "argo"), "its controller is a Rollout"),
        (Owner("Workflow", "w"), None, "its controller is a Workflow"),
    ],
    ids=["deployment", "statefulset", "daemonset", "bare-pod", "job", "orphan-replicaset", "argo-rollout", "other"],
)
def test_workload_of(pod_owner: Owner | None, rs_owner: Owner | None, expected: WorkloadId | str) -> None:
    found = restarts.workload_of("shop", pod_owner, rs_owner)
    if isinstance(expected, WorkloadId):
        assert found == expected
    else:
        assert isinstance(found, str) and found.startswith(expected), found


def deployment(generation: int = 2, **status: int) -> dict[str, object]:
    full = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3} | status
    return {"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": full}


def statefulset(partition: int = 0, **status: object) -> dict[str, object]:
    full = {
        "observedGeneration": 1,
        "readyReplicas": 3,
        "updatedReplicas": 3,
        "currentRevision": "r1",
        "updateRevision": "r1",
    } | status
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}
    return {"metadata": {"generation": 1}, "spec": {"replicas": 3, "updateStrategy": strategy}, "status": full}


def daemonset(**status: int) -> dict[str, object]:
    full = {"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}
    return {"metadata": {"generation": 1}, "spec": {}, "status": full | status}


@pytest.mark.parametrize(
    ("kind", "obj", "busy"),
    [
        ("Deployment", deployment(), None),
        ("Deployment", deployment(generation=3), "its controller has not yet observed its latest spec"),
        ("Deployment", deployment(updatedReplicas=1), "1 of 3 replicas are updated"),
        ("Deployment", deployment(replicas=4), "1 old replicas are still running"),
        ("Deployment", deployment(availableReplicas=2), "2 of 3 updated replicas are available"),
        ("Deployment", {**deployment(), "spec": {"replicas": 3, "paused": True}}, "it is paused"),
        ("StatefulSet", statefulset(), None),
        ("StatefulSet", statefulset(updateRevision="r2"), "its pods are moving to a new revision"),
        ("StatefulSet", statefulset(readyReplicas=2), "2 of 3 replicas are ready"),
        ("StatefulSet", statefulset(partition=1, updatedReplicas=2, updateRevision="r2"), None),
        ("StatefulSet", statefulset(observedGeneration=0), "its controller has not yet observed its latest spec"),
        ("DaemonSet", daemonset(), None),
        ("DaemonSet", daemonset(updatedNumberScheduled=1), "1 of 2 pods are updated"),
        ("DaemonSet", daemonset(numberAvailable=1), "1 of 2 pods are available"),
    ],
    ids=[
        "deployment-done",
        "deployment-not-observed",
        "deployment-updating",
        "deployment-old-replicas",
        "deployment-unavailable",
        "deployment-paused",
        "statefulset-done",
        "statefulset-new-revision",
        "statefulset-not-ready",
        "statefulset-partition-done",
        "statefulset-never-observed",
        "daemonset-done",
        "daemonset-updating",
        "daemonset-unavailable",
    ],
)
def test_rollout_busy(kind: str, obj: dict[str, object], busy: str | None) -> None:
    assert restarts.rollout_busy(kind, obj) == busy


@pytest.mark.parametrize(
    ("kind", "strategy", "rolls"),
    [
        ("StatefulSet", "OnDelete", False),
        ("DaemonSet", "OnDelete", False),
        ("StatefulSet", "RollingUpdate", True),
        ("Deployment", "Recreate", True),
    ],
    ids=["statefulset-on-delete", "daemonset-on-delete", "statefulset-rolling", "deployment-recreate"],
)
def test_unsupported_strategies(kind: str, strategy: str, rolls: bool) -> None:
    found = restarts.unsupported(kind, {"spec": {"updateStrategy": {"type": strategy}, "strategy": {"type": strategy}}})
    assert (found is None) is rolls


@pytest.mark.parametrize(
    "state",
    [State({DB: "v1"}), State({DB: "v1", TLS: "t2"}, NOW), State({})],
    ids=["no-restart-yet", "restarted", "empty"],
)
def test_state_round_trips(state: State) -> None:
    assert State.decode(state.encode()) == state


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '{"versions": []}', '{"versions": {"a": 1}}', '{"versions": {}, "restartedAt": "x"}'],
    ids=["empty", "not-json", "list", "versions-list", "version-not-string", "bad-time"],
)
def test_foreign_state_is_no_state(text: str) -> None:
    assert State.decode(text) is None


def test_suspects_are_the_pods_that_differ_from_the_record() -> None:
    mounts = [mount("a", "v1"), mount("b", "v2"), mount("c", "v1", "t9")]
    assert restarts.suspects(State({DB: "v1"}), mounts) == {"uid-b"}
    assert restarts.suspects(None, mounts) == set()


def test_restart_patch_rolls_the_template_and_records_in_one_write() -> None:
    patch = restarts.restart_patch(State({DB: "v2"}, NOW), "42")
    assert patch == {
        "metadata": {"resourceVersion": "42", "annotations": {RESTART_STATE: State({DB: "v2"}, NOW).encode()}},
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2026-11-30T12:00:00Z"}}}},
    }
    assert "spec" not in restarts.record_patch(State({DB: "v2"}), "42")


# -- what the restarter reads (webhook/restarter.py) -------------------------------------------------------------


def driver_status(**status: object) -> dict[str, object]:
    """A SecretProviderClassPodStatus as driver v1.6.1 writes it (pkg/secrets-store/utils.go)."""
    full = {
        "podName": "api-5d9-x2",
        "secretProviderClassName": CLASS,
        "mounted": True,
        "targetPath": "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/kvinject-secrets/mount",
        "objects": [{"id": "secret/db", "version": "v1"}, {"id": "cert/tls", "version": "t1"}],
    } | status
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClassPodStatus",
        "metadata": {
            "name": f"api-5d9-x2-shop-{CLASS}",
            "namespace": "shop",
            "labels": {"internal.secrets-store.csi.k8s.io/node-name": "node-1"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "api-5d9-x2", "uid": "u1"}],
        },
        "status": full,
    }


def test_a_driver_status_is_read_as_the_driver_writes_it() -> None:
    parsed = restarter.PodStatus.parse(driver_status())
    assert parsed == restarter.PodStatus(
        "shop", f"api-5d9-x2-shop-{CLASS}", "api-5d9-x2", "u1", CLASS, True, (("cert/tls", "t1"), ("secret/db", "v1"))
    )
    assert parsed.mount() == Mount("api-5d9-x2", "u1", CLASS, (("cert/tls", "t1"), ("secret/db", "v1")))


@pytest.mark.parametrize(
    ("status", "mounted", "versions"),
    [
        ({"mounted": False}, False, (("cert/tls", "t1"), ("secret/db", "v1"))),
        ({"objects": None}, True, ()),
        ({"objects": [{"id": "secret/db"}, {"version": "v9"}, "junk"]}, True, (("secret/db", ""),)),
    ],
    ids=["not-mounted", "no-objects", "malformed-objects"],
)
def test_partial_driver_statuses(
    status: dict[str, object], mounted: bool, versions: tuple[tuple[str, str], ...]
) -> None:
    parsed = restarter.PodStatus.parse(driver_status(**status))
    assert parsed is not None and parsed.mounted is mounted and parsed.versions == versions


def test_a_status_without_a_pod_is_ignored() -> None:
    assert restarter.PodStatus.parse(driver_status(podName=None)) is None


@pytest.mark.parametrize(
    ("labels", "annotations", "expected"),
    [
        ({"kvinject.io/inject": "true"}, {"kvinject.io/restart-on-change": "true"}, True),
        ({"kvinject.io/inject": "true"}, {"kvinject.io/restart-on-change": "false"}, False),
        ({"kvinject.io/inject": "true"}, {}, False),
        ({}, {"kvinject.io/restart-on-change": "true"}, False),
    ],
    ids=["opted-in", "false", "no-annotation", "not-injected"],
)
def test_opted_in(labels: dict[str, str], annotations: dict[str, str], expected: bool) -> None:
    assert restarter.opted_in({"labels": labels, "annotations": annotations}) is expected


@pytest.mark.parametrize(
    ("workload", "path"),
    [
        (WorkloadId("Deployment", "shop", "api"), "/apis/apps/v1/namespaces/shop/deployments/api"),
        (WorkloadId("StatefulSet", "shop", "db"), "/apis/apps/v1/namespaces/shop/statefulsets/db"),
        (WorkloadId("DaemonSet", "shop", "agent"), "/apis/apps/v1/namespaces/shop/daemonsets/agent"),
    ],
    ids=["deployment", "statefulset", "daemonset"],
)
def test_workload_paths(workload: WorkloadId, path: str) -> None:
    assert restarter.workload_path(workload) == path


def test_a_status_without_its_pod_owner_is_ignored() -> None:
    doc = driver_status()
    doc["metadata"]["ownerReferences"] = []  # type: ignore[index]
    assert restarter.PodStatus.parse(doc) is None
