"""restart-on-change on the real control plane (docs/rotation.md): kvinject, as its shipped ServiceAccount and
ClusterRole, rolls an opted-in Deployment once when a pod's mounted version changes, and nothing else.

There is no node in this tier, so the test stands in for the two node-side writers, as they write: the Secrets
Store CSI driver's SecretProviderClassPodStatus objects (the driver's v1 CRD, its name, labels, owner and status
shape, pkg/secrets-store/utils.go), and the kubelet's Ready status of pods (without it no rollout ever completes).
Everything else is real: the apiserver, the Deployment and ReplicaSet controllers, the garbage collector that
deletes a pod's status with the pod, kvinject's webhook injecting the pods, and two kvinject replicas deciding
on the same change. tests/node/ runs the real driver and kubelet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    VAULT,
    Binaries,
    ControlPlane,
    K,
    KvinjectServer,
    apply_docs,
    get_json,
    serve_as_shipped,
    unavailable,
    wait_for,
)
from tests.harness.controlplane import BinariesMissing
from webhook.names import CSI_DRIVER, EVENT_RESTARTED, RESTART_STATE, RESTARTED_AT
from webhook.restarts import State

pytestmark = pytest.mark.e2e

NODE_LABEL = "internal.secrets-store.csi.k8s.io/node-name"  # the driver's own label on its statuses
DB = "secret/db"


@pytest.fixture(scope="module")
def pod_statuses(control_plane: ControlPlane, e2e_binaries: Binaries) -> None:
    """The driver's SecretProviderClassPodStatus CRD, as the driver's deployment installs it."""
    try:
        e2e_binaries.require("spcps_crd")
    except BinariesMissing as exc:
        unavailable(str(exc))
    control_plane.apply_crd(e2e_binaries.spcps_crd)


def template(name: str, opted_in: bool) -> dict[str, Any]:
    annotations = {K + "secret-db": f"{VAULT}/db"}
    if opted_in:
        annotations[K + "restart-on-change"] = "true"
    return {
        "metadata": {"labels": {"app": name, K + "inject": "true"}, "annotations": annotations},
        "spec": {"serviceAccountName": "api", "containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }


def deployment(namespace: str, name: str, opted_in: bool) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": template(name, opted_in),
        },
    }


def pods(cp: ControlPlane, namespace: str, app: str) -> list[dict[str, Any]]:
    """The app's pods that are not terminating."""
    items: list[dict[str, Any]] = get_json(cp, "pods", "-n", namespace, "-l", f"app={app}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def provider_class(pod: dict[str, Any]) -> str:
    """The class kvinject's webhook mounted into the pod."""
    volumes = [v for v in pod["spec"].get("volumes") or [] if (v.get("csi") or {}).get("driver") == CSI_DRIVER]
    assert len(volumes) == 1, pod["spec"].get("volumes")
    return str(volumes[0]["csi"]["volumeAttributes"]["secretProviderClass"])


def ready(cp: ControlPlane, pod: dict[str, Any]) -> None:
    """What the kubelet would report once the pod runs."""
    status = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    meta = pod["metadata"]
    cp.kubectl(
        "patch", "pod", meta["name"], "-n", meta["namespace"], "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip


def mounted(cp: ControlPlane, pod: dict[str, Any], versions: dict[str, str]) -> None:
    """What the driver writes when it mounts (or remounts, rotating) the pod's volume: one status per pod and class,
    owned by the pod (the garbage collector deletes it with the pod)."""
    meta, cls = pod["metadata"], provider_class(pod)
    doc = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClassPodStatus",
        "metadata": {
            "name": f"{meta['name']}-{meta['namespace']}-{cls}",
            "namespace": meta["namespace"],
            "labels": {NODE_LABEL: "e2e-node"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}],
        },
        "status": {
            "podName": meta["name"],
            "secretProviderClassName": cls,
            "mounted": True,
            "targetPath": f"/var/lib/kubelet/pods/{meta['uid']}/volumes/kubernetes.io~csi/kvinject-secrets/mount",
            "objects": [{"id": oid, "version": v} for oid, v in sorted(versions.items())],
        },
    }
    apply_docs(cp, [doc])


