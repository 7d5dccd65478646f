"""Server settings from the environment (KVINJECT_*) and CLI flags; no module-level instance."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from webhook.names import DEFAULT_AUTHORITY, DEFAULT_VAULT_DNS_SUFFIX
from webhook.policy import Enforcement


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVINJECT_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(default=8443, ge=1, le=65535)
    cert_file: Path = Path("certs/tls.crt")
    key_file: Path = Path("certs/tls.key")
    cert_reload_seconds: float = Field(default=2.0, gt=0)
    # Above the apiserver's 90 s idle timeout, so it is always the client that closes.
    keep_alive_seconds: int = Field(default=120, ge=1)
    # On SIGTERM: report not ready at once, keep serving this long (endpoints and the apiserver's
    # connections move away), then stop accepting and finish what is in flight. A second signal stops now.
    shutdown_drain_seconds: float = Field(default=3.0, ge=0)
    # After the drain: how long in-flight requests and connection closes may take before they are cut.
    shutdown_grace_seconds: int = Field(default=15, ge=1)
    cluster_file: Path | None = None
    kubeconfig: str | None = None
    tenant_id: str | None = None
    cloud_name: str = ""
    log_level: str = "INFO"
    # Policy: enforce (deny), warn (allow with warnings) or audit (allow, audit annotation only);
    # a namespace label kvinject.io/enforcement overrides it.
    enforcement: Enforcement = Enforcement.ENFORCE
    # Namespace labels only tighten (enforcement, live verification): these namespaces' labels may also
    # loosen them. A JSON list, e.g. KVINJECT_RELAXABLE_NAMESPACES='["sandbox"]'.
    relaxable_namespaces: frozenset[str] = frozenset()
    # SecretProviderClasses that read with the node's identity or aad-pod-identity are denied unless allowed.
    allow_node_identity: bool = False
    allow_pod_identity: bool = False
    # A Secrets Store CSI volume may carry no volumeAttributes but secretProviderClass (the driver copies
    # them over the class's parameters) and no nodePublishSecretRef (service-principal credentials) unless
    # allowed; when attributes are allowed, the class's parameters with the attributes over them are judged.
    allow_volume_attributes: bool = False
    allow_node_publish_secret: bool = False
    # Init mode: the image of the kvinject-fetch init container (this project's image) and where it
    # authenticates and reads (the public cloud by default).
    init_image: str = "ghcr.io/kvinject/kvinject:0.1.0"
    authority_host: str = DEFAULT_AUTHORITY
    vault_dns_suffix: str = DEFAULT_VAULT_DNS_SUFFIX
    # Size of the in-memory volume holding the files: it counts against the pod's memory.
    init_volume_size: str = "4Mi"
    # Vault URLs other than https://<vault>.<vault_dns_suffix> (private endpoints, tests), as JSON.
    vault_urls: dict[str, str] = Field(default_factory=dict)

    # Live verification (opt-in; a namespace label kvinject.io/live-verify=true|false overrides it):
    # prove with Entra ID and Key Vault that the ServiceAccount can read every requested object.
    live_verify: bool = False
    # Must stay below the webhook's timeoutSeconds (5 s as shipped).
    live_budget_seconds: float = Field(default=3.0, gt=0, le=25)
    live_positive_ttl_seconds: float = Field(default=300.0, ge=0)
    live_negative_ttl_seconds: float = Field(default=30.0, ge=0)
    # When Azure cannot answer in time: deny ("could not verify", the default) or admit with a warning.
    live_fail_open: bool = False
    # A cold cache must not hang admissions: lookups that miss go to the API with this budget.
    api_timeout_seconds: float = Field(default=3.0, gt=0)
