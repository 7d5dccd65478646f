"""Pure, idempotent mutators that turn a pod plus a decision into JSON-patch operations.

Each mutator adds only what is missing, accepts what kvinject itself added
before (so re-admitting its own output yields no operation), and reports a
collision when the user already wrote something else under the same name.
The pod is never modified; operations are built directly, never by diffing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook import contract, targets
from webhook.names import (
    CLASS_ATTRIBUTE,
    CSI_DRIVER,
    ENV_FS_GROUP,
    ENV_OBJECTS,
    ENV_OUTPUT_DIR,
    ENV_PREFIX,
    INIT_COMMAND,
    INIT_CONTAINER,
    INJECTED_CONTAINERS,
    MOUNT_PATH,
    OUTPUT_DIR,
    REFRESH,
    REFRESH_CONTAINER,
    REFRESH_FLAG,
    STATUS,
    STATUS_INJECTED,
    TOKEN_FILE,
    TOKEN_VOLUME,
    VOLUME_NAME,
)
from webhook.targets import Target


class PlanError(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def escape(token: str) -> str:
    """RFC 6901 escaping of one JSON-pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True, slots=True)
class EnvSource:
    """One env var to set from a key of a (synced) Kubernetes Secret."""

    name: str
    secret: str
    key: str

    def entry(self) -> dict[str, Any]:
        return {"name": self.name, "valueFrom": {"secretKeyRef": {"name": self.secret, "key": self.key}}}


@dataclass
class Patch:
    """Collects operations; appends to lists that may not exist yet."""

    ops: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _created: dict[str, dict[str, Any]] = field(default_factory=dict)

    def append(self, parent: dict[str, Any], parent_path: str, key: str, value: Any) -> None:
        """Append `value` to list `parent[key]` at JSON pointer `parent_path/key`."""
        path = f"{parent_path}/{key}"
        if parent.get(key) is not None:
            self.ops.append({"op": "add", "path": f"{path}/-", "value": value})
        elif path in self._created:
            self._created[path]["value"].append(value)
        else:
            op = {"op": "add", "path": path, "value": [value]}
            self._created[path] = op
            self.ops.append(op)

    def insert(self, parent: dict[str, Any], parent_path: str, key: str, index: int, value: Any) -> None:
        if parent.get(key) is None:
            self.append(parent, parent_path, key, value)
        else:
            self.ops.append({"op": "add", "path": f"{parent_path}/{key}/{index}", "value": value})

    def set_annotations(self, pod: dict[str, Any], wanted: dict[str, str]) -> None:
        """Set each annotation that differs, in one operation where the map does not exist yet."""
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations")
        changed = {k: v for k, v in wanted.items() if annotations is None or annotations.get(k) != v}
        if not changed:
            return
        if "metadata" not in pod:
            self.ops.append({"op": "add", "path": "/metadata", "value": {"annotations": changed}})
        elif annotations is None:
            self.ops.append({"op": "add", "path": "/metadata/annotations", "value": changed})
        else:
            self.ops.extend(
                {"op": "add", "path": f"/metadata/annotations/{escape(k)}", "value": v} for k, v in changed.items()
            )

    def set_annotation(self, pod: dict[str, Any], key: str, value: str) -> None:
        self.set_annotations(pod, {key: value})

    def mark_injected(self, pod: dict[str, Any], selection: targets.Selection) -> None:
        """kvinject's status, and at the first injection its record of the targets."""
        wanted = {STATUS: STATUS_INJECTED}
        if selection.record is not None:
            wanted = {INJECTED_CONTAINERS: selection.record, **wanted}
        self.set_annotations(pod, wanted)


def select(patch: Patch, pod: dict[str, Any], request: contract.InjectionRequest) -> targets.Selection:
    """The targets, with what is wrong with them as problems: recorded ones without kvinject's mount. Named
    containers not in the pod yet are left to the caller (a later webhook may add them)."""
    selection = targets.select(pod, request)
    patch.problems.extend(selection.problems)
    patch.problems.extend(targets.missing_mounts(selection))
    return selection


def injectable(selection: targets.Selection) -> list[Target]:
    """The targets to add kvinject's parts to: a recorded one without its mount is a problem, not repaired."""
    return [t for t in selection.targets if t.name not in selection.recorded or t.mounts_volume()]


