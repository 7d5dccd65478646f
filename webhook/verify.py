"""Live verification: prove with Azure itself that a ServiceAccount can read what its pod asks for.

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
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from webhook.cluster import Cluster, ClusterError
from webhook.contract import ObjectRef
from webhook.fetch import FailureKind, FetchConfig, ObjectSpec, ObjectType, Reader, ReadError
from webhook.fetch import Identity as FetchIdentity
from webhook.identity import Identity
from webhook.metrics import Metrics
from webhook.model import Namespace
from webhook.settings import Settings

log = logging.getLogger(__name__)

AUDIENCE = "api://AzureADTokenExchange"
TOKEN_SECONDS = 600  # the shortest expiry the TokenRequest API grants
LABEL = "kvinject.io/live-verify"


class Result(StrEnum):
    ALLOWED = "allowed"
    NOT_FEDERATED = "not-federated"
    DENIED = "denied"
    NOT_FOUND = "not-found"
    UNVERIFIED = "unverified"  # Azure unreachable, throttled, or out of time: never cached


@dataclass(frozen=True, slots=True)
class Finding:
    ref: ObjectRef
    result: Result
    message: str = ""


# What a failed read means for admission, and its cache class.
_RESULTS = {
    FailureKind.DENIED: Result.DENIED,
    FailureKind.NOT_FOUND: Result.NOT_FOUND,
    FailureKind.TOKEN: Result.NOT_FEDERATED,
}

ReaderFactory = Callable[[FetchConfig, Callable[[], str]], Reader]


def _default_reader(config: FetchConfig, assertion: Callable[[], str]) -> Reader:
    from webhook.azure import KeyVaultReader  # only when verification is on: the SDKs load lazily

    return KeyVaultReader(config, assertion)


def enabled(settings: Settings, namespace: Namespace | None) -> bool:
    """The server setting, overridden per namespace by the label kvinject.io/live-verify=true|false.

    The label may always turn verification on; off only in namespaces on the server's allowlist.
    """
    value = (namespace.labels if namespace else {}).get(LABEL)
    if value == "true":
        return True
    if value == "false" and namespace is not None and namespace.name in settings.relaxable_namespaces:
        return False
    return settings.live_verify


class Verifier:
    def __init__(
        self, settings: Settings, cluster: Cluster, metrics: Metrics, reader_factory: ReaderFactory = _default_reader
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
                self.cluster.request_token(namespace, account, AUDIENCE, TOKEN_SECONDS), timeout=budget
            )
        except (ClusterError, TimeoutError) as exc:
            reason = str(exc) if isinstance(exc, ClusterError) else "the TokenRequest API did not answer in time"
            return [
                Finding(r, Result.UNVERIFIED, f"could not mint a token for {namespace}/{account}: {reason}")
                for r in refs
            ]
        remaining = max(0.1, deadline - time.monotonic())
        config = FetchConfig(
            objects=tuple(
                ObjectSpec(
                    alias=r.name,
                    vault=r.vault,
                    name=r.name,
                    type=ObjectType.CERT if r.type.value == "cert" else ObjectType.SECRET,
                    version=r.version,
                )
                for r in refs
            ),
            output_dir=Path("/nonexistent"),  # nothing is ever written
            identity=FetchIdentity(client_id, tenant_id, Path("/nonexistent"), self.settings.authority_host),
            vault_dns_suffix=self.settings.vault_dns_suffix,
            vault_url_overrides=dict(self.settings.vault_urls),
            timeout=remaining,
        )
        work = asyncio.to_thread(self._check_all, config, token, client_id, deadline)
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

    def _check_all(self, config: FetchConfig, token: str, client_id: str, deadline: float) -> list[Finding]:
        """Blocking: one token exchange, then one read per object; values are dropped unread."""
        reader = self.reader_factory(config, lambda: token)
        findings: list[Finding] = []
        refused: Finding | None = None  # a refused token exchange answers for every object
        try:
            for spec, ref in zip(config.objects, _refs(config), strict=True):
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
                    finding = Finding(ref, _RESULTS.get(exc.kind, Result.UNVERIFIED), describe(exc, ref, client_id))
                    if exc.kind in (FailureKind.TOKEN, FailureKind.TOKEN_UNREACHABLE):
                        refused = finding
                    findings.append(finding)
        finally:
            reader.close()
        return findings


def _refs(config: FetchConfig) -> list[ObjectRef]:
    from webhook.contract import ObjectType as RefType

    return [ObjectRef(o.vault, o.name, RefType(o.type.value), o.version) for o in config.objects]


def describe(error: ReadError, ref: ObjectRef, client_id: str) -> str:
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
