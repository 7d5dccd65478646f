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