def add_volume(patch: Patch, pod: dict[str, Any], volume: dict[str, Any], same: bool) -> None:
    """Add `volume` unless an equal one (`same`) is present; another of that name collides."""
    spec = pod.get("spec") or {}
    existing = next((v for v in spec.get("volumes") or [] if v.get("name") == volume["name"]), None)
    if existing is None:
        patch.append(spec, "/spec", "volumes", volume)
    elif not same:
        patch.problems.append(f"the pod already has a volume named {volume['name']!r} that kvinject did not add")


def csi_volume(provider_class: str) -> dict[str, Any]:
    return {
        "name": VOLUME_NAME,
        "csi": {"driver": CSI_DRIVER, "readOnly": True, "volumeAttributes": {CLASS_ATTRIBUTE: provider_class}},
    }


def is_same_csi_volume(pod: dict[str, Any], provider_class: str) -> bool:
    for v in (pod.get("spec") or {}).get("volumes") or []:
        if v.get("name") == VOLUME_NAME:
            csi = v.get("csi") or {}
            return (
                csi.get("driver") == CSI_DRIVER
                and csi.get("readOnly") is True
                and (csi.get("volumeAttributes") or {}).get(CLASS_ATTRIBUTE) == provider_class
            )
    return False


def add_mount(patch: Patch, target: Target, volume: str, mount_path: str) -> None:
    for m in target.container.get("volumeMounts") or []:
        if m.get("name") == volume and m.get("mountPath") == mount_path and m.get("readOnly") is True:
            return
        if m.get("mountPath") == mount_path:
            patch.problems.append(
                f"container {target.name!r} already mounts {m.get('name')!r} at {mount_path}:"
                f" choose another {MOUNT_PATH}"
            )
            return
        if m.get("name") == volume:
            patch.problems.append(f"container {target.name!r} already mounts volume {volume!r} at {m.get('mountPath')}")
            return
    patch.append(
        target.container, target.path, "volumeMounts", {"name": volume, "mountPath": mount_path, "readOnly": True}
    )


def env_index(target: Target) -> dict[str, dict[str, Any]]:
    """The container's env entries by name (the first wins, as the kubelet resolves it)."""
    index: dict[str, dict[str, Any]] = {}
    for e in target.container.get("env") or []:
        index.setdefault(str(e.get("name")), e)
    return index


def add_env(patch: Patch, target: Target, source: EnvSource, existing: dict[str, dict[str, Any]]) -> None:
    wanted = source.entry()
    present = existing.get(source.name)
    if present is None:
        patch.append(target.container, target.path, "env", wanted)
    elif present != wanted:
        patch.problems.append(
            f"container {target.name!r} already defines env {source.name!r}:"
            f" remove it or the {ENV_PREFIX}{source.name} annotation"
        )


def csi(
    pod: dict[str, Any],
    request: contract.InjectionRequest,
    provider_class: str,
    env: Sequence[EnvSource],
) -> list[dict[str, Any]]:
    """Operations that mount `provider_class` and set `env` in the target containers."""
    patch = Patch()
    selection = select(patch, pod, request)
    add_volume(patch, pod, csi_volume(provider_class), is_same_csi_volume(pod, provider_class))
    for target in injectable(selection):
        add_mount(patch, target, VOLUME_NAME, request.mount_path)
        existing = env_index(target)
        for source in env:
            add_env(patch, target, source, existing)
    patch.problems.extend(targets.strays(selection, [(s.name, s.secret, s.key) for s in env]))
    patch.mark_injected(pod, selection)
    if patch.problems:
        raise PlanError(patch.problems)
    return patch.ops


# -- mode init -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitSpec:
    """What the kvinject-fetch init container needs, decided by the provider from settings and identity."""

    image: str
    env: tuple[tuple[str, str], ...]  # the provider's variables: identity, token file, endpoints
    token_dir: str  # where the projected ServiceAccount token is mounted
    token_audience: str
    volume_size: str
    token_sources: tuple[dict[str, Any], ...] = ()  # more projections beside the token (a CA bundle)


def fetch_objects(request: contract.InjectionRequest) -> str:
    """KVINJECT_OBJECTS: the objects to write, as compact JSON (names only, never values)."""
    # A Vault ref's key is added only where there is one, so Azure's objects read as they always have.
    return orjson.dumps(
        [
            {
                "alias": m.alias,
                "vault": m.ref.vault,
                "name": m.ref.name,
                "type": m.ref.type.value,
                "version": m.ref.version,
                **({"key": m.ref.key} if m.ref.key else {}),
            }
            for m in sorted(request.objects, key=lambda o: o.alias)
        ]
    ).decode()


