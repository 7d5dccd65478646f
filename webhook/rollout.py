"""Whose is a pod or a SecretProviderClass: kvinject's ("opted in") or the cluster's others.

Anything kvinject-related is judged with the server's `enforcement`; the rest (hand-written Secrets Store CSI
volumes, Secret readers, Azure classes of their own) with `not_opted_in_enforcement`, audit by default, so that
installing kvinject denies nothing that ran before it. The shipped ValidatingWebhookConfiguration routes the
same two sets to two webhooks (validate.kvinject.io, failurePolicy Fail; validate-others.kvinject.io, Ignore in
the audit-first default) with matchConditions written after these functions: keep them in step
(tests/e2e/test_rollout.py sends the same kinds of pods through the real apiserver to tell them apart).
"""

from __future__ import annotations

from typing import Any

from webhook import podrefs
from webhook.names import (
    CLASS_NAME_PREFIX,
    INIT_CONTAINER,
    INJECT_LABEL,
    MANAGED_BY,
    PREFIX,
    PROVIDER_CLASS,
    STATUS,
    TOKEN_VOLUME,
    VOLUME_NAME,
)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _mapping(meta: dict[str, Any], key: str) -> dict[str, Any]:
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def pod_is_kvinjects(pod: dict[str, Any]) -> bool:
    """The opt-in label key (any value), kvinject's status annotation, its init container or volumes, a class
    or synced Secret of a kvinject-* name: a pod kvinject must judge with its full enforcement."""
    meta = _meta(pod)
    if INJECT_LABEL in _mapping(meta, "labels") or STATUS in _mapping(meta, "annotations"):
        return True
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return False
    if any(isinstance(c, dict) and c.get("name") == INIT_CONTAINER for c in spec.get("initContainers") or []):
        return True
    if any(isinstance(v, dict) and v.get("name") in (VOLUME_NAME, TOKEN_VOLUME) for v in spec.get("volumes") or []):
        return True
    if any(v.provider_class.startswith(CLASS_NAME_PREFIX) for v in podrefs.csi_volumes(spec)):
        return True
    return any(name.startswith(CLASS_NAME_PREFIX) for name in podrefs.referenced_secrets(spec))


def class_is_kvinjects(obj: dict[str, Any]) -> bool:
    """A generated SecretProviderClass: named kvinject-* or labelled managed-by kvinject (both reserved)."""
    meta = _meta(obj)
    labels = _mapping(meta, "labels")
    return str(meta.get("name") or "").startswith(CLASS_NAME_PREFIX) or all(
        labels.get(k) == v for k, v in MANAGED_BY.items()
    )


def ignored_annotations(pod: dict[str, Any]) -> str:
    """Why kvinject will inject nothing into a pod that asks for it with annotations, or "".

    The mutating webhook only sees pods labelled kvinject.io/inject: "true", so annotations on any other pod are
    silently ignored: this names the problem (for a warning and an event)."""
    meta = _meta(pod)
    annotations = sorted(k for k in _mapping(meta, "annotations") if k.startswith(PREFIX) and k != STATUS)
    labels = _mapping(meta, "labels")
    value = labels.get(INJECT_LABEL)
    if value == "true" or (not annotations and value is None):
        return ""
    if value is None:
        shown = ", ".join(a[:80] for a in annotations[:5]) + (", ..." if len(annotations) > 5 else "")
        return (
            f'the pod has kvinject annotations ({shown}) but not the label {INJECT_LABEL}: "true";'
            " kvinject injects nothing into it: add the label to opt in"
        )
    return (
        f'the pod is labelled {INJECT_LABEL}: {str(value)[:63]!r}, not "true"; kvinject injects nothing into it:'
        ' set the label to "true" to opt in'
    )


def classes_used(pod: dict[str, Any]) -> frozenset[str]:
    """The SecretProviderClasses a pod of kvinject's reads through (its Secrets Store CSI volumes, and the class
    kvinject.io/provider-class names); none for a pod that is not kvinject's. The driver reads them again at every
    mount and rotation, so a change to one of them is judged as kvinject's (webhook/validation.py)."""
    if not pod_is_kvinjects(pod):
        return frozenset()
    spec = pod.get("spec")
    used = {v.provider_class for v in podrefs.csi_volumes(spec if isinstance(spec, dict) else {}) if v.provider_class}
    named = _mapping(_meta(pod), "annotations").get(PROVIDER_CLASS)
    if isinstance(named, str) and named:
        used.add(named)
    return frozenset(used)


def reserved_syncs(obj: dict[str, Any]) -> list[str]:
    """Secret names under kvinject's prefix that a class not kvinject's would sync into: the names of the Secrets
    kvinject's generated classes sync, which kvinject's pods and its checks take to be kvinject's."""
    if class_is_kvinjects(obj):
        return []
    spec = obj.get("spec")
    objects = spec.get("secretObjects") if isinstance(spec, dict) else None
    return [
        str(so["secretName"])
        for so in objects or []
        if isinstance(so, dict) and str(so.get("secretName") or "").startswith(CLASS_NAME_PREFIX)
    ]
