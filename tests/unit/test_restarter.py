"""The restarter (webhook/restarter.py) over a stand-in of kvinject's own API seam (`ApiObjects`): pods reporting
together make one roll, and a replica that loses the write race reads again and rolls nothing."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from tests.harness import wait_for
from webhook.cluster.api import Conflict
from webhook.cluster.events import EventRecorder
from webhook.cluster.file import FileCluster
from webhook.metrics import Metrics
from webhook.names import RESTART_STATE, RESTARTED_AT
from webhook.restarter import POD_STATUSES, Restarter
from webhook.restarts import State
from webhook.settings import Settings

NS, CLASS = "shop", "kvinject-abc"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/api"
KEY = f"{CLASS}/secret/db"


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


class FakeApi:
    """The reads and writes the restarter makes, over a dict of objects by path, with resourceVersion checks."""

    def __init__(self, objects: dict[str, dict[str, Any]], statuses: list[dict[str, Any]]):
        self.objects, self.statuses = objects, statuses
        self.events: list[dict[str, Any]] = []
        self.patches: list[dict[str, Any]] = []
        self.reads: dict[str, int] = {}
        self.lock = threading.Lock()
        self.before_patch: Any = None  # called once before the next patch is applied (another replica's write)

    def list_all(self, collection: str, selectors: list[tuple[str, str]] | None = None) -> tuple[list[Any], str]:
        if collection == POD_STATUSES:
            return copy.deepcopy(self.statuses), "1"
        # A pod, as kvinject reads one: listed by name and the opt-in label.
        assert dict(selectors or []) == {
            "fieldSelector": dict(selectors or []).get("fieldSelector", ""),
            "labelSelector": "kvinject.io/inject=true",
        }
        name = dict(selectors or [])["fieldSelector"].removeprefix("metadata.name=")
        found = self.get(f"{collection}/{name}")
        return ([found] if found is not None else []), "1"

    def watch(
        self, collection: str, selector: str, stop: threading.Event, version: str = ""
    ) -> Iterator[dict[str, Any]]:
        while not stop.is_set():
            with self.lock:
                pending, self.events = self.events, []
            yield from pending
            stop.wait(0.01)

    def get(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            self.reads[path] = self.reads.get(path, 0) + 1
            found = self.objects.get(path)
            return copy.deepcopy(found) if found is not None else None

    def patch(self, path: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        hook, self.before_patch = self.before_patch, None
        if hook is not None:
            hook()
        with self.lock:
            obj = self.objects[path]
            if changes["metadata"].get("resourceVersion") != obj["metadata"]["resourceVersion"]:
                raise Conflict(f"PATCH {path}: the object has been modified")
            merge(obj, {k: v for k, v in changes.items()})
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
            self.patches.append(changes)
            return copy.deepcopy(obj)


def pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "labels": {"kvinject.io/inject": "true"},
            "annotations": {"kvinject.io/restart-on-change": "true"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "api-5d9", "controller": True}],
        }
    }


def status(name: str, version: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{name}-{NS}-{CLASS}",
            "namespace": NS,
            "ownerReferences": [{"kind": "Pod", "name": name, "uid": f"uid-{name}"}],
        },
        "status": {
            "podName": name,
            "secretProviderClassName": CLASS,
            "mounted": True,
            "objects": [{"id": "secret/db", "version": version}],
        },
    }


def world(versions: dict[str, str]) -> FakeApi:
    deployment = {
        "metadata": {
            "name": "api",
            "namespace": NS,
            "generation": 1,
            "resourceVersion": "10",
            "annotations": {RESTART_STATE: State({KEY: "v1"}).encode()},
        },
        "spec": {
            "replicas": 3,
            "template": {
                "metadata": {
                    "labels": {"kvinject.io/inject": "true"},
                    "annotations": {"kvinject.io/restart-on-change": "true"},
                }
            },
        },
        "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3},
    }
    objects = {
        DEPLOYMENT: deployment,
        f"/apis/apps/v1/namespaces/{NS}/replicasets/api-5d9": {
            "metadata": {"ownerReferences": [{"kind": "Deployment", "name": "api", "controller": True}]}
        },
        **{f"/api/v1/namespaces/{NS}/pods/{name}": pod(name) for name in versions},
    }
    return FakeApi(objects, [status(name, v) for name, v in versions.items()])


def restarts_of(api: FakeApi) -> list[dict[str, Any]]:
    return [p for p in api.patches if "spec" in p]


async def running(api: FakeApi, check: Any) -> None:
    settings = Settings(restart_coalesce_seconds=0.05, restart_retry_seconds=0.1)
    restarter = Restarter(api, settings)  # type: ignore[arg-type]
    metrics = Metrics()
    restarter.start(metrics, EventRecorder(FileCluster([]), metrics, "test"))
    try:
        await asyncio.to_thread(check)
    finally:
        await restarter.stop()


def test_three_pods_reporting_one_new_version_make_one_roll() -> None:
    api = world({"a": "v2", "b": "v2", "c": "v2"})

    def check() -> None:
        wait_for(lambda: restarts_of(api), "a roll")
        # A sync point: the next report is decided (the workload read again) and rolls nothing: within the interval.
        reads = api.reads.get(DEPLOYMENT, 0)
        with api.lock:
            api.events.append({"type": "MODIFIED", "object": status("b", "v3")})
        wait_for(lambda: api.reads.get(DEPLOYMENT, 0) > reads, "the next decision")

    asyncio.run(running(api, check))
    (rolled,) = restarts_of(api)
    assert RESTARTED_AT in rolled["spec"]["template"]["metadata"]["annotations"]
    state = State.decode(rolled["metadata"]["annotations"][RESTART_STATE])
    assert state is not None and state.versions == {KEY: "v2"}


def test_a_replica_that_loses_the_race_reads_again_and_rolls_nothing() -> None:
    api = world({"a": "v2", "b": "v1", "c": "v1"})

    def other_replica_rolled() -> None:
        """What the winner's patch did: the record, the restart annotation, a new generation to roll out."""
        with api.lock:
            obj = api.objects[DEPLOYMENT]
            obj["metadata"]["annotations"][RESTART_STATE] = State({KEY: "v2"}, datetime.now(UTC)).encode()
            obj["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] = "2026-11-30T12:00:00Z"
            obj["metadata"]["generation"], obj["metadata"]["resourceVersion"] = 2, "11"

    api.before_patch = other_replica_rolled

    def check() -> None:
        wait_for(lambda: api.reads.get(DEPLOYMENT, 0) >= 2, "a decision after the conflict")

    asyncio.run(running(api, check))
    assert restarts_of(api) == []


def test_a_change_during_a_rollout_waits_and_is_looked_at_again() -> None:
    api = world({"a": "v2"})
    api.objects[DEPLOYMENT]["status"]["updatedReplicas"] = 1

    def check() -> None:
        wait_for(lambda: api.reads.get(DEPLOYMENT, 0) >= 2, "a second look after KVINJECT_RESTART_RETRY_SECONDS")

    asyncio.run(running(api, check))
    assert restarts_of(api) == []
