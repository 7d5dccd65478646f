"""Names only the Azure provider uses: the init container's variables and Entra ID's token audience.

The ServiceAccount annotations and the public cloud's defaults are shared with the pipeline: webhook.names.
"""

from __future__ import annotations

PROVIDER = "azure"  # spec.provider of a SecretProviderClass the Azure provider serves

# The audience Microsoft Entra ID accepts in a federated token exchange.
TOKEN_AUDIENCE = "api://AzureADTokenExchange"

# The standard workload-identity variables azure-identity reads, and kvinject's own for Key Vault endpoints.
ENV_CLIENT_ID = "AZURE_CLIENT_ID"
ENV_TENANT_ID = "AZURE_TENANT_ID"
ENV_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
ENV_AUTHORITY = "AZURE_AUTHORITY_HOST"
ENV_VAULT_DNS_SUFFIX = "KVINJECT_VAULT_DNS_SUFFIX"
ENV_VAULT_URLS = "KVINJECT_VAULT_URLS"

# A private cloud's CA bundle for the init container: the ConfigMap key, and the variable requests reads.
CA_KEY = "ca.crt"
ENV_CA_BUNDLE = "REQUESTS_CA_BUNDLE"

# What `kvinject fetch --help` says about each of them.
FETCH_ENVIRONMENT = {
    ENV_CLIENT_ID: "client id of the workload identity to read as (required)",
    ENV_TENANT_ID: "its Entra ID tenant (required)",
    ENV_TOKEN_FILE: "the projected ServiceAccount token exchanged for an Entra ID token (required)",
    ENV_AUTHORITY: "Entra ID's authority host (default: the public cloud's)",
    ENV_VAULT_DNS_SUFFIX: "Key Vault's DNS suffix (default: vault.azure.net)",
    ENV_VAULT_URLS: "JSON object vault name -> https URL, for vaults elsewhere (private endpoints)",
    ENV_CA_BUNDLE: "CA bundle trusted for Entra ID and Key Vault (default: the image's public roots)",
}
