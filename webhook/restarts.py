"""restart-on-change (csi mode): the pure planner. Given what the Secrets Store CSI driver reports a workload's
pods mount (its SecretProviderClassPodStatus objects), kvinject's record on the workload and the workload's own
status, decide: nothing, record the versions, roll the workload, or look again later.

No I/O here (an import-linter contract holds it): `webhook.restarter` reads the cluster, calls `plan` and writes
what it returns. The record lives on the workload (annotation `kvinject.io/restart-state` on its metadata, never
its pod template), so a restarted or replaced kvinject decides from the same state and never rolls a workload
twice for one change; the restart itself is the pod-template annotation `kubectl rollout restart` writes.

A change is a live pod of a settled workload mounting a version other than the recorded one. Settled means what
`kubectl rollout status` calls done: then every live pod is of the current template, so the old pods of a
rollout (kvinject's or anyone's) are never mistaken for a change, and nothing is rolled during a rollout.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from webhook.names import RESTART_STATE as STATE_ANNOTATION
from webhook.names import RESTARTED_AT

# The kinds kvinject rolls, the way `kubectl rollout restart` does; anything else is reported, never rolled.
KINDS = ("Deployment", "StatefulSet", "DaemonSet")
_NOT_ROLLED = {
    "Job": "a Job's pods run to completion: restarting would rerun its work",
    "CronJob": "a CronJob's pods run to completion: the next run mounts the new version",
    "ReplicaSet": "a ReplicaSet without a Deployment does not replace its pods when its template changes",
}
MAX_STATE = 128 * 1024  # the record's encoded size; Kubernetes caps all annotations of an object at 256 KiB


@dataclass(frozen=True, slots=True)
class Owner:
    """A controller owner reference: kind and name (the namespace is the pod's)."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True, order=True)
class WorkloadId:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def workload_of(namespace: str, pod_owner: Owner | None, replica_set_owner: Owner | None) -> WorkloadId | str:
    """The workload kvinject would roll for a pod, or why it rolls none. `replica_set_owner`: the controller of
    the pod's ReplicaSet, when the pod has one (a Deployment's pods do)."""
    if pod_owner is None:
        return "a bare pod has no controller to roll it: delete and recreate it, or run it in a Deployment"
    owner = pod_owner
    if pod_owner.kind == "ReplicaSet" and replica_set_owner is not None:
        owner = replica_set_owner
    if owner.kind in KINDS:
        return WorkloadId(owner.kind, namespace, owner.name)
    return _NOT_ROLLED.get(owner.kind, f"its controller is a {owner.kind[:64]}, which kvinject does not roll")


def key(provider_class: str, object_id: str) -> str:
    """One mounted object of a workload: the class it comes through and the provider's object id."""
    return f"{provider_class}/{object_id}"


@dataclass(frozen=True, slots=True)
class Mount:
    """One SecretProviderClassPodStatus: what one pod mounts through one class. `live`: the pod still exists
    under this uid and is not terminating (set by the caller where it checked)."""

    pod: str
    pod_uid: str
    provider_class: str
    versions: tuple[tuple[str, str], ...]  # (object id, version)
    live: bool = True

    def keyed(self) -> Iterable[tuple[str, str]]:
        return ((key(self.provider_class, oid), version) for oid, version in self.versions)


@dataclass(frozen=True, slots=True)
class State:
    """kvinject's record on a workload: the version of each object it last rolled to (or first saw), and when
    it last rolled it."""

    versions: Mapping[str, str]
    restarted_at: datetime | None = None

    def encode(self) -> str:
        doc: dict[str, Any] = {"versions": dict(sorted(self.versions.items()))}
        if self.restarted_at is not None:
            doc["restartedAt"] = _timestamp(self.restarted_at)
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> State | None:
        """The record, or None when there is none or it is not kvinject's format (then it is written afresh)."""
        if not text or len(text) > MAX_STATE:
            return None
        try:
            doc = json.loads(text)
            versions = doc["versions"]
            at = doc.get("restartedAt")
            if not isinstance(versions, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in versions.items()
            ):
                return None
            return cls(dict(versions), datetime.fromisoformat(at).astimezone(UTC) if isinstance(at, str) else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def _timestamp(at: datetime) -> str:
    """RFC 3339 in UTC, seconds: what `kubectl rollout restart` writes."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the workload's own status -------------------------------------------------------------------------------


def unsupported(kind: str, obj: Mapping[str, Any]) -> str | None:
    """Why patching this workload's template would replace no pod, or None."""
    spec = obj.get("spec") or {}
    if kind == "StatefulSet" and (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return "its updateStrategy is OnDelete: a changed template replaces no pod until the pods are deleted"
    if kind == "DaemonSet" and (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return "its updateStrategy is OnDelete: a changed template replaces no pod until the pods are deleted"
    return None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def rollout_busy(kind: str, obj: Mapping[str, Any]) -> str | None:
    """Why the workload's rollout is not done, or None when it is: `kubectl rollout status`'s rules."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    generation, observed = _int(meta.get("generation")), _int(status.get("observedGeneration"))
    if observed < generation or (kind == "StatefulSet" and observed == 0):
        return "its controller has not yet observed its latest spec"
    replicas = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    if kind == "Deployment":
        if spec.get("paused") is True:
            return "it is paused"
        if updated < replicas:
            return f"{updated} of {replicas} replicas are updated"
        if _int(status.get("replicas")) > updated:
            return f"{_int(status.get('replicas')) - updated} old replicas are still running"
        if _int(status.get("availableReplicas")) < updated:
            return f"{_int(status.get('availableReplicas'))} of {updated} updated replicas are available"
        return None
    if kind == "StatefulSet":
        if _int(status.get("readyReplicas")) < replicas:
            return f"{_int(status.get('readyReplicas'))} of {replicas} replicas are ready"
        partition = _int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition"))
        if partition > 0:
            return None if updated >= replicas - partition else f"{updated} of {replicas - partition} are updated"
        if status.get("updateRevision") != status.get("currentRevision"):
            return "its pods are moving to a new revision"
        return None
    if kind == "DaemonSet":
        desired = _int(status.get("desiredNumberScheduled"))
        if _int(status.get("updatedNumberScheduled")) < desired:
            return f"{_int(status.get('updatedNumberScheduled'))} of {desired} pods are updated"
        if _int(status.get("numberAvailable")) < desired:
            return f"{_int(status.get('numberAvailable'))} of {desired} pods are available"
        return None
    return f"kvinject does not roll a {kind}"


# -- the plan --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """What the planner needs of a workload, read fresh before it decides."""

    id: WorkloadId
    opted_in: bool  # its pod template carries kvinject.io/inject=true and kvinject.io/restart-on-change=true
    state: State | None
    busy: str | None = None  # rollout_busy
    unsupported: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    min_interval: timedelta  # between two rolls of one workload
    retry: timedelta  # how soon a workload whose rollout is not done is looked at again


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    was: str
    now: str
    pods: int  # live pods that mount `now`

    def __str__(self) -> str:
        return f"{self.key} changed from version {self.was or '(none)'} to {self.now or '(none)'} ({self.pods} pods)"


class DeferReason(StrEnum):
    ROLLOUT = "rollout-in-progress"
    RATE_LIMITED = "rate-limited"


@dataclass(frozen=True, slots=True)
class Idle:
    why: str


@dataclass(frozen=True, slots=True)
class Record:
    """Write the record without rolling (first sight, objects added or gone)."""

    state: State


@dataclass(frozen=True, slots=True)
class Restart:
    changes: tuple[Change, ...]
    state: State  # the record written with the restart, in the same patch


@dataclass(frozen=True, slots=True)
class Defer:
    reason: DeferReason
    why: str
    after: timedelta
    changes: tuple[Change, ...] = field(default=())


Action = Idle | Record | Restart | Defer


def _seen(mounts: Iterable[Mount]) -> dict[str, Counter[str]]:
    seen: dict[str, Counter[str]] = {}
    for mount in mounts:
        if mount.live:
            for k, version in mount.keyed():
                seen.setdefault(k, Counter())[version] += 1
    return seen


def suspects(state: State | None, mounts: Iterable[Mount]) -> set[str]:
    """The pods (uids) whose mounts differ from the record: the only ones the caller must check are live."""
    if state is None:
        return set()
    return {m.pod_uid for m in mounts for k, v in m.keyed() if k in state.versions and state.versions[k] != v}


def _majority(counts: Counter[str]) -> str:
    """The version most pods mount (ties: the smallest, so every replica of kvinject picks the same)."""
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]


def plan(workload: Workload, mounts: Iterable[Mount], now: datetime, policy: Policy) -> Action:
    if workload.unsupported:
        return Idle(workload.unsupported)
    if not workload.opted_in:
        return Idle("its pod template does not opt in to restart-on-change")
    seen = _seen(mounts)
    if not seen:
        return Idle("no live pod reports mounted versions")
    state = workload.state
    agreed = {k: next(iter(c)) for k, c in seen.items() if len(c) == 1}
    if state is None:
        if len(agreed) < len(seen):
            # Pods started across a rotation, or rotating one by one: record once they agree.
            return Idle("its pods mount different versions and there is no record yet")
        return Record(State(agreed))
    changes = tuple(
        Change(k, state.versions[k], version, pods)
        for k, counts in sorted(seen.items())
        if k in state.versions
        for version, pods in sorted(counts.items())
        if version != state.versions[k]
    )
    if not changes:
        versions = dict(state.versions)
        versions.update({k: v for k, v in agreed.items() if k not in versions})
        if workload.busy is None:  # settled: every live pod is of the current template, so unmounted keys are gone
            versions = {k: v for k, v in versions.items() if k in seen}
        if versions != dict(state.versions):
            return Record(State(versions, state.restarted_at))
        return Idle("no mounted version changed")
    if workload.busy is not None:
        return Defer(DeferReason.ROLLOUT, f"its rollout is not done: {workload.busy}", policy.retry, changes)
    if state.restarted_at is not None and now < state.restarted_at + policy.min_interval:
        wait = state.restarted_at + policy.min_interval - now
        return Defer(DeferReason.RATE_LIMITED, f"it was rolled at {_timestamp(state.restarted_at)}", wait, changes)
    # Each object's new version: what most pods mount besides the recorded one (a rollout mounts the latest
    # anyway; were it newer still, the next look rolls once more).
    versions = {
        k: _majority(Counter({v: n for v, n in c.items() if v != state.versions.get(k)}) or c) for k, c in seen.items()
    }
    return Restart(changes, State(versions, now))


def restart_patch(state: State, resource_version: str) -> dict[str, Any]:
    """The merge patch that rolls a workload and records why, in one write: the restart annotation in its pod
    template (as `kubectl rollout restart` writes it), the record on its metadata, and the resourceVersion it
    was decided at (a precondition: another replica of kvinject that decided first makes this one a conflict)."""
    assert state.restarted_at is not None
    return {
        "metadata": {"resourceVersion": resource_version, "annotations": {STATE_ANNOTATION: state.encode()}},
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: _timestamp(state.restarted_at)}}}},
    }


def record_patch(state: State, resource_version: str) -> dict[str, Any]:
    """The merge patch that records versions without rolling (metadata only: the workload's generation stays)."""
    return {"metadata": {"resourceVersion": resource_version, "annotations": {STATE_ANNOTATION: state.encode()}}}
