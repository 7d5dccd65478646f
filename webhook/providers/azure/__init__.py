"""Azure Key Vault through the Secrets Store CSI driver's Azure provider, with Azure Workload Identity.

- `identity`: the ServiceAccount's workload identity (its azure.workload.identity/* annotations);
- `provider_view` and `classes`: SecretProviderClass parameters, generated and read as the provider reads them;
- `access` and `keyvault`: the init container's credentials and endpoints, and the Key Vault reader;
- `verify`: live verification with Entra ID and Key Vault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from webhook.contract import InjectionRequest, ObjectRef, ObjectType
from webhook.identity import Identity
from webhook.model import SecretProviderClass, ServiceAccount
from webhook.names import TOKEN_DIR, TOKEN_FILE
from webhook.plan import InitSpec
from webhook.providers.azure import classes, identity
from webhook.providers.azure.access import VaultAccess, credentials_from_env, endpoints_from_env
from webhook.providers.azure.names import (
    CA_KEY,
    ENV_AUTHORITY,
    ENV_CA_BUNDLE,
    ENV_CLIENT_ID,
    ENV_TENANT_ID,
    ENV_TOKEN_FILE,
    ENV_VAULT_DNS_SUFFIX,
    ENV_VAULT_URLS,
    FETCH_ENVIRONMENT,
    PROVIDER,
    TOKEN_AUDIENCE,
)

if TYPE_CHECKING:
    from webhook.cluster import Cluster
    from webhook.metrics import Metrics
    from webhook.providers import LiveVerifier
    from webhook.providers.reading import Reader
    from webhook.settings import Settings


class AzureProvider:
    name = PROVIDER
    store_name = "Azure"
    objects_name = "Key Vault"
    identity_environment = (ENV_CLIENT_ID, ENV_TENANT_ID, ENV_TOKEN_FILE, ENV_AUTHORITY)
    endpoint_environment = (ENV_VAULT_DNS_SUFFIX, ENV_VAULT_URLS)
    environment_help = FETCH_ENVIRONMENT

    def resolve_identity(
        self,
        namespace: str,
        name: str,
        account: ServiceAccount | None,
        settings: Settings,
        requested_role: str | None = None,
    ) -> Identity | str:
        # A pod cannot choose its Entra identity: the ServiceAccount's client-id annotation is the federation.
        return identity.resolve(namespace, name, account, settings.tenant_id)

    def class_parameters(self, wanted: InjectionRequest, who: Identity, settings: Settings) -> dict[str, str]:
        return classes.parameters(wanted, who.client_id, who.tenant_id, settings.cloud.class_parameters())

    def declared_objects(
        self,
        found: SecretProviderClass,
        who: Identity,
        settings: Settings,
        attributes: Mapping[str, str] | None = None,
    ) -> tuple[list[ObjectRef], list[str]]:
        if who.store != PROVIDER:
            # The pipeline asks with the identity this provider resolved; anything else is not judged: deny.
            problem = f"SecretProviderClass {found.name} (provider: azure) cannot be judged for a {who.store} identity"
            return [], [problem]
        return classes.declared_objects(
            found, who.client_id, settings.allow_node_identity, settings.allow_pod_identity, attributes
        )

    def class_problems(self, found: SecretProviderClass, settings: Settings) -> list[str]:
        return classes.identity_problems(found, settings.allow_node_identity, settings.allow_pod_identity)

    def init_spec(self, who: Identity, settings: Settings) -> InitSpec:
        # The standard workload-identity variables, for the init container only; the Azure Workload Identity
        # webhook leaves containers that already carry them alone.
        env: tuple[tuple[str, str], ...] = (
            (ENV_VAULT_DNS_SUFFIX, settings.vault_dns_suffix),
            (ENV_CLIENT_ID, who.client_id),
            (ENV_TENANT_ID, who.tenant_id),
            (ENV_TOKEN_FILE, f"{TOKEN_DIR}/{TOKEN_FILE}"),
            (ENV_AUTHORITY, settings.authority_host),
        )
        sources: tuple[dict[str, Any], ...] = ()
        if settings.init_ca_configmap:
            # The cloud's private CA, beside the token; azure-core's requests transport trusts this bundle.
            items = [{"key": CA_KEY, "path": CA_KEY}]
            sources = ({"configMap": {"name": settings.init_ca_configmap, "items": items}},)
            env = (*env, (ENV_CA_BUNDLE, f"{TOKEN_DIR}/{CA_KEY}"))
        return InitSpec(settings.init_image, env, TOKEN_DIR, TOKEN_AUDIENCE, settings.init_volume_size, sources)

    def verifiable(self, refs: Sequence[ObjectRef]) -> list[ObjectRef]:
        # Key objects cannot be read as secrets: Key Vault keeps them.
        return [r for r in refs if r.type is not ObjectType.KEY]

    def live_verifier(self, settings: Settings, cluster: Cluster, metrics: Metrics) -> LiveVerifier:
        from webhook.providers.azure.verify import Verifier  # the SDKs load only when verification runs

        return Verifier(settings, cluster, metrics)

    def access_from_env(self, env: Mapping[str, str]) -> tuple[VaultAccess | None, list[str], list[str]]:
        credentials, identity_problems = credentials_from_env(env)
        suffix, overrides, endpoint_problems = endpoints_from_env(env)
        access = VaultAccess(credentials, suffix, overrides) if credentials is not None else None
        return access, identity_problems, endpoint_problems

    def reader(self, access: VaultAccess, timeout: float, assertion: Callable[[], str] | None = None) -> Reader:
        from webhook.providers.azure import keyvault  # the SDKs load only for real reads

        keyvault.quiet_sdk_logging()
        return keyvault.KeyVaultReader(access, timeout, assertion)


INSTANCE = AzureProvider()
