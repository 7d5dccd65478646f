"""Pure readers of what a pod spec refers to: Secrets Store CSI volumes and Secrets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from webhook.names import CLASS_ATTRIBUTE, CSI_DRIVER


@dataclass(frozen=True, slots=True)
class CsiVolume:
    name: str
    provider_class: str  # "" when the volume does not name one
    # Every attribute, secretProviderClass included: the driver copies them over the class's parameters.
    attributes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    node_publish_secret: bool = False  # a nodePublishSecretRef: service-principal credentials for the provider

    @property
    def overrides(self) -> list[str]:
        """Attribute names that override the class's parameters (all but secretProviderClass)."""
        return sorted(k for k in self.attributes if k != CLASS_ATTRIBUTE)


def _containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                yield c


def csi_volumes(spec: dict[str, Any]) -> list[CsiVolume]:
    result = []
    for v in spec.get("volumes") or []:
        csi = v.get("csi") if isinstance(v, dict) else None
        if isinstance(csi, dict) and csi.get("driver") == CSI_DRIVER:
            attrs = {str(k): str(val) for k, val in (csi.get("volumeAttributes") or {}).items() if val is not None}
            secret_ref = bool(csi.get("nodePublishSecretRef"))
            result.append(CsiVolume(str(v.get("name", "")), attrs.get(CLASS_ATTRIBUTE, ""), attrs, secret_ref))
    return result


def referenced_secrets(spec: dict[str, Any]) -> list[str]:
    """Names of Secrets the pod reads: env secretKeyRef, envFrom secretRef, secret and projected volumes."""
    names: dict[str, None] = {}
    for c in _containers(spec):
        for e in c.get("env") or []:
            ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}) if isinstance(e, dict) else {}
            if ref.get("name"):
                names[str(ref["name"])] = None
        for f in c.get("envFrom") or []:
            ref = (f.get("secretRef") or {}) if isinstance(f, dict) else {}
            if ref.get("name"):
                names[str(ref["name"])] = None
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        secret = v.get("secret") or {}
        if secret.get("secretName"):
            names[str(secret["secretName"])] = None
        for source in (v.get("projected") or {}).get("sources") or []:
            ref = (source.get("secret") or {}) if isinstance(source, dict) else {}
            if ref.get("name"):
                names[str(ref["name"])] = None
    return list(names)
