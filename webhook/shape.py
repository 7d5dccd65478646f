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
    "csi": {"driver": str, "volumeAttributes": STR_MAP},
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
    _walk(value, schema, path, found, limit)
    return found


def _walk(value: Any, schema: Schema, path: str, found: list[str], limit: int) -> None:
    if value is None or len(found) >= limit:
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            found.append(f"{path} must be a list")
            return
        for i, item in enumerate(value):
            if item is None:  # null is "absent" for a field, but a list item cannot be absent
                found.append(f"{path}[{i}] must not be null")
                continue
            _walk(item, schema[0], f"{path}[{i}]", found, limit)
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            found.append(f"{path} must be an object")
            return
        if "*" in schema:
            for key, item in value.items():
                _walk(item, schema["*"], f"{path}[{key!r}]", found, limit)
        for key, sub in schema.items():
            if key != "*" and key in value:
                _walk(value[key], sub, f"{path}.{key}", found, limit)
    elif schema is int:
        if not isinstance(value, int) or isinstance(value, bool):
            found.append(f"{path} must be an integer")
    elif not isinstance(value, schema):
        found.append(f"{path} must be {_NAMES.get(schema, schema.__name__)}")
