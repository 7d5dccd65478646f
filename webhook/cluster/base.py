"""The cluster data kvinject decides on: typed, indexed records (see model.py) and the lookups admission makes.

Two sources fill a `Cluster` through the same `apply()` path: `KubeCluster` (webhook.cluster.api: list+watch
against the API, live GETs on a miss, SecretProviderClass creation, TokenRequests) and `FileCluster`
(webhook.cluster.file: a YAML file, for running without a cluster).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from webhook.cluster.store import Store
from webhook.model import AccessPolicy, Namespace, SecretProviderClass, ServiceAccount

log = logging.getLogger(__name__)

Key = tuple[str, str]


class ClusterError(Exception):
    """The API could not answer; the message is safe to show to a user."""


def _synced_secrets(spc: SecretProviderClass) -> list[Hashable]:
    return [(spc.namespace, str(so.get("secretName"))) for so in spc.secret_objects if isinstance(so, dict)]


@dataclass
class Stores:
    """One typed store per kind of record."""

    service_accounts: Store[ServiceAccount]
    namespaces: Store[Namespace]
    provider_classes: Store[SecretProviderClass]
    policies: Store[AccessPolicy]

    @classmethod
    def empty(cls) -> Stores:
        return cls(
            service_accounts=Store[ServiceAccount](lambda r: (r.namespace, r.name), {}),
            namespaces=Store[Namespace](lambda r: r.name, {}),
            provider_classes=Store[SecretProviderClass](lambda r: (r.namespace, r.name), {"synced": _synced_secrets}),
            policies=Store[AccessPolicy](lambda r: r.name, {"client": lambda r: [r.client_id]}),
        )


@dataclass(frozen=True)
class Kind:
    """How an API object of one kind becomes a record, and which store keeps it."""

    projection: Callable[[dict[str, Any]], Any]
    store: Callable[[Stores], Store[Any]]
    replace: Callable[[Stores, Store[Any]], None]


def _kind(projection: Callable[[dict[str, Any]], Any], attribute: str) -> Kind:
    return Kind(projection, lambda s: getattr(s, attribute), lambda s, store: setattr(s, attribute, store))


KINDS: dict[str, Kind] = {
    "ServiceAccount": _kind(ServiceAccount.from_object, "service_accounts"),
    "Namespace": _kind(Namespace.from_object, "namespaces"),
    "SecretProviderClass": _kind(SecretProviderClass.from_object, "provider_classes"),
    "SecretAccessPolicy": _kind(AccessPolicy.from_object, "policies"),
}


class Cluster(ABC):
    def __init__(self) -> None:
        self.stores = Stores.empty()

    # -- filling ---------------------------------------------------------
    def apply(self, event: str, obj: dict[str, Any]) -> None:
        """Apply one watch-style event (ADDED, MODIFIED, DELETED) for any known kind."""
        kind = KINDS.get(str(obj.get("kind")))
        if kind is None:
            log.debug("ignoring %s %s", obj.get("kind"), (obj.get("metadata") or {}).get("name"))
            return
        record = kind.projection(obj)
        if event == "DELETED":
            kind.store(self.stores).delete(record)
        else:
            kind.store(self.stores).put(record)

    # -- typed accessors ---------------------------------------------------
    @property
    def provider_classes(self) -> Store[SecretProviderClass]:
        return self.stores.provider_classes

    def policies_for(self, client_id: str) -> list[AccessPolicy]:
        """Policies of one identity: an index lookup, whatever the number of policies."""
        return self.stores.policies.by("client", client_id.lower())

    def classes_syncing(self, namespace: str, secret: str) -> list[SecretProviderClass]:
        """SecretProviderClasses whose secretObjects sync to Secret `namespace/secret`."""
        return self.stores.provider_classes.by("synced", (namespace, secret))

    # -- reading ---------------------------------------------------------
    async def namespace(self, name: str) -> Namespace | None:
        found = self.stores.namespaces.get(name)
        if found is None:
            found = await self._fetch_namespace(name)
        return found

    async def service_account(self, namespace: str, name: str) -> ServiceAccount | None:
        found = self.stores.service_accounts.get((namespace, name))
        if found is None:
            found = await self._fetch_service_account(namespace, name)
        return found

    async def secret_provider_class(self, namespace: str, name: str) -> SecretProviderClass | None:
        found = self.stores.provider_classes.get((namespace, name))
        if found is None:
            found = await self._fetch_provider_class(namespace, name)
        return found

    async def namespace_pods(self, namespace: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The pods of a namespace for which `keep` is true, read live (every pod is listed, page by page, and only
        those kept are held): kvinject keeps no pods. A file source holds none."""
        return []

    # -- source-specific ---------------------------------------------------
    @abstractmethod
    def ready(self) -> bool: ...

    @abstractmethod
    async def _fetch_namespace(self, name: str) -> Namespace | None: ...

    @abstractmethod
    async def _fetch_service_account(self, namespace: str, name: str) -> ServiceAccount | None: ...

    @abstractmethod
    async def _fetch_provider_class(self, namespace: str, name: str) -> SecretProviderClass | None: ...

    @abstractmethod
    async def _create(self, obj: dict[str, Any]) -> bool:
        """Create `obj`; False if an object of that name already exists."""

    async def server_version(self) -> tuple[int, int] | None:
        """The API server's (major, minor) version; None when the source cannot tell (a file)."""
        return None

    async def request_token(self, namespace: str, name: str, audience: str, seconds: int) -> str:
        """A short-lived token for a ServiceAccount (TokenRequest); never logged or stored."""
        raise ClusterError("minting ServiceAccount tokens needs the Kubernetes API (not a --cluster file)")

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        """Write a new Event (webhook/cluster/events.py calls this off the event loop); a file source logs it."""
        log.info(
            "event %s %s on %s %s/%s: %s",
            event.get("type"),
            event.get("reason"),
            event["involvedObject"].get("kind"),
            namespace,
            event["involvedObject"].get("name"),
            event.get("message"),
        )

    def update_event(self, namespace: str, name: str, changes: dict[str, Any]) -> bool:
        """Merge `changes` (count, lastTimestamp) into an Event; False if it is gone."""
        log.info("event %s/%s repeated: %s", namespace, name, changes)
        return True

    async def ensure_provider_class(self, obj: dict[str, Any]) -> SecretProviderClass | None:
        """Create a generated SecretProviderClass unless one of that name exists.

        Returns the stored class when one already existed (whoever wrote it: the caller compares it with
        `obj`), None when this call created it.
        """
        meta = obj["metadata"]
        stored = self.provider_classes.get((meta["namespace"], meta["name"]))
        if stored is not None:
            return stored
        if not await self._create(obj):
            stored = await self._fetch_provider_class(meta["namespace"], meta["name"])
            if stored is None:
                raise ClusterError(f"SecretProviderClass {meta['namespace']}/{meta['name']} exists but cannot be read")
            return stored
        self.apply("ADDED", obj)
        return None

    def load_once(self) -> None:  # noqa: B027 - a file is loaded whole already
        """Fill every store once, for a one-shot command (no watch); raises ClusterError if the source cannot."""

    def start(self) -> None:  # noqa: B027 - static sources have nothing to start
        """Start filling (no-op for static sources)."""

    def stop(self) -> None:  # noqa: B027
        """Stop background work (no-op for static sources)."""
