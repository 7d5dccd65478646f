"""Slim, immutable records of the cluster objects kvinject decides on.

Caches keep these projections rather than whole API objects, so memory stays
small with many ServiceAccounts and decisions never depend on the data source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook import contract


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    namespace: str
    name: str
    uid: str
    client_id: str | None
    tenant_id: str | None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> ServiceAccount:
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        return cls(
            namespace=meta.get("namespace") or "default",
            name=meta.get("name") or "",
            uid=meta.get("uid") or "",
            client_id=annotations.get(contract.SA_CLIENT_ID) or None,
            tenant_id=annotations.get(contract.SA_TENANT_ID) or None,
        )


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    default_vault: str | None = None
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> Namespace:
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        labels = meta.get("labels") or {}
        vault = annotations.get(contract.VAULT) or labels.get(contract.VAULT)
        kept = {k: v for k, v in labels.items() if k.startswith(contract.PREFIX)}
        return cls(name=meta.get("name") or "", default_vault=vault or None, labels=kept)


@dataclass(frozen=True, slots=True)
class SecretProviderClass:
    namespace: str
    name: str
    provider: str
    parameters: dict[str, str] = field(hash=False, compare=False)
    secret_objects: list[dict[str, Any]] = field(hash=False, compare=False)
    labels: dict[str, str] = field(hash=False, compare=False)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> SecretProviderClass:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        params = spec.get("parameters") or {}
        return cls(
            namespace=meta.get("namespace") or "default",
            name=meta.get("name") or "",
            provider=spec.get("provider") or "",
            parameters={str(k): str(v) for k, v in params.items()},
            secret_objects=list(spec.get("secretObjects") or []),
            labels=dict(meta.get("labels") or {}),
        )
