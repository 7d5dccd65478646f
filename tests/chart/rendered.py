"""Reading a rendering: the objects of a kind, the one object, the kvinject container and its env."""

from __future__ import annotations

import re
from typing import Any

Objects = list[dict[str, Any]]


def objects_of(rendered: Objects, kind: str) -> Objects:
    return [o for o in rendered if o["kind"] == kind]


def one(rendered: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects_of(rendered, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def pod_spec(rendered: Objects) -> dict[str, Any]:
    spec: dict[str, Any] = one(rendered, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(rendered: Objects) -> dict[str, Any]:
    (c,) = pod_spec(rendered)["containers"]
    return c


def env(rendered: Objects) -> dict[str, str]:
    """The container's environment as the kubelet gives it: an annotation fieldRef resolved from the template."""
    annotations = one(rendered, "Deployment")["spec"]["template"]["metadata"].get("annotations") or {}
    out = {}
    for e in container(rendered)["env"]:
        path = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
        match = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
        out[e["name"]] = annotations.get(match.group(1), "") if match else e.get("value", "")
    return out


def webhooks(rendered: Objects) -> dict[str, dict[str, Any]]:
    """Every webhook of every configuration, by webhook name."""
    out: dict[str, dict[str, Any]] = {}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for config in objects_of(rendered, kind):
            for hook in config["webhooks"]:
                out[hook["name"]] = hook
    return out
