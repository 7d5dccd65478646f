"""restart-on-change (csi mode): the I/O around the planner `webhook.restarts`.

Every replica of kvinject runs one `Restarter` in its serving process: a thread lists and watches the Secrets Store
CSI driver's SecretProviderClassPodStatus objects (one per pod and class: the pod's name and uid, the class, the
object versions it mounted) and hands them to a task on the server's event loop. The task finds each pod's workload
(a GET of the pod and, for a Deployment's pods, its ReplicaSet; both cached by uid: owners do not change), and a
few seconds after a workload's pods report something new it reads the workload, asks the planner, and writes what
the planner returns: the record, or the record with the restart, in one merge patch.

No leader: every patch carries the workload's resourceVersion as read, so when several replicas decide on the same
change one write wins and the others get a conflict, read again, and find the change recorded. Events go through
the app's `EventRecorder` (webhook/cluster/events.py); nothing here reads a Secret or a secret value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from webhook import restarts
from webhook.cluster.api import ApiObjects, Conflict
from webhook.cluster.base import ClusterError
from webhook.cluster.events import EventRecorder, Involved, Notice
from webhook.metrics import Metrics
from webhook.names import (
    CLASS_API_VERSION,
    EVENT_RESTART_UNSUPPORTED,
    EVENT_RESTARTED,
    INJECT_LABEL,
    RESTART_ON_CHANGE,
    RESTART_STATE,
)
from webhook.restarts import Mount, Owner, WorkloadId
from webhook.settings import Settings

log = logging.getLogger(__name__)

POD_STATUSES = f"/apis/{CLASS_API_VERSION}/secretproviderclasspodstatuses"
_PLURAL = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
REASON_CHANGED = "object-version-changed"
CLUSTER_RATE_LIMITED = "cluster-rate-limited"


def workload_path(workload: WorkloadId) -> str:
    return f"/apis/apps/v1/namespaces/{workload.namespace}/{_PLURAL[workload.kind]}/{workload.name}"


def opted_in(meta: dict[str, Any]) -> bool:
    """A pod's (or a pod template's) metadata asks for restart-on-change."""
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return bool(labels.get(INJECT_LABEL) == "true" and annotations.get(RESTART_ON_CHANGE) == "true")


def _controller(meta: dict[str, Any]) -> Owner | None:
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True and ref.get("kind") and ref.get("name"):
            return Owner(str(ref["kind"]), str(ref["name"]))
    return None


@dataclass(frozen=True, slots=True)
class PodStatus:
    """What a SecretProviderClassPodStatus says, in the driver's v1 shape (status.podName,
    secretProviderClassName, mounted, objects[{id, version}]; the pod is its owner)."""

    namespace: str
    name: str
    pod: str
    pod_uid: str
    provider_class: str
    mounted: bool
    versions: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> PodStatus | None:
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        pod_uid = next(
            (
                str(r.get("uid"))
                for r in meta.get("ownerReferences") or []
                if isinstance(r, dict) and r.get("kind") == "Pod"
            ),
            "",
        )
        objects = status.get("objects") or []
        versions = tuple(
            sorted(
                (str(o.get("id")), str(o.get("version") or ""))
                for o in objects
                if isinstance(o, dict) and isinstance(o.get("id"), str)
            )
        )
        if not meta.get("namespace") or not meta.get("name") or not isinstance(status.get("podName"), str):
            return None
        if not pod_uid:  # the driver always names its pod as owner; without one the pod cannot be told apart
            return None
        return cls(
            str(meta["namespace"]),
            str(meta["name"]),
            status["podName"],
            pod_uid,
            str(status.get("secretProviderClassName") or ""),
            status.get("mounted") is True,
            versions,
        )

    def mount(self, live: bool = True) -> Mount:
        return Mount(self.pod, self.pod_uid, self.provider_class, self.versions, live)


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What kvinject keeps of a pod (by uid): whether it asks for restart-on-change, and its workload."""

    opted_in: bool
    workload: WorkloadId | str | None  # None: not looked up (not opted in)


