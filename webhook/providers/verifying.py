"""Live verification's store-neutral machinery: each provider's verifier proves access its own way, this runs it.

Per (namespace, ServiceAccount, identity): outcomes are cached per object (allowed and refused for separate
TTLs; "could not verify" never), concurrent identical checks share one run (a rollout of many replicas costs one
verification), a short-lived ServiceAccount token is minted through the Cluster seam (TokenRequest, audience
the store's), and the whole check is bounded by one time budget below the webhook timeout. Whether an
unverified object denies the pod (fail closed, the default) or admits it with a warning (fail open) is the
pipeline's decision on `Result.UNVERIFIED`.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from webhook.cluster import Cluster, ClusterError
from webhook.contract import ObjectRef
from webhook.identity import Identity
from webhook.live import Finding, Result
from webhook.metrics import Metrics
from webhook.settings import Settings

TOKEN_SECONDS = 600  # the shortest expiry the TokenRequest API grants

# (namespace, ServiceAccount, client id or role, tenant or auth mount)
Principal = tuple[str, str, str, str]


class CachedVerifier(ABC):
    """A provider's `LiveVerifier`: subclasses name the store, the token audience, and check one principal."""

    store_name: str  # how messages name the store ("Azure did not answer ...")

    def __init__(self, settings: Settings, cluster: Cluster, metrics: Metrics):
        self.settings = settings
        self.cluster = cluster
        self.metrics = metrics
        self._cache: dict[tuple[Any, ...], tuple[float, Finding]] = {}
        self._inflight: dict[tuple[Any, ...], asyncio.Future[list[Finding]]] = {}

    @abstractmethod
    def audience(self) -> str:
        """The audience of the ServiceAccount token the store accepts."""

    @abstractmethod
    async def check(
        self, principal: Principal, refs: tuple[ObjectRef, ...], token: str, deadline: float
    ) -> list[Finding]:
        """One finding per ref, proven with the store as `principal` holding `token`, by `deadline` (monotonic).
        Runs inside the budget: cancelled when it is spent."""

    async def verify(self, namespace: str, account: str, who: Identity, refs: Sequence[ObjectRef]) -> list[Finding]:
        """One finding per object; UNVERIFIED ones when the store could not answer within the budget."""
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

    async def _coalesced(self, principal: Principal, refs: tuple[ObjectRef, ...]) -> list[Finding]:
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

    async def _run(self, principal: Principal, refs: tuple[ObjectRef, ...]) -> list[Finding]:
        namespace, account, _, _ = principal
        budget = self.settings.live_budget_seconds
        deadline = time.monotonic() + budget
        try:
            token = await asyncio.wait_for(
                self.cluster.request_token(namespace, account, self.audience(), TOKEN_SECONDS), timeout=budget
            )
        except (ClusterError, TimeoutError) as exc:
            reason = str(exc) if isinstance(exc, ClusterError) else "the TokenRequest API did not answer in time"
            return [
                Finding(r, Result.UNVERIFIED, f"could not mint a token for {namespace}/{account}: {reason}")
                for r in refs
            ]
        remaining = max(0.1, deadline - time.monotonic())
        try:
            findings = await asyncio.wait_for(self.check(principal, refs, token, deadline), timeout=remaining)
        except TimeoutError:
            return [Finding(r, Result.UNVERIFIED, f"{self.store_name} did not answer within {budget:g}s") for r in refs]
        now = time.monotonic()
        for finding in findings:
            ttl = {Result.ALLOWED: self.settings.live_positive_ttl_seconds, Result.UNVERIFIED: 0.0}.get(
                finding.result, self.settings.live_negative_ttl_seconds
            )
            if ttl > 0:
                self._cache[(*principal, finding.ref)] = (now + ttl, finding)
        return findings
