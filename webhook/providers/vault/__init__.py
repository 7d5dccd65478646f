"""HashiCorp Vault (KV v2) through the Vault CSI provider, with Vault's Kubernetes auth (docs/vault-design.md).

- `identity`: the ServiceAccount's role (its vault.kvinject.io/role annotation, or the pod's);
- `classes`: SecretProviderClass parameters, generated and read as the Vault CSI provider reads them;
- `answers`: what Vault's HTTP answers mean (logins, KV v2 reads, sys/capabilities-self), pure;
- `verify`: live verification, a login as the role and sys/capabilities-self for every path;
- `access` and `reader`: the init container's login and KV v2 reads (`kvinject fetch` with KVINJECT_STORE=vault).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from webhook.contract import InjectionRequest, ObjectRef
from webhook.identity import Identity
from webhook.model import SecretProviderClass, ServiceAccount
from webhook.names import ENV_STORE, STORE_VAULT, TOKEN_DIR, TOKEN_FILE
from webhook.plan import InitSpec
from webhook.providers.vault import classes, identity
from webhook.providers.vault.access import VaultAccess, access_from_env
from webhook.providers.vault.names import (
    CA_KEY,
    ENV_ADDRESS,
    ENV_AUTH_MOUNT,
    ENV_CA_CERT,
    ENV_ROLE,
    ENV_TOKEN_FILE,
    FETCH_ENVIRONMENT,
    PROVIDER,
)

if TYPE_CHECKING:
    from webhook.cluster import Cluster
    from webhook.metrics import Metrics
    from webhook.providers import LiveVerifier
    from webhook.providers.reading import Reader
    from webhook.settings import Settings


def server(settings: Settings) -> classes.Server:
    return classes.Server(
        settings.hashicorp_vault_address.rstrip("/"),
        settings.hashicorp_vault_auth_mount,
        settings.hashicorp_vault_audience,
        settings.hashicorp_vault_csi_ca_cert_path,
    )


class VaultProvider:
    name = PROVIDER
    store_name = "Vault"
    objects_name = "Vault"
    identity_environment = (ENV_ROLE, ENV_AUTH_MOUNT, ENV_TOKEN_FILE)
    endpoint_environment = (ENV_ADDRESS, ENV_CA_CERT)
    environment_help = FETCH_ENVIRONMENT

    def resolve_identity(
        self,
        namespace: str,
        name: str,
        account: ServiceAccount | None,
        settings: Settings,
        requested_role: str | None = None,
    ) -> Identity | str:
        if not settings.hashicorp_vault_address:
            # Nothing to log in to, and no server to judge a class's vaultAddress against: deny, saying why.
            return (
                "kvinject has no HashiCorp Vault configured (KVINJECT_HASHICORP_VAULT_ADDRESS is unset), so it"
                " cannot judge or inject Vault secrets: ask the platform team to set it"
            )
        return identity.resolve(namespace, name, account, settings.hashicorp_vault_auth_mount, requested_role)

    def class_parameters(self, wanted: InjectionRequest, who: Identity, settings: Settings) -> dict[str, str]:
        return classes.parameters(wanted, who.client_id, server(settings))

    def declared_objects(
        self,
        found: SecretProviderClass,
        who: Identity,
        settings: Settings,
        attributes: Mapping[str, str] | None = None,
    ) -> tuple[list[ObjectRef], list[str]]:
        if who.store != STORE_VAULT:
            # The pipeline asks with the identity this provider resolved; anything else is not judged: deny.
            problem = f"SecretProviderClass {found.name} (provider: vault) cannot be judged for a {who.store} identity"
            return [], [problem]
        return classes.declared_objects(found, who.client_id, who.tenant_id, server(settings), attributes)

    def class_problems(self, found: SecretProviderClass, settings: Settings) -> list[str]:
        return classes.class_problems(found, server(settings))

    def init_spec(self, who: Identity, settings: Settings) -> InitSpec:
        env: tuple[tuple[str, str], ...] = (
            (ENV_STORE, STORE_VAULT),  # kvinject fetch reads with this provider
            (ENV_ADDRESS, settings.hashicorp_vault_address),
            (ENV_ROLE, who.client_id),
            (ENV_AUTH_MOUNT, who.tenant_id),
            (ENV_TOKEN_FILE, f"{TOKEN_DIR}/{TOKEN_FILE}"),
        )
        sources: tuple[dict[str, Any], ...] = ()
        if settings.hashicorp_vault_ca_configmap:
            items = [{"key": CA_KEY, "path": CA_KEY}]
            sources = ({"configMap": {"name": settings.hashicorp_vault_ca_configmap, "items": items}},)
            env = (*env, (ENV_CA_CERT, f"{TOKEN_DIR}/{CA_KEY}"))
        return InitSpec(
            settings.init_image, env, TOKEN_DIR, settings.hashicorp_vault_audience, settings.init_volume_size, sources
        )

    def verifiable(self, refs: Sequence[ObjectRef]) -> list[ObjectRef]:
        # sys/capabilities-self answers per path; every KV v2 secret can be asked about.
        return list(refs)

    def live_verifier(self, settings: Settings, cluster: Cluster, metrics: Metrics) -> LiveVerifier:
        from webhook.providers.vault.verify import Verifier  # the HTTP client loads only when verification runs

        return Verifier(settings, cluster, metrics)

    def access_from_env(self, env: Mapping[str, str]) -> tuple[VaultAccess | None, list[str], list[str]]:
        return access_from_env(env)

    def reader(self, access: VaultAccess, timeout: float, assertion: Callable[[], str] | None = None) -> Reader:
        from webhook.providers.vault.reader import VaultReader  # http.client and ssl load only for real reads

        return VaultReader(access, timeout, assertion)


INSTANCE = VaultProvider()
