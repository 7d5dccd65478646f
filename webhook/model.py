"""Slim, immutable records of the cluster objects kvinject decides on.

Caches keep these projections rather than whole API objects, so memory stays
small with many ServiceAccounts and decisions never depend on the data source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook import names


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    namespace: str
    name: str
    uid: str
    client_id: str | None
    tenant_id: str | None
    vault_role: str | None = None  # HashiCorp Vault's Kubernetes-auth role (store vault)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> ServiceAccount:
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        return cls(
            namespace=meta.get("namespace") or "default",
            name=meta.get("name") or "",
            uid=meta.get("uid") or "",
            client_id=annotations.get(names.SA_CLIENT_ID) or None,
            tenant_id=annotations.get(names.SA_TENANT_ID) or None,
            vault_role=annotations.get(names.SA_VAULT_ROLE) or None,
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
        vault = annotations.get(names.VAULT) or labels.get(names.VAULT)
        kept = {k: v for k, v in labels.items() if k.startswith(names.PREFIX)}
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


@dataclass(frozen=True, slots=True)
class Pattern:
    """One `objects` entry of a policy rule: `[<type>|*:]<glob>`; no type means secret."""

    type: str | None  # None: any type
    glob: str

    @classmethod
    def parse(cls, text: str) -> Pattern:
        kind, sep, glob = text.partition(":")
        if not sep:
            return cls("secret", text.lower())
        return cls(None if kind == "*" else kind, glob.lower())

    def __str__(self) -> str:
        if self.type == "secret":
            return self.glob
        return f"{self.type or '*'}:{self.glob}"


@dataclass(frozen=True, slots=True)
class Rule:
    vault: str
    patterns: tuple[Pattern, ...]


@dataclass(frozen=True, slots=True)
class VaultRule:
    """One `allow` entry of a Vault policy: a glob over `<mount>/<path>` (KV v2's logical path, case-sensitive,
    `*` crossing `/` like the trailing `*` of a Vault ACL path) and the key globs it grants there."""

    path: str
    keys: tuple[str, ...]


def auth_mount(text: str) -> str:
    """A Kubernetes-auth mount as Vault's CLI and kvinject write it: `kubernetes`, not `auth/kubernetes/`."""
    mount = text.strip().strip("/")
    return mount[len("auth/") :] if mount.startswith("auth/") else mount


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """A SecretAccessPolicy: which federated ServiceAccounts of one identity may read what.

    Store vault: `client_id` is the Kubernetes-auth role (lowercased, like every index key), `tenant_id` its
    auth mount, and the rules are `VaultRule`s.
    """

    name: str
    client_id: str
    tenant_id: str
    accounts: frozenset[tuple[str, str]]
    rules: tuple[Rule | VaultRule, ...]
    store: str = names.DEFAULT_STORE

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> AccessPolicy:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        ident = spec.get("identity") or {}
        accounts = frozenset(
            (str(a.get("namespace", "")), str(a.get("name", "")))
            for a in spec.get("federatedServiceAccounts") or []
            if isinstance(a, dict)
        )
        vault = ident.get("vault")
        if isinstance(vault, dict):
            return cls(
                name=meta.get("name") or "",
                client_id=str(vault.get("role") or "").lower(),
                tenant_id=auth_mount(str(vault.get("authMount") or "")),
                accounts=accounts,
                rules=tuple(
                    VaultRule(str(r.get("path", "")), tuple(str(k) for k in r.get("keys") or ["*"]))
                    for r in spec.get("allow") or []
                    if isinstance(r, dict)
                ),
                store=names.STORE_VAULT,
            )
        rules = tuple(
            Rule(str(r.get("vault", "")).lower(), tuple(Pattern.parse(str(p)) for p in r.get("objects") or []))
            for r in spec.get("allow") or []
            if isinstance(r, dict)
        )
        return cls(
            name=meta.get("name") or "",
            client_id=str(ident.get("clientId") or "").lower(),
            tenant_id=str(ident.get("tenantId") or "").lower(),
            accounts=accounts,
            rules=rules,
        )
