"""The Kubernetes API as a cluster source: the only module that imports `kubernetes`.

list+watch informers (one thread each) fill the stores; a lookup that misses makes a live GET (a
ServiceAccount may have been created a moment ago in the same `kubectl apply`), and generated
SecretProviderClasses and ServiceAccount tokens are created here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.cluster.base import KINDS, Cluster, ClusterError
from webhook.model import Namespace, SecretProviderClass, ServiceAccount
from webhook.names import CLASS_API_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    kind: str
    list_path: str
    required: bool  # readiness waits for it; optional ones may be absent (CRD not installed)


SERVICE_ACCOUNTS = Resource("ServiceAccount", "/api/v1/serviceaccounts", True)
NAMESPACES = Resource("Namespace", "/api/v1/namespaces", True)
PROVIDER_CLASSES = Resource("SecretProviderClass", f"/apis/{CLASS_API_VERSION}/secretproviderclasses", False)
ACCESS_POLICIES = Resource("SecretAccessPolicy", "/apis/kvinject.io/v1alpha1/secretaccesspolicies", False)
RESOURCES = (SERVICE_ACCOUNTS, NAMESPACES, PROVIDER_CLASSES, ACCESS_POLICIES)


class KubeCluster(Cluster):
    """Watch-backed caches over the real API, through the official client's transport."""

    def __init__(
        self,
        api_client: Any,
        resources: tuple[Resource, ...] = RESOURCES,
        timeout: float = 3.0,
        read_only: bool = False,
    ):
        super().__init__()
        self._api = api_client
        self._read_only = read_only  # the CLI's previews and reports: never write to the API
        self.absent: list[str] = []  # optional kinds whose API is not installed (load_once)
        self._resources = resources
        self._timeout = timeout
        self._synced = {r.kind: threading.Event() for r in resources}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._version: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, kubeconfig: str | None, read_only: bool = False) -> KubeCluster:
        return cls(api_client(kubeconfig), read_only=read_only)

    @property
    def server(self) -> str:
        """The API's URL (no credentials), for messages."""
        return str(self._api.configuration.host)

    def _unreachable(self, exc: Exception) -> ClusterError:
        # urllib3 wraps the cause (refused, DNS, TLS); its text names the host, never a credential.
        cause = getattr(exc, "reason", None) or exc
        return ClusterError(f"cannot reach the API server at {self.server}: {str(cause)[:300] or type(cause).__name__}")

    # -- one-shot reads (the CLI) -------------------------------------------------
    def load_once(self) -> None:
        """List every watched kind once, without watching: the snapshot a one-shot command decides on.

        Without it a command would see no SecretAccessPolicy (they are only ever listed, never fetched on a
        miss) and deny every pod. Raises ClusterError when the API cannot be reached or refuses a list.
        """
        for resource in self._resources:
            try:
                listed = self._list(resource)
            except ClusterError:
                raise
            except Exception as exc:  # urllib3's connection errors
                raise self._unreachable(exc) from None
            if listed is None:
                self.absent.append(resource.kind)
            self._synced[resource.kind].set()

    def list_objects(self, path: str, what: str) -> list[dict[str, Any]] | None:
        """Every object of a list path; None when the API does not serve it (a CRD not installed)."""
        try:
            listed = self._pages(path, what)
        except ClusterError:
            raise
        except Exception as exc:  # urllib3's connection errors
            raise self._unreachable(exc) from None
        return None if listed is None else listed[0]

    # -- HTTP ----------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        timeout: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call; returns the urllib3 response (status unchecked, body unread)."""
        return _call(self._api, method, path, query, body, timeout or self._timeout, content_type)

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

    async def server_version(self) -> tuple[int, int] | None:
        """GET /version once (it changes only with an upgrade, which restarts nothing here: a rare stale answer
        errs towards the older version, which denies rather than injecting what cannot run)."""
        if self._version is None:
            info = await asyncio.to_thread(self._get, "/version")
            self._version = parse_version(info or {})
        return self._version

    async def _fetch_namespace(self, name: str) -> Namespace | None:
        obj = await self._fetch("Namespace", f"/api/v1/namespaces/{name}")
        return Namespace.from_object(obj) if obj else None

    async def _fetch_service_account(self, namespace: str, name: str) -> ServiceAccount | None:
        obj = await self._fetch("ServiceAccount", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
        return ServiceAccount.from_object(obj) if obj else None

    async def _fetch_provider_class(self, namespace: str, name: str) -> SecretProviderClass | None:
        path = f"/apis/{CLASS_API_VERSION}/namespaces/{namespace}/secretproviderclasses/{name}"
        obj = await self._fetch("SecretProviderClass", path)
        return SecretProviderClass.from_object(obj) if obj else None

    async def namespace_pods(self, namespace: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        # Read live when a SecretProviderClass is written (rare), rather than watching pods. Every pod of the
        # namespace: a pod that is not kvinject's mounts a class just as well (no selector narrows to a volume), so
        # each page is filtered as it arrives and only the kept pods are held.
        return await asyncio.to_thread(self._namespace_pods, namespace, keep)

    def _namespace_pods(self, namespace: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        try:
            path = f"/api/v1/namespaces/{namespace}/pods"
            listed = self._pages(path, "Pod", keep=keep)
        except ClusterError:
            raise
        except Exception as exc:  # urllib3's connection errors
            raise self._unreachable(exc) from None
        if listed is None:
            raise ClusterError(f"list pods in {namespace}: HTTP 404")
        return listed[0]

    def _post(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if self._read_only:
            raise ClusterError(f"read-only: not creating SecretProviderClass {meta['namespace']}/{meta['name']}")
        path = f"/apis/{CLASS_API_VERSION}/namespaces/{meta['namespace']}/secretproviderclasses"
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
        if self._read_only:
            raise ClusterError(f"read-only: not requesting a token for {namespace}/{name}")
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

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        path = f"/api/v1/namespaces/{namespace}/events"
        try:
            resp = self._request("POST", path, body=event)
            data = resp.data
        except Exception as exc:
            raise ClusterError(f"could not create an Event in {namespace}: {type(exc).__name__}") from None
        if resp.status not in (200, 201, 409):
            raise ClusterError(f"could not create an Event in {namespace}: HTTP {resp.status} {_message(data)}")

    def update_event(self, namespace: str, name: str, changes: dict[str, Any]) -> bool:
        path = f"/api/v1/namespaces/{namespace}/events/{name}"
        try:
            resp = self._request("PATCH", path, body=changes, content_type="application/merge-patch+json")
            data = resp.data
        except Exception as exc:
            raise ClusterError(f"could not update Event {namespace}/{name}: {type(exc).__name__}") from None
        if resp.status == 404:
            return False
        if resp.status != 200:
            raise ClusterError(f"could not update Event {namespace}/{name}: HTTP {resp.status} {_message(data)}")
        return True

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
        listed = self._pages(resource.list_path, resource.kind)
        if listed is None and not resource.required:
            self._replace(resource, shadow)
            return None
        if listed is None:
            raise ClusterError(f"list {resource.kind}: HTTP 404 (is the API installed?)")
        items, version = listed
        for item in items:
            item["kind"] = resource.kind
            shadow.apply("ADDED", item)
        self._replace(resource, shadow)
        return version

    def _pages(
        self,
        path: str,
        what: str,
        selector: list[tuple[str, Any]] | None = None,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], str] | None:
        """Every item of a list path (those `keep` keeps), page by page, and the list's resourceVersion; None on
        404."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", 500), *(selector or [])] + (
                [("continue", token)] if token else []
            )
            resp = self._request("GET", path, query, timeout=(self._timeout, 60))
            data = resp.data
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise ClusterError(f"list {what}: HTTP {resp.status} {_message(data)}")
            doc = orjson.loads(data)
            items.extend(i for i in doc.get("items") or [] if isinstance(i, dict) and (keep is None or keep(i)))
            token = (doc.get("metadata") or {}).get("continue") or ""
            if not token:
                return items, str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def _replace(self, resource: Resource, shadow: Cluster) -> None:
        # Swapping the whole store keeps readers on a complete, consistent snapshot.
        kind = KINDS[resource.kind]
        kind.replace(self.stores, kind.store(shadow.stores))

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


def parse_version(info: dict[str, Any]) -> tuple[int, int]:
    """(major, minor) from /version's strings; providers append to them (`"35+"` on EKS and GKE)."""
    try:
        return int(str(info.get("major", "")).rstrip("+")), int(str(info.get("minor", "")).rstrip("+"))
    except ValueError:
        raise ClusterError(f"the API server's /version is not readable: {str(info)[:200]}") from None


def api_client(kubeconfig: str | None) -> Any:
    """The official client's ApiClient for `kubeconfig` (default: in-cluster, then ~/.kube/config)."""
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
    return client.ApiClient(configuration)


def _call(
    api: Any,
    method: str,
    path: str,
    query: list[tuple[str, Any]] | None,
    body: Any,
    timeout: Any,
    content_type: str = "application/json",
) -> Any:
    """One API call through the official client's transport; returns the urllib3 response (status unchecked)."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    _, url, headers, body, _ = api.param_serialize(
        method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    return api.call_api(method, url, headers, body, _request_timeout=timeout).response


class Conflict(ClusterError):
    """A write lost an optimistic-concurrency race (HTTP 409): read again and decide again."""


class ApiObjects:
    """Reads and writes of single objects by path, with optimistic concurrency (the object's resourceVersion
    goes with every update), and a watch that yields events: for kvinject's own Secret and webhook
    configurations (cert_mode self)."""

    def __init__(self, api_client: Any, timeout: float = 10.0):
        self._api, self._timeout = api_client, timeout

    @classmethod
    def from_config(cls, kubeconfig: str | None, timeout: float = 10.0) -> ApiObjects:
        return cls(api_client(kubeconfig), timeout)

    def _send(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        try:
            resp = _call(self._api, method, path, None, body, self._timeout)
            return int(resp.status), bytes(resp.data or b"")
        except Exception as exc:
            raise ClusterError(f"the Kubernetes API did not answer {method} {path}: {type(exc).__name__}") from None

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when there is none."""
        status, data = self._send("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise ClusterError(f"GET {path}: HTTP {status} {_message(data)}")
        result: dict[str, Any] = orjson.loads(data)
        return result

    def create(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """POST `obj` to `collection`; Conflict when it exists already (another replica was first)."""
        return self._write("POST", collection, obj)

    def replace(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT `obj` (with the resourceVersion it was read at); Conflict when it changed since."""
        return self._write("PUT", path, obj)

    def _write(self, method: str, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        status, data = self._send(method, path, obj)
        if status == 409:
            raise Conflict(f"{method} {path}: {_message(data)}")
        if status not in (200, 201):
            raise ClusterError(f"{method} {path}: HTTP {status} {_message(data)}")
        result: dict[str, Any] = orjson.loads(data)
        return result

    def patch(self, path: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the object at `path`; None when it is gone. A `metadata.resourceVersion` in `changes` is a
        precondition: Conflict when the object changed since it was read."""
        status, data = self._send_typed("PATCH", path, changes, "application/merge-patch+json")
        if status == 404:
            return None
        if status == 409:
            raise Conflict(f"PATCH {path}: {_message(data)}")
        if status != 200:
            raise ClusterError(f"PATCH {path}: HTTP {status} {_message(data)}")
        result: dict[str, Any] = orjson.loads(data)
        return result

    def _send_typed(self, method: str, path: str, body: Any, content_type: str) -> tuple[int, bytes]:
        try:
            resp = _call(self._api, method, path, None, body, self._timeout, content_type)
            return int(resp.status), bytes(resp.data or b"")
        except Exception as exc:
            raise ClusterError(f"the Kubernetes API did not answer {method} {path}: {type(exc).__name__}") from None

    def list_all(
        self, collection: str, selectors: list[tuple[str, str]] | None = None
    ) -> tuple[list[dict[str, Any]], str] | None:
        """Every object of `collection` (narrowed by `selectors`: fieldSelector, labelSelector), page by page, and
        the list's resourceVersion (to watch from); None when the API does not serve it (a CRD not installed)."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", 500), *(selectors or [])] + (
                [("continue", token)] if token else []
            )
            try:
                resp = _call(self._api, "GET", collection, query, None, (self._timeout, 60))
                status, data = int(resp.status), bytes(resp.data or b"")
            except Exception as exc:
                raise ClusterError(f"cannot list {collection}: {type(exc).__name__}") from None
            if status == 404:
                return None
            if status != 200:
                raise ClusterError(f"list {collection}: HTTP {status} {_message(data)}")
            doc = orjson.loads(data)
            items.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
            token = (doc.get("metadata") or {}).get("continue") or ""
            if not token:
                return items, str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def watch(
        self, collection: str, field_selector: str, stop: threading.Event, resource_version: str = ""
    ) -> Iterator[dict[str, Any]]:
        """Events of the objects in `collection` matching `field_selector` (empty: all), until the server ends the
        watch or `stop` is set; raises ClusterError when it cannot watch. Without `resource_version` ADDED events
        for what exists come first; with one (a list's), what changed since, bookmarks included, and an ERROR
        event with code 410 when that version is too old (list again)."""
        server_timeout = random.randint(240, 360)
        query: list[tuple[str, Any]] = [("watch", "true"), ("timeoutSeconds", server_timeout)]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if resource_version:
            query += [("resourceVersion", resource_version), ("allowWatchBookmarks", "true")]
        try:
            resp = _call(self._api, "GET", collection, query, None, (self._timeout, server_timeout + 30))
        except Exception as exc:
            raise ClusterError(f"cannot watch {collection}: {type(exc).__name__}") from None
        try:
            if resp.status != 200:
                raise ClusterError(f"watch {collection}: HTTP {resp.status} {_message(resp.data)}")
            for line in _lines(resp):
                yield orjson.loads(line)
                if stop.is_set():
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
