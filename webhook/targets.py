"""Which containers kvinject injects into, and the record of them it leaves on the pod.

The default targets are the containers present when kvinject first injects a pod. kvinject records their names
in `kvinject.io/injected-containers`; from then on (a reinvocation after a later webhook changed the pod, and
/validate on the final pod) the record, not the pod's current containers, is the default. A container another
webhook adds later gets nothing unless `kvinject.io/containers` names it, and one that carries kvinject's volume
or env without being a target is a finding.

Three states, from the pod itself:
- first injection: no record, or no kvinject volume yet: targets are the named containers, else every container
  in spec.containers; their names are to be recorded;
- recorded: the record (trusted only beside kvinject's status, see `contract`) plus the named containers; a
  recorded container must already mount kvinject's volume, so a record widened after the fact is caught;
- legacy: injected by a kvinject that kept no record (an upgrade in progress, or the record removed): the
  containers that mount kvinject's volume plus the named ones; nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from webhook import contract
from webhook.names import (
    CONTAINERS,
    INIT_CONTAINER,
    INJECTED_CONTAINERS,
    REFRESH_CONTAINER,
    STATUS,
    STATUS_INJECTED,
    VOLUME_NAME,
)


@dataclass(frozen=True, slots=True)
class Target:
    path: str  # JSON pointer of the container, e.g. /spec/containers/1
    container: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.container.get("name", ""))

    def mounts_volume(self) -> bool:
        return any(
            isinstance(m, dict) and m.get("name") == VOLUME_NAME for m in self.container.get("volumeMounts") or []
        )


@dataclass(frozen=True, slots=True)
class Selection:
    targets: tuple[Target, ...]  # to inject into now
    others: tuple[Target, ...]  # every other container and init container (never kvinject-fetch in mode init)
    recorded: frozenset[str]  # targets that must mount kvinject's volume already (the trusted record)
    record: str | None  # the value of the record to write; None when the pod has one (or is legacy)
    pending: tuple[str, ...]  # named containers not (yet) in the pod
    problems: tuple[str, ...]
    known: tuple[str, ...]  # every container's name, for messages

    def describe(self) -> str:
        """The targets, as a denial names them."""
        return ", ".join(t.name for t in self.targets) or "none"


def _containers(pod: dict[str, Any], request: contract.InjectionRequest) -> tuple[list[Target], list[Target]]:
    spec = pod.get("spec") or {}
    apps = [Target(f"/spec/containers/{i}", c) for i, c in enumerate(spec.get("containers") or [])]
    inits = [Target(f"/spec/initContainers/{i}", c) for i, c in enumerate(spec.get("initContainers") or [])]
    ours = own_containers(request)
    inits = [t for t in inits if t.name not in ours]  # kvinject's own init containers are never targets
    return apps, inits


def own_containers(request: contract.InjectionRequest) -> frozenset[str]:
    """kvinject's own init containers for `request`: kvinject-fetch in mode init, and its refresh sidecar when asked
    for (a kvinject-refresh without kvinject.io/refresh is someone else's, judged like any container)."""
    if request.mode is not contract.Mode.INIT:
        return frozenset()
    return frozenset({INIT_CONTAINER, REFRESH_CONTAINER} if request.refresh is not None else {INIT_CONTAINER})


def select(pod: dict[str, Any], request: contract.InjectionRequest) -> Selection:
    """The targets of `request` in `pod` as it is now (pure; the pod is not modified). Targets are chosen by name and
    kept in the pod's order (init containers first)."""
    apps, inits = _containers(pod, request)
    everyone = inits + apps
    names = {t.name for t in everyone}
    named = [n for n in request.containers or () if n not in own_containers(request)]
    present = {n for n in named if n in names}
    pending = tuple(n for n in named if n not in names)
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    volumes = (pod.get("spec") or {}).get("volumes") or []
    has_volume = any(isinstance(v, dict) and v.get("name") == VOLUME_NAME for v in volumes)
    legacy = request.recorded is None and has_volume and annotations.get(STATUS) == STATUS_INJECTED
    problems: list[str] = []
    recorded: frozenset[str] = frozenset()
    if request.recorded is not None:
        if not has_volume:  # a record and status on a pod without kvinject's volume: written by its author
            problems.append(
                f"the pod carries {INJECTED_CONTAINERS} and {STATUS}: {STATUS_INJECTED} but no volume {VOLUME_NAME}:"
                " kvinject did not inject it; remove both annotations"
            )
        gone = [n for n in request.recorded if n not in names]
        if gone:
            problems.append(
                f"{INJECTED_CONTAINERS} records {', '.join(gone)} as injected, but the pod has no container of"
                " that name"
            )
        recorded = frozenset(request.recorded) & names
        wanted: set[str] = set(recorded | present)
    elif legacy:
        wanted = {t.name for t in everyone if t.mounts_volume()} | present
    else:
        wanted = present if request.containers is not None else {t.name for t in apps}
    chosen = [t for t in everyone if t.name in wanted]
    first = request.recorded is None and not legacy
    record = ",".join(dict.fromkeys(t.name for t in chosen)) if first else None
    return Selection(
        targets=tuple(chosen),
        others=tuple(t for t in everyone if t.name not in wanted),
        recorded=recorded,
        record=record,
        pending=pending,
        problems=tuple(problems),
        known=tuple(sorted(names)),
    )


def pending_problem(selection: Selection) -> str:
    """Named containers missing from the final pod: a mistake in the annotation (or one a later webhook removed)."""
    return (
        f"{CONTAINERS}: no container named {', '.join(selection.pending)} in the pod"
        f" (containers: {', '.join(selection.known) or 'none'})"
    )


def pending_warning(selection: Selection) -> list[str]:
    """At mutation a named container may still be added by a later webhook (kvinject is called again then)."""
    if not selection.pending:
        return []
    return [
        f"{pending_problem(selection)}: kvinject injects into it if a later webhook adds it; otherwise the pod is"
        " denied"
    ]


def missing_mounts(selection: Selection) -> list[str]:
    """Recorded targets without kvinject's volume: kvinject mounted it in each at its first injection, so the record
    was widened (or the mount removed) after the fact."""
    return [
        f"container {t.name!r} is recorded in {INJECTED_CONTAINERS} as injected but does not mount {VOLUME_NAME}"
        for t in selection.targets
        if t.name in selection.recorded and not t.mounts_volume()
    ]


def env_key(entry: Any) -> tuple[str, str, str] | None:
    """An env entry read from a Secret's key, as (variable, Secret, key); None for any other entry."""
    if not isinstance(entry, dict):
        return None
    source = entry.get("valueFrom")
    ref = source.get("secretKeyRef") if isinstance(source, dict) else None
    if not isinstance(ref, dict):
        return None
    return str(entry.get("name")), str(ref.get("name")), str(ref.get("key"))


def strays(selection: Selection, env: Iterable[tuple[str, str, str]]) -> list[str]:
    """Containers that carry kvinject's volume mount or one of its env entries (`env_key`s) without being a
    target: a copy made by someone else (another webhook, or the pod's author without naming the container)."""
    ours = frozenset(env)
    found: list[str] = []
    for other in selection.others:
        what = []
        if other.mounts_volume():
            what.append(f"mounts kvinject's volume {VOLUME_NAME}")
        copied = [str(e.get("name")) for e in other.container.get("env") or [] if ours and env_key(e) in ours]
        if copied:
            what.append(f"sets kvinject's env {', '.join(copied[:10])}")
        if what:
            found.append(
                f"container {other.name!r} {' and '.join(what)} but is not one kvinject injects into (its targets:"
                f" {selection.describe()}); kvinject gives its secrets to the containers present when it first"
                f" injected the pod ({INJECTED_CONTAINERS}) and to those named by {CONTAINERS}"
            )
    return found
