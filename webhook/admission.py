"""The mutating decision for one AdmissionReview, as a short script over the pure stages.

bytes → review.parse → contract.parse → cluster lookups → identity → plan → response.
Side effects (creating the SecretProviderClass) happen only here and only when
the request is not a dry run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from webhook import contract, identity, plan, policy, review, shape, spc, verify
from webhook.access import Denial, Judge, Verdict
from webhook.cluster import Cluster, ClusterError
from webhook.metrics import Metrics
from webhook.model import Namespace, SecretProviderClass, ServiceAccount
from webhook.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """A response plus what the caller may want to show (CLI) or count (metrics)."""

    response: dict[str, Any]
    result: str  # skipped | injected | unchanged | denied | error
    reason: str = ""
    provider_class: dict[str, Any] | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Expected:
    class_name: str  # "" in mode init
    env: list[plan.EnvSource]
    refs: list[contract.ObjectRef]
    problems: list[str]
    generated: dict[str, Any] | None = None
    init: plan.InitSpec | None = None

    def operations(self, pod: dict[str, Any], wanted: contract.InjectionRequest) -> list[dict[str, Any]]:
        """The patch for `pod`; raises PlanError on collisions."""
        if self.init is not None:
            return plan.init(pod, wanted, self.init)
        return plan.csi(pod, wanted, self.class_name, self.env)


def is_injected(pod: dict[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(contract.STATUS) == contract.STATUS_INJECTED)


def kvinject_parts(pod: dict[str, Any]) -> list[str]:
    """kvinject's own init container and volumes, by name, wherever they appear in a pod."""
    spec = pod.get("spec") or {}
    parts = [
        f"init container {c.get('name')}"
        for c in spec.get("initContainers") or []
        if isinstance(c, dict) and c.get("name") == plan.INIT_CONTAINER
    ]
    reserved = (plan.VOLUME_NAME, plan.TOKEN_VOLUME)
    parts += [
        f"volume {v.get('name')}"
        for v in spec.get("volumes") or []
        if isinstance(v, dict) and v.get("name") in reserved
    ]
    return parts


def tampered(pod: dict[str, Any], findings: list[str]) -> str:
    account = identity.service_account_name(pod.get("spec") or {})
    return (
        f"the pod was changed after kvinject injected it (its ServiceAccount is now {account}): {'; '.join(findings)}"
    )


def squatted(stored: SecretProviderClass, generated: dict[str, Any]) -> str:
    """Why a stored class of a generated name is not kvinject's, or "" when it is exactly what kvinject writes."""
    fields = spc.differences(stored, generated)
    if not fields:
        return ""
    return (
        f"SecretProviderClass {stored.namespace}/{stored.name} exists with content kvinject did not write"
        f" ({', '.join(fields)}); kvinject mounts only the classes it generates: delete it and kvinject"
        " recreates it at the next admission"
    )


def early_readers(pod: dict[str, Any], wanted: contract.InjectionRequest) -> list[str]:
    """Target init containers that run before kvinject-fetch would find the directory empty."""
    if wanted.mode is not contract.Mode.INIT or wanted.init_first or not wanted.containers:
        return []
    inits = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or [] if isinstance(c, dict)}
    early = [n for n in wanted.containers if n in inits and n != plan.INIT_CONTAINER]
    if not early:
        return []
    return [
        f"init containers {', '.join(early)} run before {plan.INIT_CONTAINER} ({contract.INIT_FIRST}: false)"
        f" and will find {wanted.mount_path} empty"
    ]


def describe(pod: dict[str, Any]) -> str:
    """Name a pod without relying on metadata.name: controller-made pods only have generateName."""
    meta = pod.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    if owners and isinstance(owners[0], dict):
        return f"pod of {owners[0].get('kind', 'owner')} {owners[0].get('name', '?')}"
    if meta.get("generateName"):
        return f"pod {meta['generateName']}*"
    if meta.get("name"):
        return f"pod {meta['name']}"
    return "pod"


