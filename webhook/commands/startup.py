"""`kvinject serve`'s start-up summary: what it runs with (never a secret), and when its caches are filled."""

from __future__ import annotations

import logging
import threading
import time
from importlib.metadata import PackageNotFoundError, version

from webhook.cluster import Cluster
from webhook.settings import Settings

log = logging.getLogger("kvinject")


def package_version() -> str:
    try:
        return version("kvinject")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def cluster_source(settings: Settings) -> str:
    if settings.cluster_file is not None:
        return f"file {settings.cluster_file}"
    return f"kubeconfig {settings.kubeconfig}" if settings.kubeconfig else "in-cluster (else ~/.kube/config)"


def summary(settings: Settings) -> str:
    cloud = settings.cloud
    return (
        f"kvinject {package_version()} starting on {settings.host}:{settings.port}:"
        f" tenant={settings.tenant_id or 'unset (from each ServiceAccount)'}"
        f" cloud={cloud.name or 'AzurePublicCloud'} authority={cloud.authority_host}"
        f" vault-suffix={cloud.vault_dns_suffix}"
        f" enforcement={settings.enforcement.value}"
        f" not-opted-in-enforcement={settings.not_opted_in_enforcement.value}"
        f" relaxable-namespaces={','.join(sorted(settings.relaxable_namespaces)) or 'none'}"
        f" live-verification={'on' if settings.live_verify else 'off'}"
        f"{' (fail-open)' if settings.live_verify and settings.live_fail_open else ''}"
        f" restart-on-change={restart_on_change(settings)}"
        f" cluster={cluster_source(settings)} log-format={settings.log_format}"
        f" certificates={certificate_source(settings)}"
    )


def restart_on_change(settings: Settings) -> str:
    if not settings.restart_on_change:
        return "off"
    if settings.cluster_file is not None:
        return "off (needs the API, not a --cluster file)"
    return (
        f"on (at most once per {settings.restart_min_interval_seconds:g}s per workload,"
        f" {settings.restart_max_per_minute}/min)"
    )


def certificate_source(settings: Settings) -> str:
    if settings.cert_mode == "self":
        return f"self (Secret {settings.pod_namespace}/{settings.cert_secret}, served from {settings.cert_file})"
    return f"files {settings.cert_file}"


def report_sync(cluster: Cluster) -> threading.Thread:
    """Logs once when the caches are filled (readiness turns green then), with what they hold."""
    started = time.monotonic()

    def wait() -> None:
        while not cluster.ready():
            time.sleep(0.2)
        stores = cluster.stores
        log.info(
            "caches synced after %.1fs: %d namespaces, %d service accounts, %d SecretProviderClasses,"
            " %d SecretAccessPolicies; ready",
            time.monotonic() - started,
            len(stores.namespaces),
            len(stores.service_accounts),
            len(stores.provider_classes),
            len(stores.policies),
        )

    thread = threading.Thread(target=wait, name="report-sync", daemon=True)
    thread.start()
    return thread