def init_container(pod: dict[str, Any], request: contract.InjectionRequest, spec: InitSpec) -> dict[str, Any]:
    env = [
        {"name": ENV_OBJECTS, "value": fetch_objects(request)},
        {"name": ENV_OUTPUT_DIR, "value": OUTPUT_DIR},
        *({"name": name, "value": value} for name, value in spec.env),
    ]
    fs_group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
    if isinstance(fs_group, int):
        env.append({"name": ENV_FS_GROUP, "value": str(fs_group)})
    return {
        "name": INIT_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(INIT_COMMAND),
        "env": env,
        "volumeMounts": [
            {"name": VOLUME_NAME, "mountPath": OUTPUT_DIR},
            {"name": TOKEN_VOLUME, "mountPath": spec.token_dir, "readOnly": True},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "File",
    }


# The sidecar runs for the pod's whole life, so its requests count all along: smaller than kvinject-fetch's.
REFRESH_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}


def refresh_container(pod: dict[str, Any], request: contract.InjectionRequest, spec: InitSpec) -> dict[str, Any]:
    """The refresh sidecar: kvinject-fetch's image, environment and volumes, re-reading every `request.refresh`
    seconds; `restartPolicy: Always` makes it a native sidecar, started once kvinject-fetch has finished."""
    assert request.refresh is not None
    container = init_container(pod, request, spec)
    return {
        **container,
        "name": REFRESH_CONTAINER,
        "command": [*INIT_COMMAND, REFRESH_FLAG, f"{request.refresh}s"],
        "restartPolicy": "Always",
        "resources": REFRESH_RESOURCES,
    }


def adds_container(ops: Sequence[dict[str, Any]], name: str) -> bool:
    """Whether `ops` add a container named `name` (alone, or in a list created with it)."""
    for op in ops:
        value = op.get("value")
        values = value if isinstance(value, list) else [value]
        if op.get("op") == "add" and any(isinstance(v, dict) and v.get("name") == name for v in values):
            return True
    return False


# Fields the apiserver defaults on a container and that change nothing kvinject-fetch reads or does.
_DEFAULTED = frozenset({"terminationMessagePath"})


def init_differences(existing: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """How an init container named kvinject-fetch differs from the one kvinject injects (field names only).

    Every field kvinject sets must be equal (image, command, the whole env with the object list and identity,
    resources, securityContext); nothing else may be added but mounts of other volumes, which kvinject-fetch
    never reads.
    """
    found = [key for key, value in expected.items() if key != "volumeMounts" and existing.get(key) != value]
    mounts = [m for m in existing.get("volumeMounts") or [] if isinstance(m, dict)]
    if any(m not in mounts for m in expected["volumeMounts"]) or any(
        m.get("name") in (VOLUME_NAME, TOKEN_VOLUME) and m not in expected["volumeMounts"] for m in mounts
    ):
        found.append("volumeMounts")
    found += sorted(k for k in existing if k not in expected and k not in _DEFAULTED)
    return found


def _has_volume(pod: dict[str, Any], name: str, check: Any) -> bool | None:
    """None: absent; True: present and ours (per `check`); False: present and someone else's."""
    for v in (pod.get("spec") or {}).get("volumes") or []:
        if v.get("name") == name:
            return bool(check(v))
    return None


def _same_volume(expected: dict[str, Any]) -> Any:
    """A check that a volume is exactly `expected` (its source; the apiserver may add a defaultMode)."""

    def check(v: dict[str, Any]) -> bool:
        if "emptyDir" in expected:
            return set(v) == {"name", "emptyDir"} and v.get("emptyDir") == expected["emptyDir"]
        projected = v.get("projected") or {}
        return (
            set(v) == {"name", "projected"}
            and set(projected) <= {"sources", "defaultMode"}
            and projected.get("sources") == expected["projected"]["sources"]
        )

    return check


def init(pod: dict[str, Any], request: contract.InjectionRequest, spec: InitSpec) -> list[dict[str, Any]]:
    """Operations for mode init: the in-memory volume, the token volume, the init container, read-only mounts."""
    patch = Patch()
    selection = select(patch, pod, request)
    pod_spec = pod.get("spec") or {}
    for name, volume in (
        (VOLUME_NAME, {"name": VOLUME_NAME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.volume_size}}),
        (
            TOKEN_VOLUME,
            {
                "name": TOKEN_VOLUME,
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": spec.token_audience,
                                "expirationSeconds": 3600,
                                "path": TOKEN_FILE,
                            }
                        },
                        *spec.token_sources,
                    ]
                },
            },
        ),
    ):
        present = _has_volume(pod, name, _same_volume(volume))
        if present is None:
            patch.append(pod_spec, "/spec", "volumes", volume)
        elif not present:
            patch.problems.append(f"the pod already has a volume named {name!r} that kvinject did not add")

    inits = pod_spec.get("initContainers") or []
    existing = next((c for c in inits if c.get("name") == INIT_CONTAINER), None)
    container = init_container(pod, request, spec)
    if existing is None:
        if request.init_first:
            patch.insert(pod_spec, "/spec", "initContainers", 0, container)
        else:
            patch.append(pod_spec, "/spec", "initContainers", container)
    else:
        _judge_existing(patch, existing, container, INIT_CONTAINER)
    # Where ours are inserted among the pod's init containers (indexes before the insertions).
    inserted = [0] if existing is None and request.init_first else []
    inserted += _add_refresh(patch, pod, request, spec, existing)
    for target in injectable(selection):
        if target.path.startswith("/spec/initContainers/") and inserted:
            # Inserting ours shifts every existing init container behind them.
            index = int(target.path.rsplit("/", 1)[1])
            index += sum(1 for at in inserted if at <= index)
            target = Target(f"/spec/initContainers/{index}", target.container)
        add_mount(patch, target, VOLUME_NAME, request.mount_path)
    patch.problems.extend(targets.strays(selection, []))
    patch.mark_injected(pod, selection)
    if patch.problems:
        raise PlanError(patch.problems)
    return patch.ops