class Lookups:
    """Reads shared by /mutate and /validate, with API failures turned into denials."""

    def __init__(self, settings: Settings, cluster: Cluster):
        self.settings = settings
        self.cluster = cluster

    async def namespace(self, name: str) -> Namespace | None:
        try:
            return await self.cluster.namespace(name)
        except ClusterError as exc:
            raise Denial(f"could not read Namespace {name}: {exc}", 503, "cluster") from None

    async def identity(self, namespace: str, pod: dict[str, Any]) -> tuple[str, ServiceAccount, identity.Identity]:
        name = identity.service_account_name(pod.get("spec") or {})
        try:
            account = await self.cluster.service_account(namespace, name)
        except ClusterError as exc:
            raise Denial(f"could not read ServiceAccount {namespace}/{name}: {exc}", 503, "cluster") from None
        who = identity.resolve(namespace, name, account, self.settings.tenant_id)
        if isinstance(who, str):
            raise Denial(who, 403, "identity")
        assert account is not None
        return name, account, who

    async def provider_class(self, namespace: str, name: str, cache_only: bool = False) -> Any:
        """The stored class; `cache_only` for dry runs, which create nothing (the real request checks again)."""
        if cache_only:
            return self.cluster.provider_classes.get((namespace, name))
        try:
            return await self.cluster.secret_provider_class(namespace, name)
        except ClusterError as exc:
            raise Denial(f"could not read SecretProviderClass {namespace}/{name}: {exc}", 503, "cluster") from None


