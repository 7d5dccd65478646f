"""Live verification with Azure: prove with Azure itself that a ServiceAccount can read what its pod asks for.

For each (ServiceAccount, identity) it mints a short-lived token (TokenRequest, audience
api://AzureADTokenExchange), exchanges it with Microsoft Entra ID for the identity, and reads each
object once, dropping the value at once. The cache, coalescing and budget are store-neutral
(webhook/providers/verifying.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from webhook.cluster import Cluster
from webhook.contract import ObjectRef, ObjectType
from webhook.live import Finding, Result
from webhook.metrics import Metrics
from webhook.providers.azure.access import Credentials, VaultAccess
from webhook.providers.azure.names import TOKEN_AUDIENCE
from webhook.providers.reading import FailureKind, ObjectSpec, Reader, ReadError
from webhook.providers.verifying import TOKEN_SECONDS, CachedVerifier, Principal
from webhook.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["TOKEN_SECONDS", "Verifier", "explain"]  # TOKEN_SECONDS: what the token policy must allow

# What a failed read means for admission, and its cache class.
_RESULTS = {
    FailureKind.DENIED: Result.DENIED,
    FailureKind.NOT_FOUND: Result.NOT_FOUND,
    FailureKind.TOKEN: Result.NOT_FEDERATED,
}

# A reader for an access, the budget, and the token held in memory.
AssertionReaderFactory = Callable[[VaultAccess, float, Callable[[], str]], Reader]


def _default_reader(access: VaultAccess, timeout: float, assertion: Callable[[], str]) -> Reader:
    from webhook.providers.azure.keyvault import KeyVaultReader  # only when verification is on: SDKs load lazily

    return KeyVaultReader(access, timeout, assertion)


class Verifier(CachedVerifier):
    store_name = "Azure"

    def __init__(
        self,
        settings: Settings,
        cluster: Cluster,
        metrics: Metrics,
        reader_factory: AssertionReaderFactory = _default_reader,
    ):
        super().__init__(settings, cluster, metrics)
        self.reader_factory = reader_factory

    def audience(self) -> str:
        return TOKEN_AUDIENCE

    async def check(
        self, principal: Principal, refs: tuple[ObjectRef, ...], token: str, deadline: float
    ) -> list[Finding]:
        _, _, client_id, tenant_id = principal
        remaining = max(0.1, deadline - time.monotonic())
        access = VaultAccess(
            # No token file: the token minted by the caller is handed to the credential in memory.
            Credentials(client_id, tenant_id, None, self.settings.authority_host),
            self.settings.vault_dns_suffix,
            dict(self.settings.vault_urls),
        )
        return await asyncio.to_thread(self._check_all, access, remaining, refs, token, deadline)

    def _check_all(
        self, access: VaultAccess, budget: float, refs: Sequence[ObjectRef], token: str, deadline: float
    ) -> list[Finding]:
        """Blocking: one token exchange, then one read per object; values are dropped unread."""
        reader = self.reader_factory(access, budget, lambda: token)
        findings: list[Finding] = []
        refused: Finding | None = None  # a refused token exchange answers for every object
        client_id = access.principal
        try:
            for ref in refs:
                kind = ObjectType.CERT if ref.type is ObjectType.CERT else ObjectType.SECRET
                spec = ObjectSpec(alias=ref.name, vault=ref.vault, name=ref.name, type=kind, version=ref.version)
                if refused is not None:
                    findings.append(Finding(ref, refused.result, refused.message))
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0.05:
                    findings.append(Finding(ref, Result.UNVERIFIED, "Azure did not answer within the budget"))
                    continue
                try:
                    value = reader.read(spec, remaining)
                    del value  # proof of access is all we wanted
                    findings.append(Finding(ref, Result.ALLOWED))
                except ReadError as exc:
                    finding = Finding(ref, _RESULTS.get(exc.kind, Result.UNVERIFIED), explain(exc, ref, client_id))
                    if exc.kind in (FailureKind.TOKEN, FailureKind.TOKEN_UNREACHABLE):
                        refused = finding
                    findings.append(finding)
        finally:
            reader.close()
        return findings


def explain(error: ReadError, ref: ObjectRef, client_id: str) -> str:
    """The sentence an app team reads for a failed check: names, codes and Azure's own words only."""
    match error.kind:
        case FailureKind.TOKEN:
            return (
                f"Microsoft Entra ID refused to exchange the ServiceAccount's token for identity {client_id}"
                f" ({error.detail}): add a federated credential for this ServiceAccount to that identity"
            )
        case FailureKind.DENIED:
            return f"Azure says identity {client_id} may not read {ref} (Key Vault: {error.detail})"
        case FailureKind.NOT_FOUND:
            return f"{ref} does not exist in Key Vault"
        case _:
            return f"could not verify {ref}: {error.kind.value}: {error.detail}"
