"""Kubernetes Events kvinject writes about what it denied or would deny: the one module that writes them.

Admission never waits for an event: `record()` only counts it in memory; a background task writes, at most
`per_flush` API calls a flush, one Event per (object, reason, message) that later repeats only update (`count`,
`lastTimestamp`), as kubectl and the controllers aggregate theirs. What does not fit is dropped and counted
(kvinject_events_total{result="dropped"}). The messages are kvinject's denials: names, never secret values.
The cluster source writes them (`Cluster.create_event`, `Cluster.update_event`): the API for `KubeCluster`, the
log for a `--cluster` file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from webhook.cluster.base import Cluster, ClusterError
from webhook.metrics import Metrics
from webhook.names import EVENT_COMPONENT
from webhook.review import Request

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024  # events.k8s.io's limit for a note; kubectl shows it whole


@dataclass(frozen=True, slots=True)
class Involved:
    """The object an event is about (`involvedObject`)."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str = ""

    def reference(self) -> dict[str, str]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "namespace": self.namespace}
        return {**ref, "uid": self.uid} if self.uid else ref


@dataclass(frozen=True, slots=True)
class Notice:
    involved: Involved
    reason: str
    message: str
    type: str = "Warning"


def involved_in(request: Request) -> Involved | None:
    """Whom an event about this request goes to: a pod's controller (a ReplicaSet, Job, StatefulSet, DaemonSet:
    a pod being created does not exist yet, and a denied one never will), else the object itself by name (with
    its uid when the request carries one: a bare pod's event shows in `kubectl get events`, and once admitted in
    `kubectl describe`); a pod getting ephemeral containers is named itself."""
    obj = request.object
    if obj is None or not request.namespace:
        return None
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    if request.kind == "Pod" and request.operation == "CREATE":  # an ephemeral container's pod exists: itself
        owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict) and o.get("name")]
        owner = next((o for o in owners if o.get("controller") is True), owners[0] if owners else None)
        if owner is not None:
            return Involved(
                str(owner.get("apiVersion", "")),
                str(owner.get("kind", "")),
                str(owner["name"]),
                request.namespace,
                str(owner.get("uid") or ""),
            )
    name = meta.get("name") or meta.get("generateName")
    if not isinstance(name, str) or not name:
        return None
    version = "v1" if not request.group else f"{request.group}/{request.raw.get('kind', {}).get('version', 'v1')}"
    return Involved(version, request.kind, name, request.namespace, str(meta.get("uid") or ""))


@dataclass
class _Pending:
    notice: Notice
    count: int = 0  # occurrences not yet written
    name: str = ""  # the Event's name once created
    total: int = 0  # occurrences written


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Aggregates notices in memory and writes them in the background, never from the admission path."""

    def __init__(
        self,
        cluster: Cluster,
        metrics: Metrics,
        instance: str,
        interval: float = 1.0,
        per_flush: int = 50,
        capacity: int = 1000,
    ):
        self.cluster = cluster
        self.metrics = metrics
        self.instance = instance[:128]
        self.interval = interval
        self.per_flush = per_flush
        self.capacity = capacity
        self._entries: OrderedDict[tuple[Involved, str, str], _Pending] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def record(self, notice: Notice) -> None:
        """Count one occurrence; constant time, no I/O."""
        notice = Notice(notice.involved, notice.reason, notice.message[:MAX_MESSAGE], notice.type)
        key = (notice.involved, notice.reason, notice.message)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.capacity and not self._evict():
                self.metrics.events.labels("dropped").inc()
                return
            entry = self._entries[key] = _Pending(notice)
        entry.count += 1
        self._entries.move_to_end(key)

    def _evict(self) -> bool:
        """Forget the oldest written entry with nothing pending (its Event stays; a repeat makes a new one)."""
        for key, entry in self._entries.items():
            if not entry.count:
                del self._entries[key]
                return True
        return False

    async def flush(self) -> None:
        """Write what is pending, oldest first, up to `per_flush` calls; the rest waits for the next flush."""
        due = [entry for entry in self._entries.values() if entry.count][: self.per_flush]
        for entry in due:
            count, entry.count = entry.count, 0
            try:
                await asyncio.to_thread(self._write, entry, count)
            except ClusterError as exc:
                self.metrics.events.labels("failed").inc()
                log.warning("could not write event %s for %s: %s", entry.notice.reason, entry.notice.involved, exc)
            else:
                self.metrics.events.labels("written").inc()

    def _write(self, entry: _Pending, count: int) -> None:
        notice, now = entry.notice, _now()
        namespace = notice.involved.namespace
        if entry.name and self.cluster.update_event(
            namespace, entry.name, {"count": entry.total + count, "lastTimestamp": now}
        ):
            entry.total += count
            return
        key = "/".join((notice.involved.kind, notice.involved.uid, notice.reason, notice.message, self.instance))
        digest = hashlib.sha256(f"{key}/{now}".encode()).hexdigest()[:16]
        entry.name, entry.total = f"{notice.involved.name[:200].rstrip('.-')}.{digest}", count
        self.cluster.create_event(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": entry.name, "namespace": namespace},
                "involvedObject": notice.involved.reference(),
                "reason": notice.reason,
                "message": notice.message,
                "type": notice.type,
                "count": count,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "source": {"component": EVENT_COMPONENT},
                "reportingComponent": EVENT_COMPONENT,
                "reportingInstance": self.instance,
            },
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # a bug here must not stop later events
                log.exception("writing events failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Best effort, bounded: what is pending at shutdown must not hold the exit when the API does not answer.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), self.interval * 2)
