"""Server settings from the environment (KVINJECT_*) and CLI flags; no module-level instance."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from webhook import __version__, clouds
from webhook.names import DEFAULT_AUTHORITY, DEFAULT_VAULT_DNS_SUFFIX, FETCH_IMAGE_REPOSITORY
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
    # The Azure cloud (webhook/clouds.py): a name the Azure provider knows (AzureUSGovernmentCloud,
    # AzureChinaCloud, ...), or an environment file for a custom cloud (AzureStackCloud), mounted at the same
    # path in kvinject's pods and on the nodes. It sets authority_host and vault_dns_suffix, which may then
    # only be set to the same values.
    cloud_name: str = ""
    cloud_env_file: Path | None = None
    log_level: str = "INFO"
    # text, or json: one JSON object per line for every logger, uvicorn's included.
    log_format: Literal["text", "json"] = "text"
    # Policy: enforce (deny), warn (allow with warnings) or audit (allow, audit annotation only);
    # a namespace label kvinject.io/enforcement overrides it.
    enforcement: Enforcement = Enforcement.ENFORCE
    # How pods and SecretProviderClasses that are not kvinject's are judged (hand-written Secrets Store CSI
    # volumes, Secret readers, Azure classes no kvinject pod uses; webhook/rollout.py): audit by default,
    # so that installing kvinject denies nothing that ran before; enforce once the would-deny events are
    # gone. The namespace label still only tightens it.
    not_opted_in_enforcement: Enforcement = Enforcement.AUDIT
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
    # Init mode: the image of the kvinject-fetch init container (the kvinject-fetch image of this version,
    # docs/images.md; the kustomize base and the chart set it with the server's image) and where it
    # authenticates and reads (the public cloud by default).
    init_image: str = f"{FETCH_IMAGE_REPOSITORY}:{__version__}"
    authority_host: str = DEFAULT_AUTHORITY
    vault_dns_suffix: str = DEFAULT_VAULT_DNS_SUFFIX
    # Size of the in-memory volume holding the files: it counts against the pod's memory.
    init_volume_size: str = "4Mi"
    # A ConfigMap (key ca.crt, in the pod's namespace) of CAs kvinject-fetch trusts for Entra ID and Key Vault,
    # for clouds behind a private CA (Azure Stack Hub); empty: the image's public roots.
    init_ca_configmap: str = Field(default="", pattern=r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$")
    # kvinject.io/refresh (mode init, docs/rotation.md): the refresh sidecar is a native sidecar, which needs
    # Kubernetes 1.29 or later. auto: allowed when the API server's /version says so; on: always allowed (the
    # cluster and its nodes are known to be 1.29+); off: the annotation is denied.
    refresh_sidecars: Literal["auto", "on", "off"] = "auto"
    # The shortest kvinject.io/refresh interval a pod may ask for: every pod reads each of its objects once per
    # interval, against Key Vault's per-vault throttling limits.
    refresh_min_seconds: int = Field(default=60, ge=1, le=86400)
    # Vault URLs other than https://<vault>.<vault_dns_suffix> (private endpoints, tests), as JSON.
    vault_urls: dict[str, str] = Field(default_factory=dict)

    # HashiCorp Vault (kvinject.io/store: vault; docs/vault-design.md): its https address, the mount of its
    # Kubernetes auth method, the audience its roles accept in ServiceAccount tokens, its CA bundle for the
    # init container (a ConfigMap in the pod's namespace, key ca.crt) and for the Vault CSI provider (a file on
    # the provider's pod, vaultCACertPath).
    hashicorp_vault_address: str = Field(default="", pattern=r"^(https://[^\s/]+/?)?$")
    hashicorp_vault_auth_mount: str = Field(
        default="kubernetes", pattern=r"^[A-Za-z0-9]([A-Za-z0-9_./-]*[A-Za-z0-9])?$"
    )
    hashicorp_vault_audience: str = "vault"
    hashicorp_vault_ca_configmap: str = Field(default="", pattern=r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$")
    hashicorp_vault_csi_ca_cert_path: str = ""
    # The CA bundle (PEM file) kvinject itself trusts for Vault (live verification); unset: the system's roots.
    # TLS is always verified.
    hashicorp_vault_ca_file: Path | None = None

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

    # Certificates (docs/certificates.md). `files`: serve cert_file/key_file as found (a mounted Secret, e.g.
    # cert-manager's), reloading them when they change. `self`: kvinject makes and rotates its own CA and serving
    # certificate in the Secret cert_secret of pod_namespace, writes them to cert_file/key_file, and writes the
    # caBundle into its webhook configurations.
    cert_mode: Literal["files", "self"] = "files"
    # The Service the apiserver calls (the serving certificate names <service>.<namespace>.svc[.cluster.local]).
    service_name: str = Field(default="kvinject", pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    # kvinject's own namespace, from the downward API (metadata.namespace).
    pod_namespace: str = Field(default="kvinject", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    cert_secret: str = Field(default="kvinject-tls", pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    # Further names for the serving certificate: DNS names or IP addresses (JSON list).
    cert_hosts: list[str] = Field(default_factory=list)
    # The webhook configurations whose caBundle kvinject writes (JSON lists).
    cert_mutating_webhooks: list[str] = Field(default_factory=lambda: ["kvinject"])
    cert_validating_webhooks: list[str] = Field(default_factory=lambda: ["kvinject", "kvinject-provider-classes"])
    cert_ca_lifetime_seconds: float = Field(default=730 * 86400.0, gt=0)
    cert_ca_renew_before_seconds: float = Field(default=90 * 86400.0, gt=0)
    cert_leaf_lifetime_seconds: float = Field(default=90 * 86400.0, gt=0)
    cert_leaf_renew_before_seconds: float = Field(default=30 * 86400.0, gt=0)
    # How long a new trust bundle or leaf is given to reach the apiserver and every replica before the next
    # rotation step relies on it; at least twice cert_check_seconds.
    cert_propagation_seconds: float = Field(default=120.0, gt=0)
    # Every replica re-reads the Secret and its webhook configurations this often (and on every Secret change).
    cert_check_seconds: float = Field(default=30.0, gt=0)

    # restart-on-change (csi mode, docs/rotation.md): every replica watches the Secrets Store CSI driver's
    # SecretProviderClassPodStatus objects and rolls an opted-in pod's Deployment, StatefulSet or DaemonSet when
    # a mounted object's version changes; off: the annotation is still accepted, nothing is rolled.
    restart_on_change: bool = True
    # At most one roll of a workload in this many seconds (later changes wait, then roll once).
    restart_min_interval_seconds: float = Field(default=300.0, ge=0)
    # At most this many rolls a minute by one replica, across the cluster (a widely shared object rotating
    # does not roll every workload at once).
    restart_max_per_minute: int = Field(default=20, ge=1)
    # How often a workload whose change waits for a rollout is looked at again.
    restart_retry_seconds: float = Field(default=15.0, gt=0)
    # Changes reported within this many seconds of each other are decided together (pods of one workload).
    restart_coalesce_seconds: float = Field(default=2.0, ge=0)

    _cloud: clouds.Cloud | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _apply_cloud(self) -> Settings:
        """The cloud's authority and vault suffix, so that the init container reads where the provider does."""
        cloud = clouds.resolve(self.cloud_name, self.cloud_env_file)
        if cloud is None:
            return self
        for field, value, same in (
            (
                "authority_host",
                cloud.authority_host,
                self.authority_host.rstrip("/") == cloud.authority_host.rstrip("/"),
            ),
            (
                "vault_dns_suffix",
                cloud.vault_dns_suffix,
                self.vault_dns_suffix.strip(".").lower() == cloud.vault_dns_suffix,
            ),
        ):
            if field in self.model_fields_set and not same:
                raise clouds.CloudError(
                    f"KVINJECT_{field.upper()}={getattr(self, field)!r} disagrees with the cloud's {value!r}:"
                    " unset it (the cloud decides it)"
                )
            setattr(self, field, value)
        self.cloud_name = cloud.name
        self._cloud = cloud
        return self

    @model_validator(mode="after")
    def _check_cert_timing(self) -> Settings:
        """Lifetimes that leave room for the overlap (self mode only: files mode ignores them)."""
        if self.cert_mode != "self":
            return self
        for renew, lifetime, what in (
            (self.cert_ca_renew_before_seconds, self.cert_ca_lifetime_seconds, "CA"),
            (self.cert_leaf_renew_before_seconds, self.cert_leaf_lifetime_seconds, "LEAF"),
        ):
            if renew >= lifetime:
                raise ValueError(
                    f"KVINJECT_CERT_{what}_RENEW_BEFORE_SECONDS must be below KVINJECT_CERT_{what}_LIFETIME_SECONDS"
                )
        if self.cert_ca_renew_before_seconds <= 2 * self.cert_propagation_seconds:
            raise ValueError(
                "KVINJECT_CERT_CA_RENEW_BEFORE_SECONDS must exceed twice KVINJECT_CERT_PROPAGATION_SECONDS"
                " (a new CA is trusted, then signs, then the old one goes, each after a propagation)"
            )
        if self.cert_propagation_seconds < 2 * self.cert_check_seconds:
            raise ValueError("KVINJECT_CERT_PROPAGATION_SECONDS must be at least twice KVINJECT_CERT_CHECK_SECONDS")
        return self

    @property
    def cloud(self) -> clouds.Cloud:
        """The cloud the generated classes name (the public cloud, unnamed, unless configured)."""
        return self._cloud or clouds.Cloud(self.cloud_name, self.authority_host, self.vault_dns_suffix)
