"""Live verification with Azure: prove with Azure itself that a ServiceAccount can read what its pod asks for.

For each (ServiceAccount, identity) it mints a short-lived token (TokenRequest, audience
api://AzureADTokenExchange), exchanges it with Microsoft Entra ID for the identity, and reads each
object once, dropping the value at once. Outcomes are cached per object (allowed and refused for
separate TTLs; "could not verify" never), and concurrent identical checks share one run, so a
rollout of many replicas costs one verification. Everything is bounded by a time budget below the
webhook timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from webhook.cluster import Cluster, ClusterError
from webhook.contract import ObjectRef, ObjectType
from webhook.identity import Identity
from webhook.live import Finding, Result
from webhook.metrics import Metrics
from webhook.providers.azure.access import Credentials, VaultAccess
from webhook.providers.azure.names import TOKEN_AUDIENCE
from webhook.providers.reading import FailureKind, ObjectSpec, Reader, ReadError
from webhook.settings import Settings

log = logging.getLogger(__name__)

TOKEN_SECONDS = 600  # the shortest expiry the TokenRequest API grants

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


class Verifier:
    def __init__(
        self,
        settings: Settings,
        cluster: Cluster,
        metrics: Metrics,
        reader_factory: AssertionReaderFactory = _default_reader,
    ):
        self.settings = settings
        self.cluster = cluster
        self.metrics = metrics
        self.reader_factory = reader_factory
        self._cache: dict[tuple[Any, ...], tuple[float, Finding]] = {}
        self._inflight: dict[tuple[Any, ...], asyncio.Future[list[Finding]]] = {}

    async def verify(self, namespace: str, account: str, who: Identity, refs: Sequence[ObjectRef]) -> list[Finding]:
        """One finding per object; UNVERIFIED ones when Azure could not answer within the budget."""
        started = time.perf_counter()
        principal = (namespace, account, who.client_id, who.tenant_id)
        now = time.monotonic()
        findings: dict[ObjectRef, Finding] = {}
        missing: list[ObjectRef] = []
        for ref in dict.fromkeys(refs):
            cached = self._cache.get((*principal, ref))
            if cached is not None and cached[0] > now:
                findings[ref] = cached[1]
                self.metrics.live_cache.labels("hit").inc()
            else:
                missing.append(ref)
                self.metrics.live_cache.labels("miss").inc()
        if missing:
            for finding in await self._coalesced(principal, tuple(sorted(missing))):
                findings[finding.ref] = finding
        for finding in findings.values():
            self.metrics.live_outcomes.labels(finding.result.value).inc()
        self.metrics.live_duration.observe(time.perf_counter() - started)
        return [findings[r] for r in dict.fromkeys(refs)]

    async def _coalesced(self, principal: tuple[str, str, str, str], refs: tuple[ObjectRef, ...]) -> list[Finding]:
        key = (*principal, refs)
        running = self._inflight.get(key)
        if running is not None:
            self.metrics.live_cache.labels("coalesced").inc()
            return await asyncio.shield(running)
        future: asyncio.Future[list[Finding]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._run(principal, refs)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            del self._inflight[key]

    async def _run(self, principal: tuple[str, str, str, str], refs: tuple[ObjectRef, ...]) -> list[Finding]:
        namespace, account, client_id, tenant_id = principal
        budget = self.settings.live_budget_seconds
        deadline = time.monotonic() + budget
        try:
            token = await asyncio.wait_for(
                self.cluster.request_token(namespace, account, TOKEN_AUDIENCE, TOKEN_SECONDS), timeout=budget
            )
        except (ClusterError, TimeoutError) as exc:
            reason = str(exc) if isinstance(exc, ClusterError) else "the TokenRequest API did not answer in time"
            return [
                Finding(r, Result.UNVERIFIED, f"could not mint a token for {namespace}/{account}: {reason}")
                for r in refs
            ]
        remaining = max(0.1, deadline - time.monotonic())
        access = VaultAccess(
            # No token file: the token minted above is handed to the credential in memory.
            Credentials(client_id, tenant_id, None, self.settings.authority_host),
            self.settings.vault_dns_suffix,
            dict(self.settings.vault_urls),
        )
        work = asyncio.to_thread(self._check_all, access, remaining, refs, token, deadline)
        try:
            findings = await asyncio.wait_for(work, timeout=remaining)
        except TimeoutError:
            return [Finding(r, Result.UNVERIFIED, f"Azure did not answer within {budget:g}s") for r in refs]
        now = time.monotonic()
        for finding in findings:
            ttl = {Result.ALLOWED: self.settings.live_positive_ttl_seconds, Result.UNVERIFIED: 0.0}.get(
                finding.result, self.settings.live_negative_ttl_seconds
            )
            if ttl > 0:
                self._cache[(*principal, finding.ref)] = (now + ttl, finding)
        return findings

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
