"""The validating side: re-check the final pod, after every mutating webhook has run.

Closes the bypasses the mutating path cannot see: a hand-written Secrets Store
CSI volume (foreign or node-identity SecretProviderClass), reading another
workload's synced Secret, and a later webhook changing what kvinject injected.
"""

from __future__ import annotations

import logging
from typing import Any

from webhook import contract, plan, podrefs, policy, review, shape, spc
from webhook.access import Denial, Judge
from webhook.admission import (
    Expected,
    Lookups,
    Mutator,
    Outcome,
    denied_outcome,
    describe,
    is_injected,
    tampered,
)
from webhook.cluster import Cluster
from webhook.identity import Identity
from webhook.metrics import Metrics
from webhook.model import SecretProviderClass
from webhook.settings import Settings

log = logging.getLogger(__name__)


class Validator:
    def __init__(self, settings: Settings, cluster: Cluster, metrics: Metrics | None = None):
        metrics = metrics or Metrics()
        self.settings = settings
        self.cluster = cluster
        self.lookups = Lookups(settings, cluster)
        self.judge = Judge(settings.enforcement, metrics)
        self.mutator = Mutator(settings, cluster, metrics)

    async def validate(self, request: review.Request) -> Outcome:
        if not request.is_pod_create:
            return Outcome(review.allowed(request.uid), "skipped")
        pod = request.object
        if pod is None:
            return denied_outcome(request, Denial("request.object is missing or not an object", 400, "bad-request"))
        malformed = shape.problems(pod)
        if malformed:
            return denied_outcome(request, Denial(f"malformed Pod: {'; '.join(malformed)}", 400, "bad-request"))
        try:
            return await self._validate(request, pod)
        except Denial as denial:
            return denied_outcome(request, denial, pod)

    async def _synced(self, namespace: str, names: list[str]) -> dict[str, list[SecretProviderClass]]:
        """Referenced Secrets that some SecretProviderClass syncs from Key Vault."""
        result: dict[str, list[SecretProviderClass]] = {}
        for name in names:
            classes = self.cluster.classes_syncing(namespace, name)
            if not classes and name.startswith("kvinject-"):
                # Generated classes share their synced Secret's name; another replica may have just made it.
                found = await self.lookups.provider_class(namespace, name)
                classes = (
                    [found]
                    if found is not None and any(so.get("secretName") == name for so in found.secret_objects)
                    else []
                )
            if classes:
                result[name] = classes
        return result

    async def _validate(self, request: review.Request, pod: dict[str, Any]) -> Outcome:
        namespace = request.namespace
        spec = pod.get("spec") or {}
        volumes = podrefs.csi_volumes(spec)
        synced = await self._synced(namespace, podrefs.referenced_secrets(spec))
        injected = is_injected(pod)
        if not volumes and not synced and not injected:
            return Outcome(review.allowed(request.uid), "skipped")

        ns = await self.lookups.namespace(namespace)
        mode, warnings = self.judge.mode(ns)
        try:
            sa_name, account, who = await self.lookups.identity(namespace, pod)
        except Denial as denial:
            if denial.reason != "identity":
                raise
            verdict = self.judge.findings("validate", mode, "identity", [denial.message], {})
            return Outcome(review.allowed(request.uid, [*warnings, *verdict.warnings], verdict.audit), "allowed")

        findings: list[tuple[str, str]] = []
        generated: dict[str, SecretProviderClass] = {}
        if injected:
            tamper, expected = await self._check_injected(namespace, pod, account, who, ns)
            findings.extend(tamper)
            if expected is not None and expected.generated is not None:
                # Not created on a dry run, and perhaps not yet seen by this replica: its name is its content.
                generated[expected.class_name] = SecretProviderClass.from_object(expected.generated)
        for volume in volumes:
            findings.extend(await self._check_volume(namespace, sa_name, who, volume, generated))
        for secret, classes in synced.items():
            for found in classes:
                refs, _ = spc.declared_objects(found, who.client_id)
                decision = policy.decide(refs, namespace, sa_name, who, self.cluster.policies_for(who.client_id))
                if not decision.allowed:
                    findings.append(
                        (
                            "synced-secret",
                            f"Secret {secret} holds Key Vault objects synced by SecretProviderClass {found.name}:"
                            f" {decision.message}",
                        )
                    )

        audit = {"service-account": f"{namespace}/{sa_name}", "client-id": who.client_id}
        reason = findings[0][0] if findings else "allowed"
        verdict = self.judge.findings("validate", mode, reason, [f for _, f in findings], audit)
        log.debug(
            "validated uid=%s namespace=%s %s decision=%s",
            request.uid,
            namespace,
            describe(pod),
            verdict.audit["decision"],
        )
        return Outcome(review.allowed(request.uid, [*warnings, *verdict.warnings], verdict.audit), "allowed")

    async def _check_volume(
        self,
        namespace: str,
        sa_name: str,
        who: Identity,
        volume: podrefs.CsiVolume,
        generated: dict[str, SecretProviderClass],
    ) -> list[tuple[str, str]]:
        if not volume.provider_class:
            return [("provider-class", f"volume {volume.name} names no secretProviderClass")]
        found = generated.get(volume.provider_class) or await self.lookups.provider_class(
            namespace, volume.provider_class
        )
        if found is None:
            return [
                (
                    "provider-class",
                    f"volume {volume.name} mounts SecretProviderClass {namespace}/{volume.provider_class},"
                    " which does not exist",
                )
            ]
        if found.provider != "azure":
            return []  # another provider's objects are not Key Vault's, nor this policy's
        refs, problems = spc.declared_objects(
            found, who.client_id, self.settings.allow_node_identity, self.settings.allow_pod_identity
        )
        findings = [("provider-class", f"volume {volume.name}: {p}") for p in problems]
        decision = policy.decide(refs, namespace, sa_name, who, self.cluster.policies_for(who.client_id))
        if not decision.allowed:
            findings.append((decision.reason.value, f"volume {volume.name}: {decision.message}"))
        return findings

    async def _check_injected(
        self, namespace: str, pod: dict[str, Any], account: Any, who: Identity, ns: Any
    ) -> tuple[list[tuple[str, str]], Expected | None]:
        """Re-derive what kvinject injects for the pod as it is now; any difference is tampering."""
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        try:
            wanted = contract.parse(annotations, ns.default_vault if ns else None)
        except contract.ContractError as exc:
            return [("tampered", tampered(pod, [f"its kvinject annotations no longer parse: {exc}"]))], None
        try:
            expected = await self.mutator.expected(namespace, wanted, account, who)
        except Denial as denial:
            return [("tampered", tampered(pod, [denial.message]))], None
        try:
            missing = expected.operations(pod, wanted)
        except plan.PlanError as exc:
            return [("tampered", tampered(pod, exc.problems))], expected
        if missing:
            return [("tampered", tampered(pod, [f"missing {op['path']}" for op in missing]))], expected
        return [], expected
