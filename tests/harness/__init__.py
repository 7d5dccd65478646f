"""kvinject's test harness: what the tests and the benchmarks (bench/) run and build, in one public place.

- process.py: the one lifecycle (start/stop/`with`) and the child process on it (log, pdeathsig, readiness)
- waiting.py: the one wait (`wait_for`: poll until a probe holds; a hang guard, never a speed check)
- pki.py: certificates on webhook/certs.py (loopback serving certificates, the control plane's CA, TLS clients)
- serve.py: `kvinject serve` (ServeProcess; KvinjectServer reads a real apiserver)
- controlplane.py: etcd + kube-apiserver + kube-controller-manager from the cached binaries
- kube.py: kvinject installed on the control plane as shipped, and the helpers that talk to its API
- node.py: a real node (containerd, kubelet, kube-scheduler, the Secrets Store CSI driver and Azure provider)
- peer.py: the Azure Workload Identity webhook process
- services.py: the real kube-proxy beside a node, so Services answer (ServiceNetwork); deploy.py: kvinject's own
  Deployment installed from manifests/ or the chart (INSTALLERS); apiload.py: constant admission load through the
  apiserver
- doubles/: HTTPS doubles of Key Vault and the Entra token endpoint
- vault.py: a real HashiCorp Vault (TLS, KV v2, Kubernetes auth on the control plane) for the Vault store
- builders.py: real-shaped objects (controller-made pods, AdmissionReviews, clusters) and the test identities
- load.py: an open-model load loop over TLS; hygiene.py: the secret-leak scan; prerequisites.py: skip or fail
- terraform.py: the Terraform example (examples/terraform) evaluated as `terraform apply` would create it

The names below are re-exported here and imported on first use, so that `from tests.harness import
admission_review` loads neither TLS clients nor the control plane (bench/growth.py measures its own memory).
The doubles are imported from tests.harness.doubles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "builders": [
        "CLIENT_ID",
        "E2E_VAULTS",
        "EXAMPLES",
        "RELAXABLE",
        "ROOT",
        "TENANT_ID",
        "VAULT",
        "admission_review",
        "apply",
        "controller_pod",
        "example_cluster",
        "golden_cluster",
    ],
    "controlplane": ["Binaries", "BinariesMissing", "ControlPlane", "cache_dir", "read_versions"],
    "kube": [
        "K",
        "MANIFESTS",
        "access_policy",
        "apply_docs",
        "class_webhook_removed",
        "create",
        "dry_run",
        "federated_namespace",
        "get_json",
        "install",
        "kvinject_webhooks_removed",
        "mutating_configuration",
        "mutating_webhook_in_effect",
        "pick",
        "pod_manifest",
        "point_webhooks_at",
        "provider_classes",
        "rendered_manifests",
        "serve_as_shipped",
        "serving_in_place_of",
        "service_account",
        "service_account_kubeconfig",
        "wait_for_admission",
        "wait_for_kvinject_webhooks",
        "wait_for_webhook_gone",
        "webhook_configurations",
    ],
    "load": ["Load", "constant_load"],
    "node": ["NODE_ADDRESS", "Node", "NodeArtifacts", "NodeUnavailable", "reap_dead_runs", "require_isolation"],
    "peer": ["AZWI_PORT", "AzwiWebhook", "isolated_network"],
    "pki": ["PKI", "bundle", "loopback", "served_certificate", "trust"],
    "prerequisites": ["unavailable"],
    "process": ["Lifecycle", "Process", "ProcessExited", "free_port", "tail"],
    "serve": ["KvinjectServer", "ServeProcess"],
    "vault": ["VaultMissing", "VaultRole", "VaultServer", "require_vault"],
    "waiting": ["HANG_GUARD", "WaitTimeout", "wait_for"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
