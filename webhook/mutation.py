"""/mutate: the patch for one pod, as a short script over the pure stages.

bytes → review.decode_review → contract.parse_annotations → lookups → identity → policy → plan → response.
Side effects (creating the SecretProviderClass) happen only here and only when the request is not a dry run.
"""

from __future__ import annotations

import logging
from typing import Any

from webhook import contract, identity, live, plan, policy, providers, review, targets
from webhook.access import Denial, Judge, Verdict
from webhook.cluster import Cluster, ClusterError
from webhook.injection import (
    Injection,
    Lookups,
    Outcome,
    answer_pod,
    describe_pod,
    enumerate_problems,
    is_injected,
    squatted,
    tampered,
)
from webhook.metrics import Metrics
from webhook.names import INIT_CONTAINER, INIT_FIRST
from webhook.providers import LiveVerifier, Provider
from webhook.settings import Settings

log = logging.getLogger(__name__)


def early_readers(pod: dict[str, Any], wanted: contract.InjectionRequest) -> list[str]:
    """Target init containers that run before kvinject-fetch would find the directory empty."""
    if wanted.mode is not contract.Mode.INIT or wanted.init_first or not wanted.containers:
        return []
    inits = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or [] if isinstance(c, dict)}
    early = [n for n in wanted.containers if n in inits and n != INIT_CONTAINER]
    if not early:
        return []
    return [
        f"init containers {', '.join(early)} run before {INIT_CONTAINER} ({INIT_FIRST}: false)"
        f" and will find {wanted.mount_path} empty"
    ]


class Mutator:
    def __init__(self, settings: Settings, cluster: Cluster, metrics: Metrics | None = None):
        self.settings = settings
        self.cluster = cluster
        self.lookups = Lookups(settings, cluster)
        self.injection = Injection(settings, self.lookups)
        self.metrics = metrics or Metrics()
        self.judge = Judge(settings.enforcement, self.metrics, settings.relaxable_namespaces)
        self._verifiers: dict[str, LiveVerifier] = {}

    def verifier(self, provider: Provider) -> LiveVerifier:
        """The store's live verifier, one per store for the process (its cache and budget are per store)."""
        if provider.name not in self._verifiers:
            self._verifiers[provider.name] = provider.live_verifier(self.settings, self.cluster, self.metrics)
        return self._verifiers[provider.name]

    async def mutate(self, request: review.Request) -> Outcome:
        if not request.is_pod_create:
            return Outcome(review.allowed(request.uid), "skipped")
        return await answer_pod(request, lambda pod: self._mutate_pod(request, pod))

    async def _mutate_pod(self, request: review.Request, pod: dict[str, Any]) -> Outcome:
        meta = pod.get("metadata") or {}
        if not isinstance(meta, dict) or not contract.is_opted_in(meta.get("labels")):
            return Outcome(review.allowed(request.uid), "skipped")
        namespace = request.namespace
        if not namespace:
            raise Denial("the AdmissionReview has no namespace", 400, "bad-request")
        ns = await self.lookups.namespace(namespace)
        try:
            wanted = contract.parse_annotations(meta.get("annotations"), ns.default_vault if ns else None)
        except contract.ContractError as exc:
            raise Denial(enumerate_problems("annotation", exc.problems), 400, "bad-annotation") from None
        provider = providers.get(wanted.store)
        sa_name, account, who = await self.lookups.identity(namespace, pod, provider, wanted.role)

        exp = await self.injection.expected(namespace, wanted, account, who)
        class_name, refs, problems, generated = exp.class_name, exp.refs, exp.problems, exp.generated

        try:
            ops = exp.operations(pod, wanted)
        except plan.PlanError as exc:
            if is_injected(pod):  # a reinvocation after a later webhook changed what we injected
                raise Denial(tampered(pod, exc.problems), 403, "tampered") from None
            raise Denial(enumerate_problems("collision", exc.problems), 400, "collision") from None
        mode, warnings = self.judge.mode(ns)
        warnings.extend(early_readers(pod, wanted))
        warnings.extend(targets.pending_warning(targets.select(pod, wanted)))
        audit = {
            "service-account": f"{namespace}/{sa_name}",
            "client-id": who.client_id,
            "mode": wanted.mode.value,
            "objects": ",".join(str(r) for r in refs),
        }
        if class_name:
            audit["secret-provider-class"] = class_name
        if problems:
            verdict = self.judge.findings("mutate", mode, "provider-class", problems, audit)
        else:
            decision = policy.decide(refs, namespace, sa_name, who, self.cluster.policies_for(who.client_id))
            verdict = self.judge.decision("mutate", mode, decision, audit)
            if decision.allowed and live.enabled(self.settings, ns):
                verdict = await self._verify_live(provider, (namespace, sa_name, who), refs, mode, verdict)

        if generated is not None:
            await self._ensure_generated(namespace, generated, request.dry_run)
        log.debug(
            "admitted uid=%s namespace=%s %s mode=%s class=%s ops=%d dry_run=%s decision=%s",
            request.uid,
            namespace,
            describe_pod(pod),
            wanted.mode.value,
            class_name,
            len(ops),
            request.dry_run,
            verdict.audit["decision"],
        )
        return Outcome(
            review.patched(request.uid, ops, [*wanted.warnings, *warnings, *verdict.warnings], verdict.audit),
            "injected" if ops else "unchanged",
            provider_class=generated,
            ops=ops,
            would_deny=verdict.would_deny,
        )

    async def _ensure_generated(self, namespace: str, generated: dict[str, Any], dry_run: bool) -> None:
        """Create the generated class (never on a dry run); one that exists already must be exactly it."""
        name = generated["metadata"]["name"]
        if dry_run:
            stored = await self.lookups.provider_class(namespace, name, cache_only=True)
        else:
            try:
                stored = await self.cluster.ensure_provider_class(generated)
            except ClusterError as exc:
                raise Denial(str(exc), 503, "cluster") from None
        if stored is not None:
            problem = squatted(stored, generated)
            if problem:
                raise Denial(problem, 403, "provider-class-tampered")

    async def _verify_live(
        self,
        provider: Provider,
        reader: tuple[str, str, identity.Identity],
        refs: list[contract.ObjectRef],
        mode: policy.Enforcement,
        verdict: Verdict,
    ) -> Verdict:
        """Policy allowed it; now the store must agree, for the objects it can prove access to."""
        namespace, account, who = reader
        findings = await self.verifier(provider).verify(namespace, account, who, provider.verifiable(refs))
        refused = [f for f in findings if f.result not in (live.Result.ALLOWED, live.Result.UNVERIFIED)]
        unverified = [f for f in findings if f.result is live.Result.UNVERIFIED]
        audit = {**verdict.audit, "live-verification": ",".join(sorted({f.result.value for f in findings}))}
        warnings = list(verdict.warnings)
        if unverified and not refused:
            message = "; ".join(f.message for f in unverified)
            if not self.settings.live_fail_open:
                raise Denial(
                    f"could not verify access with {provider.store_name}: {message}",
                    403,
                    "live-unverified",
                    {**audit, "decision": "denied", "reason": message},
                )
            store = provider.store_name
            warnings.append(f"kvinject could not verify access with {store} and admitted the pod: {message}")
        if refused:
            reason = f"live-{refused[0].result.value}"
            found = self.judge.findings("mutate", mode, reason, [f.message for f in refused], audit)
            return Verdict([*warnings, *found.warnings], found.audit, found.would_deny)
        return Verdict(warnings, audit)
