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
    CLASS_ATTRIBUTE,
    CLASS_NAME_PREFIX,
    CONTAINERS,
    INIT_CONTAINER,
    INJECT_LABEL,
    INJECTED_CONTAINERS,
    PREFIX,
    STATUS,
    STATUS_INJECTED,
    TOKEN_VOLUME,
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
    if request.mode is contract.Mode.INIT:  # kvinject's own init container is never a target
        inits = [t for t in inits if t.name != INIT_CONTAINER]
    return apps, inits


def select(pod: dict[str, Any], request: contract.InjectionRequest) -> Selection:
    """The targets of `request` in `pod` as it is now (pure; the pod is not modified). Targets are chosen by name and
    kept in the pod's order (init containers first)."""
    apps, inits = _containers(pod, request)
    everyone = inits + apps
    names = {t.name for t in everyone}
    named = [n for n in request.containers or () if not (request.mode is contract.Mode.INIT and n == INIT_CONTAINER)]
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
    # The Azure token volume (mode init) is kvinject-fetch's alone, targets included: a container mounting it would
    # read Key Vault with the pod's identity itself, outside what kvinject fetched and the policy judged.
    found = [
        f"container {t.name!r} mounts kvinject's token volume {TOKEN_VOLUME}: only {INIT_CONTAINER} reads it"
        for t in (*selection.targets, *selection.others)
        if any(isinstance(m, dict) and m.get("name") == TOKEN_VOLUME for m in t.container.get("volumeMounts") or [])
    ]
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


def _mapping(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _reserved_volumes(spec: dict[str, Any]) -> dict[str, str]:
    """The pod's volumes that hold kvinject's secrets or credentials, by name, with what each holds: its own volume
    and token volume, and any volume of a kvinject-* Secret or SecretProviderClass."""
    found: dict[str, str] = {}
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        name = str(v.get("name", ""))
        secret, projected, csi = (_mapping(v, key) for key in ("secret", "projected", "csi"))
        sources = [s.get("secret") for s in projected.get("sources") or [] if isinstance(s, dict)]
        attributes = _mapping(csi, "volumeAttributes")
        if name in (VOLUME_NAME, TOKEN_VOLUME):
            found[name] = "kvinject's volume" if name == VOLUME_NAME else "kvinject's token volume"
        elif str(secret.get("secretName", "")).startswith(CLASS_NAME_PREFIX) or any(
            isinstance(s, dict) and str(s.get("name", "")).startswith(CLASS_NAME_PREFIX) for s in sources
        ):
            found[name] = "a volume of a kvinject-* Secret"
        elif str(attributes.get(CLASS_ATTRIBUTE, "")).startswith(CLASS_NAME_PREFIX):
            found[name] = "a volume of a kvinject-* SecretProviderClass"
    return found


def ephemeral_problems(spec: dict[str, Any], added: Iterable[dict[str, Any]]) -> list[str]:
    """What ephemeral containers (`kubectl debug`) added to a pod take of kvinject's: a mount of a volume holding its
    secrets or its Azure token, or an env/envFrom read of a kvinject-* Secret. Always a finding: an ephemeral container
    is never a target (kvinject chooses targets when it admits the pod; ephemeral containers come later, through a
    subresource kvinject does not mutate), and its image runs with the pod's identity, so letting one mount the token
    or the secrets would hand them to whoever may debug the pod, outside any SecretAccessPolicy decision."""
    reserved = _reserved_volumes(spec)
    found: list[str] = []
    for c in added:
        what = [
            f"mounts {reserved[m['name']]} {m['name']}"
            for m in c.get("volumeMounts") or []
            if isinstance(m, dict) and m.get("name") in reserved
        ]
        refs = [env_key(e) for e in c.get("env") or []]
        what += [
            f"reads kvinject's Secret {r[1]} into {r[0]}" for r in refs if r and r[1].startswith(CLASS_NAME_PREFIX)
        ]
        what += [
            f"reads kvinject's Secret {f['secretRef'].get('name')} (envFrom)"
            for f in c.get("envFrom") or []
            if isinstance(f, dict)
            and isinstance(f.get("secretRef"), dict)
            and str(f["secretRef"].get("name", "")).startswith(CLASS_NAME_PREFIX)
        ]
        if what:
            found.append(
                f"ephemeral container {str(c.get('name'))[:63]!r} {' and '.join(what)}: kvinject gives its secrets and"
                " credentials only to the containers it injects into when it admits the pod, never to one added later"
            )
    return found


# What kvinject writes or reads on a pod it injected: its record, the opt-in and the contract it injected by.
_GUARDED_LABELS = (INJECT_LABEL,)


def record_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """kvinject.io/ annotations (its record and the contract it injected by) and the opt-in label changed on a pod
    kvinject injected: later checks (ephemeral containers, the report) trust them, so they are fixed at admission.
    Nothing for a pod kvinject did not inject."""
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    if (old_meta.get("annotations") or {}).get(STATUS) != STATUS_INJECTED:
        return []
    changed: list[str] = []
    for field, wanted in (("annotations", lambda k: k.startswith(PREFIX)), ("labels", lambda k: k in _GUARDED_LABELS)):
        before = {k: v for k, v in (old_meta.get(field) or {}).items() if wanted(str(k))}
        after = {k: v for k, v in (new_meta.get(field) or {}).items() if wanted(str(k))}
        for key in sorted(before.keys() | after.keys()):
            if key not in after:
                changed.append(f"{field[:-1]} {key[:100]} removed")
            elif key not in before:
                changed.append(f"{field[:-1]} {key[:100]} added")
            elif before[key] != after[key]:
                changed.append(f"{field[:-1]} {key[:100]} changed")
    return changed