class Restarter:
    def __init__(self, api: ApiObjects, settings: Settings):
        self.api = api
        self.policy = restarts.Policy(
            min_interval=timedelta(seconds=settings.restart_min_interval_seconds),
            retry=timedelta(seconds=settings.restart_retry_seconds),
        )
        self.coalesce = settings.restart_coalesce_seconds
        self.max_per_minute = settings.restart_max_per_minute
        self.metrics = Metrics()
        self.recorder: EventRecorder | None = None
        self._statuses: dict[tuple[str, str], PodStatus] = {}
        self._pods: dict[str, PodFacts] = {}
        # Indexes, so that no step walks every status (the loop is the server's, admissions wait on it).
        self._of_pod: dict[str, set[tuple[str, str]]] = {}  # pod uid -> its statuses (one per class)
        self._members: dict[WorkloadId, set[tuple[str, str]]] = {}  # workload -> its pods' statuses
        self._replica_sets: dict[tuple[str, str], Owner | None] = {}
        self._unresolved: set[tuple[str, str]] = set()
        self._due: dict[WorkloadId, float] = {}
        self._deferred: dict[WorkloadId, str] = {}
        self._rolled: deque[float] = deque()
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()

    # -- lifecycle (on the server's event loop) -------------------------------------------------------------------
    def start(self, metrics: Metrics, recorder: EventRecorder) -> None:
        self.metrics, self.recorder = metrics, recorder
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._work())
        self._thread = threading.Thread(target=self._watch, name="watch-SecretProviderClassPodStatus", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            # asyncio.wait_for (3.11) can drop a cancellation that meets its result: the loop also checks _stop.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5)

    # -- the watch (its own thread) ---------------------------------------------------------------------------
    def _watch(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                listed = self.api.list_all(POD_STATUSES)
                if listed is None:  # the driver's CRD is not installed: nothing reports versions yet
                    self._post(self._replace, [])
                    self.synced.set()
                    self._stop.wait(10)
                    continue
                items, version = listed
                self._post(self._replace, items)
                self.synced.set()
                backoff = 0.2
                while version and not self._stop.is_set():
                    version = self._follow(version)
            except Exception as exc:  # the API went away mid-stream (urllib3's errors), or refused: list again
                log.warning(
                    "restart-on-change: watch failed (%s); retrying in %.1fs",
                    str(exc)[:300] or type(exc).__name__,
                    backoff,
                )
                self.metrics.restart_failures.labels("watch").inc()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _follow(self, version: str) -> str:
        """One watch from `version`; the version to go on from, or "" to list again."""
        for event in self.api.watch(POD_STATUSES, "", self._stop, version):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return ""
                raise ClusterError(f"watch SecretProviderClassPodStatus: {str(obj.get('message'))[:300]}")
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._post(self._apply, kind, obj)
        return version

    def _post(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed under a late event at shutdown
            self._loop.call_soon_threadsafe(fn, *args)

    # -- the store (event loop) ---------------------------------------------------------------------------------
    def _replace(self, items: list[dict[str, Any]]) -> None:
        fresh = {(s.namespace, s.name): s for s in map(PodStatus.parse, items) if s is not None}
        for key in set(self._statuses) - set(fresh):
            self._apply("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
        for status in fresh.values():
            self._put(status)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if kind == "DELETED":
            gone = self._statuses.pop(key, None)
            self._unresolved.discard(key)
            if gone is not None:
                siblings = self._of_pod.get(gone.pod_uid, set())
                siblings.discard(key)
                if not siblings:  # the pod's last class: forget the pod
                    self._of_pod.pop(gone.pod_uid, None)
                facts = self._pods.get(gone.pod_uid) if siblings else self._pods.pop(gone.pod_uid, None)
                if facts is not None and isinstance(facts.workload, WorkloadId):
                    members = self._members.get(facts.workload, set())
                    members.discard(key)
                    if not members:
                        self._members.pop(facts.workload, None)
                    self._schedule(facts.workload, self.coalesce)
            return
        status = PodStatus.parse(obj)
        if status is not None:
            self._put(status)

    def _put(self, status: PodStatus) -> None:
        key = (status.namespace, status.name)
        if self._statuses.get(key) == status:
            return  # the driver rewrites an unchanged status on every remount
        self._statuses[key] = status
        self._of_pod.setdefault(status.pod_uid, set()).add(key)
        facts = self._pods.get(status.pod_uid)
        if facts is None:
            self._unresolved.add(key)
            self._wake.set()
        elif isinstance(facts.workload, WorkloadId):
            self._members.setdefault(facts.workload, set()).add(key)
            self._schedule(facts.workload, self.coalesce)

    def _schedule(self, workload: WorkloadId, delay: float) -> None:
        due = time.monotonic() + delay
        if workload not in self._due or self._due[workload] > due:
            self._due[workload] = due
        self._wake.set()

    # -- the work (event loop; blocking reads and writes in threads) ---------------------------------------------
    async def _work(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                await self._resolve()
                now = time.monotonic()
                for workload in [w for w, at in sorted(self._due.items(), key=lambda i: i[1]) if at <= now]:
                    del self._due[workload]
                    await self._decide(workload)
            except Exception:  # a bug here must not stop restart-on-change for good
                log.exception("restart-on-change failed; going on")
            self._wake.clear()
            wait = min(self._due.values(), default=now + 3600) - time.monotonic()
            if self._unresolved:
                wait = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.05))

    async def _resolve(self) -> None:
        """Find the pod (and its workload) behind every status not yet known."""
        while self._unresolved:
            key = self._unresolved.pop()
            status = self._statuses.get(key)
            if status is None or status.pod_uid in self._pods:
                if status is not None:
                    self._put_known(status)
                continue
            try:
                facts = await asyncio.to_thread(self._pod_facts, status)
            except ClusterError as exc:
                self.metrics.restart_failures.labels("read-pod").inc()
                log.warning("restart-on-change: %s", exc)
                self._unresolved.add(key)
                await asyncio.sleep(self.policy.retry.total_seconds())  # then try again
                return
            if facts is None:
                continue  # the pod is gone (its status follows it)
            self._pods[status.pod_uid] = facts
            self._put_known(status)

    def _put_known(self, status: PodStatus) -> None:
        facts = self._pods[status.pod_uid]
        if isinstance(facts.workload, WorkloadId):
            self._members.setdefault(facts.workload, set()).add((status.namespace, status.name))
            self._schedule(facts.workload, self.coalesce)
        elif isinstance(facts.workload, str) and self.recorder is not None:
            self.recorder.record(
                Notice(
                    Involved("v1", "Pod", status.pod, status.namespace, status.pod_uid),
                    EVENT_RESTART_UNSUPPORTED,
                    f"{RESTART_ON_CHANGE}: kvinject does not restart this pod: {facts.workload}",
                )
            )

    def _pod(self, status: PodStatus) -> dict[str, Any] | None:
        """The opted-in pod a status names, or None (gone, or not opted in). kvinject lists pods, never gets them
        (its RBAC): this one by name and the opt-in label, so no other pod is ever read."""
        selectors = [("fieldSelector", f"metadata.name={status.pod}"), ("labelSelector", f"{INJECT_LABEL}=true")]
        listed = self.api.list_all(f"/api/v1/namespaces/{status.namespace}/pods", selectors)
        found = [p for p in (listed or ([], ""))[0] if (p.get("metadata") or {}).get("uid") == status.pod_uid]
        return found[0] if found else None

    def _pod_facts(self, status: PodStatus) -> PodFacts | None:
        pod = self._pod(status)
        meta = (pod or {}).get("metadata") or {}
        if not opted_in(meta):  # not opted in, or gone (its status follows it, and this is forgotten with it)
            return PodFacts(False, None)
        owner = _controller(meta)
        rs_owner = None
        if owner is not None and owner.kind == "ReplicaSet":
            cache_key = (status.namespace, owner.name)
            if cache_key not in self._replica_sets:
                if len(self._replica_sets) > 4096:  # old ReplicaSets come and go: forget them all now and then
                    self._replica_sets.clear()
                rs = self.api.get(f"/apis/apps/v1/namespaces/{status.namespace}/replicasets/{owner.name}")
                self._replica_sets[cache_key] = _controller((rs or {}).get("metadata") or {})
            rs_owner = self._replica_sets[cache_key]
        return PodFacts(True, restarts.workload_of(status.namespace, owner, rs_owner))

    def _mounts(self, workload: WorkloadId) -> list[PodStatus]:
        found = (self._statuses.get(key) for key in self._members.get(workload, ()))
        return [s for s in found if s is not None and s.mounted]

    def _live(self, status: PodStatus) -> bool:
        pod = self._pod(status)
        return pod is not None and not (pod.get("metadata") or {}).get("deletionTimestamp")

    async def _decide(self, workload: WorkloadId) -> None:
        statuses = self._mounts(workload)  # a snapshot: the store changes only on this loop
        try:
            await asyncio.to_thread(self._decide_now, workload, statuses)
        except Conflict:
            self._schedule(workload, 0)  # another replica (or a user) wrote first: read again, decide again
        except ClusterError as exc:
            self.metrics.restart_failures.labels("decide").inc()
            log.warning("restart-on-change: %s: %s", workload, exc)
            self._schedule(workload, self.policy.retry.total_seconds())

    def _decide_now(self, workload: WorkloadId, statuses: list[PodStatus]) -> None:
        """Read the workload, plan, write (in a thread: blocking calls)."""
        obj = self.api.get(workload_path(workload))
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
        state = restarts.State.decode((meta.get("annotations") or {}).get(RESTART_STATE))
        facts = restarts.Workload(
            workload,
            opted_in(template),
            state,
            restarts.rollout_busy(workload.kind, obj),
            restarts.unsupported(workload.kind, obj),
        )
        suspects = restarts.suspects(state, [s.mount() for s in statuses])
        mounts = [s.mount(self._live(s) if s.pod_uid in suspects else True) for s in statuses]
        action = restarts.plan(facts, mounts, datetime.now(UTC), self.policy)
        log.debug("restart-on-change: %s: %s", workload, action)
        version = str(meta.get("resourceVersion") or "")
        if not isinstance(action, restarts.Defer):
            self._deferred.pop(workload, None)  # the wait is over: a later one is counted again
        if isinstance(action, restarts.Record):
            self.api.patch(workload_path(workload), restarts.record_patch(action.state, version))
        elif isinstance(action, restarts.Defer):
            self._defer(workload, str(action.reason), action.after.total_seconds(), action.why)
        elif isinstance(action, restarts.Restart):
            now = time.monotonic()
            while self._rolled and self._rolled[0] < now - 60:
                self._rolled.popleft()
            if len(self._rolled) >= self.max_per_minute:
                self._defer(workload, CLUSTER_RATE_LIMITED, self._rolled[0] + 60 - now, "too many rolls this minute")
                return
            if self.api.patch(workload_path(workload), restarts.restart_patch(action.state, version)) is None:
                return
            self._rolled.append(now)
            self._restarted(workload, meta, action)

    def _defer(self, workload: WorkloadId, reason: str, after: float, why: str) -> None:
        if self._deferred.get(workload) != reason:  # counted once per wait, not once per look
            self._deferred[workload] = reason
            self.metrics.restarts_deferred.labels(workload.kind, reason).inc()
            log.info("restart-on-change: %s: roll put off (%s): %s", workload, reason, why)
        self._post(self._schedule, workload, max(after, 0.05))

    def _restarted(self, workload: WorkloadId, meta: dict[str, Any], action: restarts.Restart) -> None:
        self.metrics.restarts.labels(workload.kind, REASON_CHANGED).inc()
        changes = "; ".join(str(c) for c in action.changes)
        log.info("restart-on-change: rolled %s: %s", workload, changes)
        if self.recorder is not None:
            notice = Notice(
                Involved("apps/v1", workload.kind, workload.name, workload.namespace, str(meta.get("uid") or "")),
                EVENT_RESTARTED,
                f"kvinject rolled it ({RESTART_ON_CHANGE}): {changes}",
                "Normal",
            )
            self._post(self.recorder.record, notice)
