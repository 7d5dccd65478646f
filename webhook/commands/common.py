"""What the commands share: exit codes, the unusable-input error, and the read-only cluster view."""

from __future__ import annotations

import sys

from webhook.cluster import Cluster, load
from webhook.settings import Settings

EXIT_ALLOWED, EXIT_DENIED, EXIT_UNUSABLE = 0, 1, 2


class Unusable(Exception):
    """Input the command cannot work with (exit 2)."""


def open_cluster(settings: Settings) -> Cluster:
    """The cluster a one-shot command decides on, read once and never written to (no SecretProviderClass is
    created, no token requested). Raises ClusterError when it cannot be read."""
    cluster = load(settings.cluster_file, settings.kubeconfig, read_only=True)
    cluster.load_once()
    for kind in getattr(cluster, "absent", []):
        consequence = _ABSENT.get(kind, "")
        print(f"kvinject: note: the {kind} API is not installed{consequence}", file=sys.stderr)
    return cluster


_ABSENT = {
    "SecretAccessPolicy": ": no policy grants anything, so every kvinject pod is denied",
    "SecretProviderClass": " (the Secrets Store CSI driver's CRD)",
}