class Mutator:
    def __init__(self, settings: Settings, cluster: Cluster, metrics: Metrics | None = None):
        self.settings = settings
        self.cluster = cluster
        self.lookups = Lookups(settings, cluster)
        metrics = metrics or Metrics()
        self.judge = Judge(settings.enforcement, metrics, settings.relaxable_namespaces)
        self.verifier = verify.Verifier(settings, cluster, metrics)

    async def mutate(self, request: review.Request) -> Outcome:
        if not request.is_pod_create:
            return Outcome(review.allowed(request.uid), "skipped")
        pod = request.object
        if pod is None:
            return self._denied(request, Denial("request.object is missing or not an object", 400, "bad-request"))
        malformed = shape.problems(pod)
        if malformed:
            return self._denied(request, Denial(f"malformed Pod: {'; '.join(malformed)}", 400, "bad-request"))
        try:
            return await self._mutate_pod(request, pod)
        except Denial as denial:
            return self._denied(request, denial, pod)

    def _denied(self, request: review.Request, denial: Denial, pod: dict[str, Any] | None = None) -> Outcome:
        return denied_outcome(request, denial, pod)

    async def _mutate_pod(self, request: review.Request, pod: dict[str, Any]) -> Outcome:
        meta = pod.get("metadata") or {}
        if not isinstance(meta, dict) or not contract.is_opted_in(meta.get("labels")):
            return Outcome(review.allowed(request.uid), "skipped")
        namespace = request.namespace
        if not namespace:
            raise Denial("the AdmissionReview has no namespace", 400, "bad-request")
        ns = await self.lookups.namespace(namespace)
        try:
            wanted = contract.parse(meta.get("annotations"), ns.default_vault if ns else None)
        except contract.ContractError as exc:
            raise Denial(_enumerate("annotation", exc.problems), 400, "bad-annotation") from None
        sa_name, account, who = await self.lookups.identity(namespace, pod)

        exp = await self.expected(namespace, wanted, account, who)
        class_name, refs, problems, generated = exp.class_name, exp.refs, exp.problems, exp.generated

        try:
            ops = exp.operations(pod, wanted)
        except plan.PlanError as exc:
            if is_injected(pod):  # a reinvocation after a later webhook changed what we injected
                raise Denial(tampered(pod, exc.problems), 403, "tampered") from None
            raise Denial(_enumerate("collision", exc.problems), 400, "collision") from None
        mode, warnings = self.judge.mode(ns)
        warnings.extend(early_readers(pod, wanted))
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
            if decision.allowed and verify.enabled(self.settings, ns):
                verdict = await self._verify_live(namespace, sa_name, who, refs, mode, verdict)

        if generated is not None:
            await self._ensure_generated(namespace, generated, request.dry_run)
        log.debug(
            "admitted uid=%s namespace=%s %s mode=%s class=%s ops=%d dry_run=%s decision=%s",
            request.uid,
            namespace,
            describe(pod),
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
        namespace: str,
        account: str,
        who: identity.Identity,
        refs: list[contract.ObjectRef],
        mode: policy.Enforcement,
        verdict: Verdict,
    ) -> Verdict:
        """Policy allowed it; now Azure must agree. Key objects cannot be read as secrets and are skipped."""
        checkable = [r for r in refs if r.type is not contract.ObjectType.KEY]
        findings = await self.verifier.verify(namespace, account, who, checkable)
        refused = [f for f in findings if f.result not in (verify.Result.ALLOWED, verify.Result.UNVERIFIED)]
        unverified = [f for f in findings if f.result is verify.Result.UNVERIFIED]
        audit = {**verdict.audit, "live-verification": ",".join(sorted({f.result.value for f in findings}))}
        warnings = list(verdict.warnings)
        if unverified and not refused:
            message = "; ".join(f.message for f in unverified)
            if not self.settings.live_fail_open:
                raise Denial(
                    f"could not verify access with Azure: {message}",
                    403,
                    "live-unverified",
                    {**audit, "decision": "denied", "reason": message},
                )
            warnings.append(f"kvinject could not verify access with Azure and admitted the pod: {message}")
        if refused:
            reason = f"live-{refused[0].result.value}"
            found = self.judge.findings("mutate", mode, reason, [f.message for f in refused], audit)
            return Verdict([*warnings, *found.warnings], found.audit)
        return Verdict(warnings, audit)

    async def expected(
        self, namespace: str, wanted: contract.InjectionRequest, account: ServiceAccount, who: identity.Identity
    ) -> Expected:
        """What kvinject injects for this request and identity: the class, env sources and objects read."""
        if wanted.mode is contract.Mode.INIT:
            s = self.settings
            init = plan.InitSpec(
                s.init_image, who.client_id, who.tenant_id, s.authority_host, s.vault_dns_suffix, s.init_volume_size
            )
            return Expected("", [], [m.ref for m in wanted.objects], [], init=init)
        if wanted.provider_class is not None:
            class_name, env, refs, problems = await self._existing_class(namespace, wanted, who)
            return Expected(class_name, env, refs, problems)
        generated = spc.build(wanted, namespace, account, who.client_id, who.tenant_id, self.settings.cloud_name)
        class_name = generated["metadata"]["name"]
        env = [plan.EnvSource(e.name, class_name, e.alias) for e in wanted.env]
        return Expected(class_name, env, [m.ref for m in wanted.objects], [], generated)

    async def _existing_class(
        self, namespace: str, wanted: contract.InjectionRequest, who: identity.Identity
    ) -> tuple[str, list[plan.EnvSource], list[contract.ObjectRef], list[str]]:
        name = wanted.provider_class
        assert name is not None
        found = await self.lookups.provider_class(namespace, name)
        if found is None:
            raise Denial(
                f"SecretProviderClass {namespace}/{name} named by {contract.PROVIDER_CLASS} does not exist",
                400,
                "provider-class",
            )
        env: list[plan.EnvSource] = []
        problems: list[str] = []
        for var in wanted.env:
            source = next(
                (
                    plan.EnvSource(var.name, str(so.get("secretName")), str(d.get("key")))
                    for so in found.secret_objects
                    for d in so.get("data") or []
                    if d.get("objectName") == var.alias
                ),
                None,
            )
            if source is None:
                problems.append(
                    f"{contract.ENV_PREFIX}{var.name}: SecretProviderClass {name} syncs no object"
                    f" {var.alias!r} to a Secret (add it to spec.secretObjects)"
                )
            else:
                env.append(source)
        if problems:
            raise Denial(_enumerate("annotation", problems), 400, "bad-annotation")
        refs, problems = spc.declared_objects(
            found, who.client_id, self.settings.allow_node_identity, self.settings.allow_pod_identity
        )
        return name, env, refs, problems


# A denial lists every problem at once, but bounded: kubectl prints it whole, and etcd stores it in events.
MAX_MESSAGE = 8 * 1024


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    if len(message) <= limit:
        return message
    return message[: limit - 40] + f" ... ({len(message) - limit + 40} more characters)"


def denied_outcome(request: review.Request, denial: Denial, pod: dict[str, Any] | None = None) -> Outcome:
    who = describe(pod) if pod is not None else "request"
    message = bounded(f"kvinject denied {who[:300]} in namespace {request.namespace[:253] or '?'}: {denial.message}")
    log.info("denied uid=%s namespace=%s %s reason=%s", request.uid, request.namespace, who, denial.reason)
    audit = {key: bounded(value, 1024) for key, value in denial.audit.items()}
    return Outcome(review.denied(request.uid, message, denial.code, audit=audit), "denied", denial.reason)


def _enumerate(what: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{what} problem: {problems[0]}"
    listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
    return f"{len(problems)} {what} problems: {listed}"
