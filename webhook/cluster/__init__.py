"""Cluster data: `base` (the typed, indexed records and lookups), `store` (the index), and the two sources that
fill it, `api` (the Kubernetes API) and `file` (a YAML file)."""

from __future__ import annotations

from pathlib import Path

from webhook.cluster.base import Cluster, ClusterError
from webhook.cluster.file import FileCluster


def load(cluster_file: Path | None, kubeconfig: str | None, read_only: bool = False) -> Cluster:
    """The cluster source a command asked for: a file if given, else the API (`read_only`: never written to)."""
    if cluster_file is not None:
        return FileCluster.from_path(cluster_file)
    from webhook.cluster.api import KubeCluster

    return KubeCluster.from_config(kubeconfig, read_only=read_only)


__all__ = ["Cluster", "ClusterError", "FileCluster", "load"]