def _judge_existing(patch: Patch, existing: dict[str, Any], expected: dict[str, Any], name: str) -> None:
    """An init container of kvinject's name must be exactly the one kvinject injects."""
    command = existing.get("command")
    if not isinstance(command, list) or command[: len(INIT_COMMAND)] != list(INIT_COMMAND):
        patch.problems.append(f"the pod already has an init container named {name!r} that kvinject did not add")
        return
    differences = init_differences(existing, expected)
    if differences:
        patch.problems.append(
            f"the pod already has an init container named {name!r} that is not the one kvinject"
            f" injects (differs in {', '.join(differences[:12])})"
        )


def _add_refresh(
    patch: Patch,
    pod: dict[str, Any],
    request: contract.InjectionRequest,
    spec: InitSpec,
    fetch: dict[str, Any] | None,
) -> list[int]:
    """The refresh sidecar right after kvinject-fetch (so startup still waits for the first fetch), or the problem
    with one already there; returns where it is inserted among the pod's init containers ([] when appended)."""
    pod_spec = pod.get("spec") or {}
    inits = pod_spec.get("initContainers") or []
    index = next((i for i, c in enumerate(inits) if isinstance(c, dict) and c.get("name") == REFRESH_CONTAINER), None)
    if request.refresh is None:
        if index is not None:
            patch.problems.append(
                f"the pod has an init container named {REFRESH_CONTAINER!r}, which kvinject adds only with"
                f" {REFRESH}: rename it, or set {REFRESH}"
            )
        return []
    sidecar = refresh_container(pod, request, spec)
    if index is not None:
        _judge_existing(patch, inits[index], sidecar, REFRESH_CONTAINER)
        fetch_index = next((i for i, c in enumerate(inits) if c is fetch), None)
        if fetch_index is not None and index < fetch_index:
            patch.problems.append(
                f"init container {REFRESH_CONTAINER!r} runs before {INIT_CONTAINER!r}: kvinject places it right after"
            )
        return []
    if fetch is None:  # both are added now: the sidecar follows kvinject-fetch wherever that goes
        if request.init_first:
            patch.insert(pod_spec, "/spec", "initContainers", 1, sidecar)
            return [0]
        patch.append(pod_spec, "/spec", "initContainers", sidecar)
        return []
    after = next(i for i, c in enumerate(inits) if c is fetch) + 1
    if after == len(inits):
        patch.append(pod_spec, "/spec", "initContainers", sidecar)
        return []
    patch.ops.append({"op": "add", "path": f"/spec/initContainers/{after}", "value": sidecar})
    return [after]