def run(cp: ControlPlane, namespace: str, app: str, versions: dict[str, str]) -> list[dict[str, Any]]:
    """The kubelet and the driver for every pod of the app that has none yet: Ready, mounted with `versions`.
    (By uid: a StatefulSet's new pod has its old pod's name.)"""
    have = {r["uid"] for s in statuses(cp, namespace) for r in s["metadata"].get("ownerReferences") or []}
    found = pods(cp, namespace, app)
    for pod in found:
        if pod["metadata"]["uid"] not in have:
            mounted(cp, pod, versions)
            ready(cp, pod)
    return found


def statuses(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cp, "secretproviderclasspodstatuses", "-n", namespace)["items"]
    return items


def workload(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = get_json(cp, "deployment", name, "-n", namespace)
    return obj


def record(obj: dict[str, Any]) -> State | None:
    return State.decode((obj["metadata"].get("annotations") or {}).get(RESTART_STATE))


def rolled_out(cp: ControlPlane, namespace: str, name: str, versions: dict[str, str]) -> bool:
    """Play kubelet and driver for the new pods until the Deployment's rollout is done."""
    run(cp, namespace, name, versions)
    obj = workload(cp, namespace, name)
    status = obj.get("status") or {}
    return bool(
        status.get("observedGeneration") == obj["metadata"]["generation"]
        and status.get("updatedReplicas") == status.get("replicas") == status.get("availableReplicas") == 2
    )


def rolled_once(cp: ControlPlane, namespace: str, restarted_at: str) -> bool:
    """Deployment api has had exactly two templates: its first, and the one restart that wrote `restarted_at`."""
    annotations = workload(cp, namespace, "api")["spec"]["template"]["metadata"]["annotations"]
    return annotations[RESTARTED_AT] == restarted_at and replica_sets(cp, namespace, "api") == 2


def counter(server: KvinjectServer, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in server.get("/metrics").text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and match.group(1) == wanted:
            return float(match.group(2))
    return 0.0


def replica_sets(cp: ControlPlane, namespace: str, app: str) -> int:
    """How many templates the Deployment has had: a roll makes a ReplicaSet. (Its generation is no measure: a
    Deployment's generation also moves when its annotations change, kvinject's record among them.)"""
    return len(get_json(cp, "replicasets", "-n", namespace, "-l", f"app={app}")["items"])


def restarted_events(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    items = get_json(cp, "events", "-n", namespace)["items"]
    return [e for e in items if e["reason"] == EVENT_RESTARTED and e["involvedObject"]["name"] == name]


@pytest.fixture
def second_replica(control_plane: ControlPlane, tmp_path: Path) -> Iterator[list[KvinjectServer]]:
    """A place for a second kvinject replica the test starts itself (stopped at the end)."""
    started: list[KvinjectServer] = []
    yield started
    for server in started:
        server.stop()
        assert "Traceback" not in server.logs()


def test_an_opted_in_deployment_rolls_once_per_change(
    control_plane: ControlPlane,
    kvinject: KvinjectServer,
    namespace: str,
    pod_statuses: None,
    second_replica: list[KvinjectServer],
) -> None:
    cp = control_plane
    apply_docs(cp, [deployment(namespace, "api", opted_in=True), deployment(namespace, "plain", opted_in=False)])
    v1 = {DB: "v1"}
    for app in ("api", "plain"):
        wait_for(lambda a=app: rolled_out(cp, namespace, a, v1), f"Deployment {app} running with version v1")  # type: ignore[misc]
    cls = provider_class(pods(cp, namespace, "api")[0])
    key = f"{cls}/{DB}"

    # First sight: kvinject records what the pods mount, and rolls nothing.
    first = wait_for(lambda: record(workload(cp, namespace, "api")), "kvinject's record on Deployment api")
    assert first == State({key: "v1"})
    assert replica_sets(cp, namespace, "api") == 1

    # The session's replica may have rolled workloads of other tests: count from here.
    counted = counter(kvinject, "kvinject_restarts_total", kind="Deployment", reason="object-version-changed")
    # The driver rotates one pod of each Deployment to v2: api rolls, once; plain does not.
    v2 = {DB: "v2"}
    for app in ("api", "plain"):
        mounted(cp, pods(cp, namespace, app)[0], v2)
    rolled = wait_for(
        lambda: (
            RESTARTED_AT in ((obj := workload(cp, namespace, "api"))["spec"]["template"]["metadata"]["annotations"])
            and obj
        ),
        "Deployment api rolled",
    )
    assert set(rolled["spec"]["template"]["metadata"]["annotations"]) == {
        K + "secret-db",
        K + "restart-on-change",
        RESTARTED_AT,
    }
    restarted_at = rolled["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    state = record(rolled)
    assert state is not None and state.versions == {key: "v2"} and state.restarted_at is not None
    event = wait_for(lambda: restarted_events(cp, namespace, "api"), "a KvinjectRestarted event on Deployment api")
    assert f"{key} changed from version v1 to v2 (1 pods)" in event[0]["message"], event
    assert event[0]["type"] == "Normal" and event[0]["source"]["component"] == "kvinject"

    # During the rollout (the new pod is not Ready yet, so the old ones run on), an old pod rotating to v3 is put off.
    old = [p for p in pods(cp, namespace, "api") if (p["status"].get("phase") == "Running")]
    before = counter(kvinject, "kvinject_restarts_deferred_total", kind="Deployment", reason="rollout-in-progress")
    mounted(cp, old[-1], {DB: "v3"})
    wait_for(
        lambda: (
            counter(kvinject, "kvinject_restarts_deferred_total", kind="Deployment", reason="rollout-in-progress")
            > before
        ),
        "the change put off while the rollout runs",
    )

    # A second replica starts with nothing in memory (a restarted kvinject): the record keeps it from rolling again.
    second_replica.append(serve_as_shipped(cp, Path(kvinject.workdir).parent / "replica-2"))
    replicas = [kvinject, *second_replica]

    # The rollout completes: the new pods mount v2 (the old ones, v3 included, are gone with their statuses).
    wait_for(lambda: rolled_out(cp, namespace, "api", v2), "Deployment api rolled out with v2")
    wait_for(
        lambda: not [s for s in statuses(cp, namespace) if s["status"]["objects"][0]["version"] == "v3"], "old gone"
    )

    # A sync point both replicas pass: a new object mounted by the new pods is recorded (by one of them), not rolled.
    for pod in pods(cp, namespace, "api"):
        mounted(cp, pod, {**v2, "secret/extra": "e1"})
    wait_for(
        lambda: (s := record(workload(cp, namespace, "api"))) is not None and f"{cls}/secret/extra" in s.versions,
        "the new object recorded",
    )
    assert rolled_once(cp, namespace, restarted_at)
    assert (
        sum(counter(r, "kvinject_restarts_total", kind="Deployment", reason="object-version-changed") for r in replicas)
        - counted
        == 1
    )
    assert len(restarted_events(cp, namespace, "api")) == 1

    # Within the interval (300 s by default) a further rotation waits: rate-limited, not rolled.
    mounted(cp, pods(cp, namespace, "api")[0], {DB: "v4", "secret/extra": "e1"})
    wait_for(
        lambda: (
            sum(
                counter(r, "kvinject_restarts_deferred_total", kind="Deployment", reason="rate-limited")
                for r in replicas
            )
            >= 1
        ),
        "the next change put off by the rate limit",
    )
    assert rolled_once(cp, namespace, restarted_at)

    assert record(workload(cp, namespace, "api")).versions[key] == "v2"  # type: ignore[union-attr]

    # The Deployment not opted in: never rolled, never recorded.
    plain = workload(cp, namespace, "plain")
    assert plain["metadata"]["generation"] == 1 and replica_sets(cp, namespace, "plain") == 1
    assert RESTART_STATE not in (plain["metadata"].get("annotations") or {})
    assert RESTARTED_AT not in (plain["spec"]["template"]["metadata"].get("annotations") or {})


def test_an_opted_in_statefulset_rolls_once(
    control_plane: ControlPlane, kvinject: KvinjectServer, namespace: str, pod_statuses: None
) -> None:
    cp = control_plane
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "serviceName": "db",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "db"}},
            "template": template("db", opted_in=True),
        },
    }
    apply_docs(cp, [sts])

    def settled(versions: dict[str, str]) -> bool:
        run(cp, namespace, "db", versions)
        obj = get_json(cp, "statefulset", "db", "-n", namespace)
        status = obj.get("status") or {}
        return bool(
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("currentRevision") == status.get("updateRevision")
            and status.get("updatedReplicas") == status.get("readyReplicas") == 2
        )

    def revisions() -> int:
        return len(get_json(cp, "controllerrevisions", "-n", namespace, "-l", "app=db")["items"])

    def state() -> State | None:
        return record(get_json(cp, "statefulset", "db", "-n", namespace))

    wait_for(lambda: settled({DB: "v1"}), "StatefulSet db running with v1")
    cls = provider_class(pods(cp, namespace, "db")[0])
    assert wait_for(state, "kvinject's record on StatefulSet db") == State({f"{cls}/{DB}": "v1"})
    before = counter(kvinject, "kvinject_restarts_total", kind="StatefulSet", reason="object-version-changed")

    mounted(cp, pods(cp, namespace, "db")[0], {DB: "v2"})
    wait_for(lambda: (s := state()) is not None and s.restarted_at is not None, "StatefulSet db rolled")
    wait_for(lambda: settled({DB: "v2"}), "StatefulSet db rolled out with v2")
    assert revisions() == 2
    assert state().versions == {f"{cls}/{DB}": "v2"}  # type: ignore[union-attr]
    after = counter(kvinject, "kvinject_restarts_total", kind="StatefulSet", reason="object-version-changed")
    assert after - before == 1


