"""Where the pod lives in each workload kind, for offline previews."""

from __future__ import annotations

from typing import Any

# kind -> path of keys from the object to its pod template
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def template_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template dict (shared with `obj`, so edits land in it), or None."""
    path = TEMPLATE_PATHS.get(str(obj.get("kind")))
    if path is None:
        return None
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def pod_from_template(template: dict[str, Any], owner: str = "") -> dict[str, Any]:
    """The pod a controller would create: no name, a generateName from the owner."""
    meta = dict(template.get("metadata") or {})
    if owner and not meta.get("name"):
        meta.setdefault("generateName", f"{owner}-")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}
