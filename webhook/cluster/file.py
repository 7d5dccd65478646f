"""A cluster read from multi-document YAML files, for running and previewing without Kubernetes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from webhook.cluster.base import Cluster, ClusterError
from webhook.model import Namespace, SecretProviderClass, ServiceAccount


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