@pytest.mark.parametrize(
    ("kind", "says"),
    [("Pod", "a bare pod has no controller to roll it"), ("Job", "a Job's pods run to completion")],
    ids=["bare-pod", "job"],
)
def test_pods_kvinject_cannot_roll_are_told_so(
    control_plane: ControlPlane, kvinject: KvinjectServer, namespace: str, pod_statuses: None, kind: str, says: str
) -> None:
    cp = control_plane
    name = f"once-{kind.lower()}"
    spec = template(name, opted_in=True)
    if kind == "Pod":
        doc = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**spec["metadata"], "name": name, "namespace": namespace},
        }
        doc["spec"] = spec["spec"]
    else:
        spec["spec"]["restartPolicy"] = "Never"
        doc = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": spec},
        }
    apply_docs(cp, [doc])
    (pod,) = wait_for(lambda: pods(cp, namespace, name), f"the {kind}'s pod")
    mounted(cp, pod, {DB: "v1"})

    def told() -> list[dict[str, Any]]:
        items = get_json(cp, "events", "-n", namespace)["items"]
        return [
            e
            for e in items
            if e["reason"] == "KvinjectRestartUnsupported" and e["involvedObject"]["name"] == pod["metadata"]["name"]
        ]

    (event,) = wait_for(told, "a KvinjectRestartUnsupported event on the pod")
    assert says in event["message"] and event["type"] == "Warning"
