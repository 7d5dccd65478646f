"""Types of the pod fields kvinject reads, checked once at the door.

The apiserver always sends well-typed pods; anything else (a test, a replay, garbage) gets a clear
400 naming the field instead of an exception deep in planning. JSON null counts as absent, as the
apiserver itself treats it.
"""

from __future__ import annotations

from typing import Any

# A schema is a type, a list schema [item], or a dict of field -> schema for an object.
Schema = Any

STR_MAP = {"*": str}
_SECRET_REF = {"name": str}
_ENV = {"name": str, "value": str, "valueFrom": {"secretKeyRef": _SECRET_REF}}
_CONTAINER = {
    "name": str,
    "command": [str],
    "env": [_ENV],
    "envFrom": [{"secretRef": _SECRET_REF}],
    "volumeMounts": [{"name": str, "mountPath": str}],
}
_VOLUME = {
    "name": str,
    "csi": {"driver": str, "volumeAttributes": STR_MAP, "nodePublishSecretRef": {"name": str}},
    "secret": {"secretName": str},
    "emptyDir": {"medium": str},
    "projected": {"sources": [{"secret": _SECRET_REF, "serviceAccountToken": {"audience": str}}]},
}
POD = {
    "metadata": {
        "name": str,
        "generateName": str,
        "labels": STR_MAP,
        "annotations": STR_MAP,
        "ownerReferences": [{"kind": str, "name": str}],
    },
    "spec": {
        "serviceAccountName": str,
        "serviceAccount": str,
        "containers": [_CONTAINER],
        "initContainers": [_CONTAINER],
        "ephemeralContainers": [_CONTAINER],
        "volumes": [_VOLUME],
        "securityContext": {"fsGroup": int},
    },
}
_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def problems(value: Any, schema: Schema = POD, path: str = "object", limit: int = 5) -> list[str]:
    """Up to `limit` fields whose type is not what kvinject reads them as."""
    found: list[str] = []
    _walk(value, schema, [path], found, limit)
    return found


def _name(trail: list[Any]) -> str:
    parts = [trail[0]]
    for part in trail[1:]:
        parts.append(
            f"[{part}]" if isinstance(part, int) else f"[{part[1]!r}]" if isinstance(part, tuple) else f".{part}"
        )
    return "".join(parts)


# `trail` holds the raw parts of the path (an index, a field, ("*", map key)), formatted only when a
# problem is found: a walk over 100,000 nodes must not format 100,000 path strings.
def _walk(value: Any, schema: Schema, trail: list[Any], found: list[str], limit: int) -> None:
    if value is None or len(found) >= limit:
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            found.append(f"{_name(trail)} must be a list")
            return
        item_schema = schema[0]
        leaf = isinstance(item_schema, type) and item_schema is not int
        for i, item in enumerate(value):
            if item is None:  # null is "absent" for a field, but a list item cannot be absent
                found.append(f"{_name(trail)}[{i}] must not be null")
            elif leaf and isinstance(item, item_schema):
                continue
            else:
                trail.append(i)
                _walk(item, item_schema, trail, found, limit)
                trail.pop()
            if len(found) >= limit:
                return
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            found.append(f"{_name(trail)} must be an object")
            return
        if "*" in schema:
            item_schema = schema["*"]
            for key, item in value.items():
                if item is None or (item_schema is str and isinstance(item, str)):
                    continue
                trail.append(("*", key))
                _walk(item, item_schema, trail, found, limit)
                trail.pop()
        for key, sub in schema.items():
            if key == "*":
                continue
            item = value.get(key)
            if item is None or (sub is str and isinstance(item, str)):  # the common leaf, without a call
                continue
            trail.append(key)
            _walk(item, sub, trail, found, limit)
            trail.pop()
    elif schema is int:
        if not isinstance(value, int) or isinstance(value, bool):
            found.append(f"{_name(trail)} must be an integer")
    elif not isinstance(value, schema):
        found.append(f"{_name(trail)} must be {_NAMES.get(schema, schema.__name__)}")
