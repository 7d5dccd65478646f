"""The cluster data kvinject decides on: the only module that imports `kubernetes`.

`Cluster` holds projections (see model.py) in memory and answers lookups;
two sources fill it through the same `apply()` path:

- `KubeCluster`: list+watch informers against the API (one thread each), a
  live GET when a ServiceAccount is not cached yet (it may have been created
  a moment ago in the same `kubectl apply`), and SecretProviderClass creation;
- `FileCluster`: a multi-document YAML file of the same objects, for running
  without a cluster; created objects are kept in memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
import yaml

from webhook.model import AccessPolicy, Namespace, SecretProviderClass, ServiceAccount

log = logging.getLogger(__name__)

Key = tuple[str, str]


class ClusterError(Exception):
    """The API could not answer; the message is safe to show to a user."""


@dataclass(frozen=True)
class Resource:
    kind: str
    list_path: str
    required: bool  # readiness waits for it; optional ones may be absent (CRD not installed)


SERVICE_ACCOUNTS = Resource("ServiceAccount", "/api/v1/serviceaccounts", True)
NAMESPACES = Resource("Namespace", "/api/v1/namespaces", True)
PROVIDER_CLASSES = Resource("SecretProviderClass", "/apis/secrets-store.csi.x-k8s.io/v1/secretproviderclasses", False)
ACCESS_POLICIES = Resource("SecretAccessPolicy", "/apis/kvinject.io/v1alpha1/secretaccesspolicies", False)
RESOURCES = (SERVICE_ACCOUNTS, NAMESPACES, PROVIDER_CLASSES, ACCESS_POLICIES)


R = TypeVar("R")


class Store(Generic[R]):
    """Records by key, plus secondary indexes kept in step on every put and delete."""

    def __init__(self, key: Callable[[R], Hashable], indexers: dict[str, Callable[[R], Iterable[Hashable]]]):
        self._key = key
        self._indexers = indexers
        self.items: dict[Hashable, R] = {}
        self.indexes: dict[str, dict[Hashable, dict[Hashable, R]]] = {name: {} for name in indexers}

    def put(self, record: R) -> None:
        key = self._key(record)
        self._unindex(key)
        self.items[key] = record
        for name, values in self._indexers.items():
            for value in values(record):
                self.indexes[name].setdefault(value, {})[key] = record

    def delete(self, record: R) -> None:
        key = self._key(record)
        self._unindex(key)
        self.items.pop(key, None)

    def _unindex(self, key: Hashable) -> None:
        old = self.items.get(key)
        if old is None:
            return
        for name, values in self._indexers.items():
            for value in values(old):
                bucket = self.indexes[name].get(value)
                if bucket is not None:
                    bucket.pop(key, None)
                    if not bucket:
                        del self.indexes[name][value]

    def get(self, key: Hashable) -> R | None:
        return self.items.get(key)

    def by(self, index: str, value: Hashable) -> list[R]:
        return list(self.indexes[index].get(value, {}).values())

    def __len__(self) -> int:
        return len(self.items)


def _synced_secrets(spc: SecretProviderClass) -> list[Hashable]:
    return [(spc.namespace, str(so.get("secretName"))) for so in spc.secret_objects if isinstance(so, dict)]


def new_stores() -> dict[str, Store[Any]]:
    return {
        "ServiceAccount": Store[ServiceAccount](lambda r: (r.namespace, r.name), {}),
        "Namespace": Store[Namespace](lambda r: r.name, {}),
        "SecretProviderClass": Store[SecretProviderClass](lambda r: (r.namespace, r.name), {"synced": _synced_secrets}),
        "SecretAccessPolicy": Store[AccessPolicy](lambda r: r.name, {"client": lambda r: [r.client_id]}),
    }


PROJECTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "ServiceAccount": ServiceAccount.from_object,
    "Namespace": Namespace.from_object,
    "SecretProviderClass": SecretProviderClass.from_object,
    "SecretAccessPolicy": AccessPolicy.from_object,
}


class Cluster(ABC):
    def __init__(self) -> None:
        self.stores = new_stores()

    # -- filling ---------------------------------------------------------
    def apply(self, event: str, obj: dict[str, Any]) -> None:
        """Apply one watch-style event (ADDED, MODIFIED, DELETED) for any known kind."""
        kind = str(obj.get("kind"))
        project = PROJECTIONS.get(kind)
        if project is None:
            log.debug("ignoring %s %s", kind, (obj.get("metadata") or {}).get("name"))
            return
        record = project(obj)
        if event == "DELETED":
            self.stores[kind].delete(record)
        else:
            self.stores[kind].put(record)

    @property
    def provider_classes(self) -> Store[SecretProviderClass]:
        return self.stores["SecretProviderClass"]

    def policies_for(self, client_id: str) -> list[AccessPolicy]:
        """Policies of one identity: an index lookup, whatever the number of policies."""
        return self.stores["SecretAccessPolicy"].by("client", client_id.lower())

    def classes_syncing(self, namespace: str, secret: str) -> list[SecretProviderClass]:
        """SecretProviderClasses whose secretObjects sync to Secret `namespace/secret`."""
        return self.stores["SecretProviderClass"].by("synced", (namespace, secret))

    # -- reading ---------------------------------------------------------
    async def namespace(self, name: str) -> Namespace | None:
        found = self.stores["Namespace"].get(name)
        if found is None:
            found = await self._fetch_namespace(name)
        return found

    async def service_account(self, namespace: str, name: str) -> ServiceAccount | None:
        found = self.stores["ServiceAccount"].get((namespace, name))
        if found is None:
            found = await self._fetch_service_account(namespace, name)
        return found

    async def secret_provider_class(self, namespace: str, name: str) -> SecretProviderClass | None:
        found = self.stores["SecretProviderClass"].get((namespace, name))
        if found is None:
            found = await self._fetch_provider_class(namespace, name)
        return found

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

    async def request_token(self, namespace: str, name: str, audience: str, seconds: int) -> str:
        """A short-lived token for a ServiceAccount (TokenRequest); never logged or stored."""
        raise ClusterError("minting ServiceAccount tokens needs the Kubernetes API (not a --cluster file)")

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

    def start(self) -> None:  # noqa: B027 - static sources have nothing to start
        """Start filling (no-op for static sources)."""

    def stop(self) -> None:  # noqa: B027
        """Stop background work (no-op for static sources)."""


class FileCluster(Cluster):
    """Objects from a multi-document YAML file; what kvinject creates is kept in `created`."""

    def __init__(self, documents: Iterable[dict[str, Any]]) -> None:
        super().__init__()
        self.created: list[dict[str, Any]] = []
        for doc in documents:
            self.apply("ADDED", doc)

    @classmethod
    def from_path(cls, *paths: Path) -> FileCluster:
        """Objects from one or more multi-document YAML files, uids filled in deterministically."""
        docs: list[dict[str, Any]] = []
        for path in paths:
            try:
                loaded = [d for d in yaml.safe_load_all(path.read_text()) if d]
            except (OSError, yaml.YAMLError) as exc:
                raise ClusterError(f"cannot read cluster file {path}: {exc}") from None
            bad = [i for i, d in enumerate(loaded) if not isinstance(d, dict) or "kind" not in d]
            if bad:
                raise ClusterError(f"cluster file {path}: documents {bad} are not Kubernetes objects")
            docs.extend(_expand_lists(loaded))
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("uid", _stable_uid(doc))
        return cls(docs)

    def ready(self) -> bool:
        return True

    async def _fetch_namespace(self, name: str) -> Namespace | None:
        return None

    async def _fetch_service_account(self, namespace: str, name: str) -> ServiceAccount | None:
        return None

    async def _fetch_provider_class(self, namespace: str, name: str) -> SecretProviderClass | None:
        return None

    async def _create(self, obj: dict[str, Any]) -> bool:
        self.created.append(obj)
        return True


def _expand_lists(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for doc in docs:
        if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
            yield from (i for i in doc.get("items") or [] if isinstance(i, dict))
        else:
            yield doc


def _stable_uid(doc: dict[str, Any]) -> str:
    """A deterministic stand-in uid for file objects, so generated names are reproducible."""
    meta = doc.get("metadata") or {}
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kvinject:{doc.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"))


class KubeCluster(Cluster):
    """Watch-backed caches over the real API, through the official client's transport."""

    def __init__(self, api_client: Any, resources: tuple[Resource, ...] = RESOURCES, timeout: float = 3.0):
        super().__init__()
        self._api = api_client
        self._resources = resources
        self._timeout = timeout
        self._synced = {r.kind: threading.Event() for r in resources}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_config(cls, kubeconfig: str | None) -> KubeCluster:
        from kubernetes import client, config

        try:
            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            else:
                try:
                    config.load_incluster_config()  # type: ignore[no-untyped-call]
                except config.ConfigException:
                    config.load_kube_config()  # type: ignore[no-untyped-call]
        except Exception as exc:  # the loaders raise several unrelated types
            raise ClusterError(f"no usable Kubernetes configuration: {exc}") from None
        configuration = client.Configuration.get_default_copy()
        # urllib3 would retry connects 3 times, each up to the timeout: a hung apiserver would hold an
        # admission for 4x the budget. kvinject's informers retry by themselves; live reads must not.
        configuration.retries = False
        return cls(client.ApiClient(configuration))

    # -- HTTP ----------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        timeout: Any = None,
    ) -> Any:
        """One API call; returns the urllib3 response (status unchecked, body unread)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        _, url, headers, body, _ = self._api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self._api.call_api(method, url, headers, body, _request_timeout=timeout or self._timeout).response

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            resp = self._request("GET", path)
            data = resp.data
        except Exception as exc:
            raise ClusterError(f"the Kubernetes API did not answer GET {path}: {type(exc).__name__}") from None
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise ClusterError(f"GET {path}: HTTP {resp.status} {_message(data)}")
        result: dict[str, Any] = orjson.loads(data)
        return result

    async def _fetch(self, kind: str, path: str) -> dict[str, Any] | None:
        """GET one object and cache it, so a burst of pods pays for one request."""
        obj = await asyncio.to_thread(self._get, path)
        if obj is not None:
            obj["kind"] = kind
            self.apply("ADDED", obj)
        return obj

    async def _fetch_namespace(self, name: str) -> Namespace | None:
        obj = await self._fetch("Namespace", f"/api/v1/namespaces/{name}")
        return Namespace.from_object(obj) if obj else None

    async def _fetch_service_account(self, namespace: str, name: str) -> ServiceAccount | None:
        obj = await self._fetch("ServiceAccount", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
        return ServiceAccount.from_object(obj) if obj else None

    async def _fetch_provider_class(self, namespace: str, name: str) -> SecretProviderClass | None:
        path = f"/apis/secrets-store.csi.x-k8s.io/v1/namespaces/{namespace}/secretproviderclasses/{name}"
        obj = await self._fetch("SecretProviderClass", path)
        return SecretProviderClass.from_object(obj) if obj else None

    def _post(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        path = f"/apis/secrets-store.csi.x-k8s.io/v1/namespaces/{meta['namespace']}/secretproviderclasses"
        try:
            resp = self._request("POST", path, body=obj)
            data = resp.data
        except Exception as exc:
            raise ClusterError(f"could not create SecretProviderClass {meta['name']}: {type(exc).__name__}") from None
        if resp.status == 404:
            raise ClusterError("the SecretProviderClass API is not installed: install the Secrets Store CSI driver")
        if resp.status not in (200, 201, 409):
            raise ClusterError(
                f"could not create SecretProviderClass {meta['namespace']}/{meta['name']}:"
                f" HTTP {resp.status} {_message(data)}"
            )
        return bool(resp.status != 409)

    async def _create(self, obj: dict[str, Any]) -> bool:
        return await asyncio.to_thread(self._post, obj)

    def _token(self, namespace: str, name: str, audience: str, seconds: int) -> str:
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": seconds},
        }
        try:
            resp = self._request("POST", path, body=body)
            data = resp.data
        except Exception as exc:
            raise ClusterError(f"could not request a token for {namespace}/{name}: {type(exc).__name__}") from None
        if resp.status not in (200, 201):
            raise ClusterError(f"TokenRequest for {namespace}/{name}: HTTP {resp.status} {_message(data)}")
        token = (orjson.loads(data).get("status") or {}).get("token")
        if not isinstance(token, str) or not token:
            raise ClusterError(f"TokenRequest for {namespace}/{name} returned no token")
        return token

    async def request_token(self, namespace: str, name: str, audience: str, seconds: int) -> str:
        return await asyncio.to_thread(self._token, namespace, name, audience, seconds)

    # -- informers -------------------------------------------------------------
    def ready(self) -> bool:
        return all(self._synced[r.kind].is_set() for r in self._resources if r.required)

    def start(self) -> None:
        for resource in self._resources:
            t = threading.Thread(target=self._run, args=(resource,), name=f"watch-{resource.kind}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stopping.set()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.ready()

    def _run(self, resource: Resource) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                version = self._list(resource)
                self._synced[resource.kind].set()
                backoff = 0.2
                if version is None:  # API absent: look again later
                    self._stopping.wait(30)
                    continue
                self._watch(resource, version)
            except Exception as exc:
                log.warning("watch %s failed (%s); retrying in %.1fs", resource.kind, exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _list(self, resource: Resource) -> str | None:
        shadow = type(self).__new__(type(self))
        Cluster.__init__(shadow)
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", 500)] + ([("continue", token)] if token else [])
            resp = self._request("GET", resource.list_path, query, timeout=(self._timeout, 60))
            data = resp.data
            if resp.status == 404 and not resource.required:
                self._replace(resource, shadow)
                return None
            if resp.status != 200:
                raise ClusterError(f"list {resource.kind}: HTTP {resp.status} {_message(data)}")
            doc = orjson.loads(data)
            for item in doc.get("items") or []:
                item["kind"] = resource.kind
                shadow.apply("ADDED", item)
            token = (doc.get("metadata") or {}).get("continue") or ""
            if not token:
                self._replace(resource, shadow)
                return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def _replace(self, resource: Resource, shadow: Cluster) -> None:
        # Swapping the whole store keeps readers on a complete, consistent snapshot.
        self.stores[resource.kind] = shadow.stores[resource.kind]

    def _watch(self, resource: Resource, version: str) -> None:
        while not self._stopping.is_set():
            server_timeout = random.randint(240, 360)
            query = [
                ("watch", "true"),
                ("resourceVersion", version),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", server_timeout),
            ]
            resp = self._request("GET", resource.list_path, query, timeout=(self._timeout, server_timeout + 30))
            try:
                if resp.status != 200:
                    raise ClusterError(f"watch {resource.kind}: HTTP {resp.status} {_message(resp.data)}")
                for line in _lines(resp):
                    event = orjson.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return  # too old: relist
                        raise ClusterError(f"watch {resource.kind}: {obj.get('message')}")
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if kind != "BOOKMARK":
                        obj["kind"] = resource.kind
                        self.apply(kind, obj)
                    if self._stopping.is_set():
                        return
            finally:
                resp.release_conn()


def _lines(resp: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line


def _message(data: bytes | None) -> str:
    try:
        doc = orjson.loads(data or b"{}")
        return str(doc.get("message", ""))[:300]
    except orjson.JSONDecodeError:
        return ""


def load(cluster_file: Path | None, kubeconfig: str | None) -> Cluster:
    """The cluster source a command asked for: a file if given, else the API."""
    if cluster_file is not None:
        return FileCluster.from_path(cluster_file)
    return KubeCluster.from_config(kubeconfig)
