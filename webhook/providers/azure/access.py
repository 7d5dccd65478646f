"""Where and as whom the init container (and live verification) reads Key Vault: from the environment or settings."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from webhook.names import DEFAULT_AUTHORITY, DEFAULT_VAULT_DNS_SUFFIX
from webhook.providers.azure.names import (
    ENV_AUTHORITY,
    ENV_CLIENT_ID,
    ENV_TENANT_ID,
    ENV_TOKEN_FILE,
    ENV_VAULT_DNS_SUFFIX,
    ENV_VAULT_URLS,
)

_DNS_SUFFIX_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


@dataclass(frozen=True)
class Credentials:
    """The workload identity to authenticate as (the standard AZURE_* variables)."""

    client_id: str
    tenant_id: str
    token_file: Path | None  # None: the caller holds the token in memory (live verification)
    authority: str


@dataclass(frozen=True)
class VaultAccess:
    """An identity plus the Key Vault endpoints it reads: public DNS names unless overridden."""

    credentials: Credentials
    vault_dns_suffix: str = DEFAULT_VAULT_DNS_SUFFIX
    vault_url_overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def principal(self) -> str:
        return self.credentials.client_id

    def vault_url(self, vault: str) -> str:
        return self.vault_url_overrides.get(vault) or f"https://{vault}.{self.vault_dns_suffix}"

    def is_overridden(self, vault: str) -> bool:
        """True when the vault is not addressed by its public DNS name (tests, private endpoints)."""
        return vault in self.vault_url_overrides


def credentials_from_env(env: Mapping[str, str]) -> tuple[Credentials | None, list[str]]:
    problems = [f"{key} is not set" for key in (ENV_CLIENT_ID, ENV_TENANT_ID, ENV_TOKEN_FILE) if not env.get(key)]
    authority = env.get(ENV_AUTHORITY) or DEFAULT_AUTHORITY
    if urlsplit(authority).scheme != "https" or not urlsplit(authority).netloc:
        problems.append(f"{ENV_AUTHORITY} must be an https URL, not {authority!r}")
    token_file = Path(env.get(ENV_TOKEN_FILE, ""))
    if env.get(ENV_TOKEN_FILE) and not token_file.is_file():
        problems.append(f"{ENV_TOKEN_FILE} {token_file} does not exist (is the projected token volume mounted?)")
    if problems:
        return None, problems
    return Credentials(env[ENV_CLIENT_ID], env[ENV_TENANT_ID], token_file, authority), []


def _vault_urls(raw: str | None) -> tuple[dict[str, str], list[str]]:
    if not raw:
        return {}, []
    try:
        urls = json.loads(raw)
    except ValueError as exc:
        return {}, [f"{ENV_VAULT_URLS} is not valid JSON ({exc})"]
    if not isinstance(urls, dict):
        return {}, [f"{ENV_VAULT_URLS} must be a JSON object of vault name -> https URL"]
    problems = []
    for vault, url in urls.items():
        if not isinstance(url, str) or urlsplit(url).scheme != "https" or not urlsplit(url).netloc:
            problems.append(f"{ENV_VAULT_URLS}: the URL for {vault!r} must be an https URL")
    return ({k: v.rstrip("/") for k, v in urls.items()} if not problems else {}), problems


def endpoints_from_env(env: Mapping[str, str]) -> tuple[str, dict[str, str], list[str]]:
    """The vault DNS suffix and URL overrides, with the problems found."""
    overrides, problems = _vault_urls(env.get(ENV_VAULT_URLS))
    suffix = (env.get(ENV_VAULT_DNS_SUFFIX) or DEFAULT_VAULT_DNS_SUFFIX).strip(".").lower()
    if not _DNS_SUFFIX_RE.match(suffix):
        problems.append(f"{ENV_VAULT_DNS_SUFFIX} {suffix!r} is not a DNS suffix")
    return suffix, overrides, problems
