"""Which Azure cloud kvinject, its init container and the Azure provider talk to.

A cloud decides three things that must agree, or the pod's two readers would read in different places: the
generated SecretProviderClass's `cloudName` (and `cloudEnvFileName`), which the Azure provider resolves on the
node; the Microsoft Entra ID authority `kvinject fetch` and live verification exchange tokens with; and the
Key Vault DNS suffix they read from. The named clouds are go-autorest's, as the provider v1.7.0 knows them; a
custom cloud (Azure Stack Hub, an air-gapped region) is an environment file in go-autorest's JSON format,
read by kvinject at start and by the provider from the same path on the node (`AzureStackCloud`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from webhook.names import DEFAULT_AUTHORITY, DEFAULT_VAULT_DNS_SUFFIX

AZURE_STACK_CLOUD = "AzureStackCloud"
MAX_ENV_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Cloud:
    name: str  # the provider's cloudName; "" leaves the provider's default (the public cloud)
    authority_host: str
    vault_dns_suffix: str
    env_file: str = ""  # AzureStackCloud: the environment file, at the same path on nodes

    def class_parameters(self) -> dict[str, str]:
        params = {"cloudName": self.name} if self.name else {}
        if self.env_file:
            params["cloudEnvFileName"] = self.env_file
        return params


PUBLIC = Cloud("", DEFAULT_AUTHORITY, DEFAULT_VAULT_DNS_SUFFIX)

# go-autorest's environments (github.com/Azure/go-autorest/autorest v0.11.30, azure/environments.go), by the
# upper-cased name EnvironmentFromName matches; values are its activeDirectoryEndpoint and keyVaultDNSSuffix.
_NAMED = {
    "AZURECLOUD": ("https://login.microsoftonline.com/", "vault.azure.net"),
    "AZUREPUBLICCLOUD": ("https://login.microsoftonline.com/", "vault.azure.net"),
    "AZUREUSGOVERNMENT": ("https://login.microsoftonline.us/", "vault.usgovcloudapi.net"),
    "AZUREUSGOVERNMENTCLOUD": ("https://login.microsoftonline.us/", "vault.usgovcloudapi.net"),
    "AZURECHINACLOUD": ("https://login.chinacloudapi.cn/", "vault.azure.cn"),
    "AZUREGERMANCLOUD": ("https://login.microsoftonline.de/", "vault.microsoftazure.de"),
}


class CloudError(ValueError):
    """The cloud settings cannot be used; the message names the setting and the fix."""


def _env_file_cloud(path: Path) -> Cloud:
    where = f"cloud environment file {path}"
    try:
        raw = path.read_bytes()[: MAX_ENV_FILE_BYTES + 1]
    except OSError as exc:
        raise CloudError(f"cannot read {where}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_ENV_FILE_BYTES:
        raise CloudError(f"{where} is larger than {MAX_ENV_FILE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise CloudError(f"{where} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CloudError(f"{where} must hold a JSON object (go-autorest's Environment)")
    authority, suffix = doc.get("activeDirectoryEndpoint"), doc.get("keyVaultDNSSuffix")
    problems = []
    if not isinstance(authority, str) or urlsplit(authority).scheme != "https" or not urlsplit(authority).netloc:
        problems.append("activeDirectoryEndpoint must be an https URL")
    if not isinstance(suffix, str) or not suffix.strip(".") or "/" in suffix or ":" in suffix:
        problems.append("keyVaultDNSSuffix must be a DNS suffix")
    if problems:
        raise CloudError(f"{where}: {'; '.join(problems)}")
    assert isinstance(authority, str) and isinstance(suffix, str)
    return Cloud(AZURE_STACK_CLOUD, authority, suffix.strip(".").lower(), str(path))


def resolve(name: str, env_file: Path | None) -> Cloud | None:
    """The cloud the settings name; None when they name none (the public cloud, left to other settings)."""
    if env_file is not None:
        if name and name.upper() != AZURE_STACK_CLOUD.upper():
            raise CloudError(
                f"KVINJECT_CLOUD_ENV_FILE is the custom cloud of {AZURE_STACK_CLOUD}; KVINJECT_CLOUD_NAME is {name!r}:"
                f" unset it or set it to {AZURE_STACK_CLOUD}"
            )
        return _env_file_cloud(env_file)
    if not name:
        return None
    if name.upper() == AZURE_STACK_CLOUD.upper():
        raise CloudError(f"KVINJECT_CLOUD_NAME={AZURE_STACK_CLOUD} needs KVINJECT_CLOUD_ENV_FILE, its environment file")
    known = _NAMED.get(name.upper())
    if known is None:
        names = "AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud, AzureStackCloud"
        raise CloudError(f"KVINJECT_CLOUD_NAME={name!r} is not a cloud the Azure provider knows ({names})")
    return Cloud(name, *known)
