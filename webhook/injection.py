"""The injection core /mutate and /validate share: what kvinject injects for a pod as it is now, the tamper check,
the reads both make, and the preamble and denial every pod answer goes through.

`Injection.expected()` is the single derivation of kvinject's output for a request and identity: /mutate turns it
into a patch, /validate re-derives it from the final pod and calls any difference tampering.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from webhook import contract, identity, names, plan, providers, review, shape, spc, targets
from webhook.access import Denial, WouldDeny
from webhook.cluster import Cluster, ClusterError
from webhook.model import Namespace, SecretProviderClass, ServiceAccount
from webhook.providers import Provider
from webhook.settings import Settings

log = logging.getLogger(__name__)

# A denial lists every problem at once, but bounded: kubectl prints it whole, and etcd stores it in events.
MAX_MESSAGE = 8 * 1024


@dataclass
class Outcome:
    """A response plus what the caller may want to show (CLI) or count (metrics)."""

    response: dict[str, Any]
    result: str  # skipped | injected | unchanged | allowed | denied | error
    reason: str = ""
    provider_class: dict[str, Any] | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)
    would_deny: WouldDeny | None = None  # admitted under audit or warn, but enforce would deny
    ignored: str = ""  # why kvinject ignores the pod's kvinject annotations (webhook.rollout)


@dataclass
class Expected:
    """What kvinject injects for one request and identity."""

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


# -- What a pod says about kvinject ---------------------------------------------------------------------


def is_injected(pod: dict[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(names.STATUS) == names.STATUS_INJECTED)


def kvinject_parts(pod: dict[str, Any]) -> list[str]:
    """kvinject's own init container and volumes, by name, wherever they appear in a pod."""
    spec = pod.get("spec") or {}
    parts = [
        f"init container {c.get('name')}"
        for c in spec.get("initContainers") or []
        if isinstance(c, dict) and c.get("name") == names.INIT_CONTAINER
    ]
    reserved = (names.VOLUME_NAME, names.TOKEN_VOLUME)
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


def describe_pod(pod: dict[str, Any]) -> str:
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


# -- Answers --------------------------------------------------------------------------------------------


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    if len(message) <= limit:
        return message
    return message[: limit - 40] + f" ... ({len(message) - limit + 40} more characters)"


def enumerate_problems(what: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{what} problem: {problems[0]}"
    listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
    return f"{len(problems)} {what} problems: {listed}"


def denied_outcome(request: review.Request, denial: Denial, pod: dict[str, Any] | None = None) -> Outcome:
    """The one place a denial becomes an answer: named pod, bounded message and audit values."""
    who = describe_pod(pod) if pod is not None else "request"
    message = bounded(f"kvinject denied {who[:300]} in namespace {request.namespace[:253] or '?'}: {denial.message}")
    log.info("denied uid=%s namespace=%s %s reason=%s", request.uid, request.namespace, who, denial.reason)
    audit = {key: bounded(value, 1024) for key, value in denial.audit.items()}
    return Outcome(review.denied(request.uid, message, denial.code, audit=audit), "denied", denial.reason)


async def answer_pod(request: review.Request, handle: Callable[[dict[str, Any]], Awaitable[Outcome]]) -> Outcome:
    """The preamble of both handlers: a pod must be there and well-formed; a Denial becomes a denied answer."""
    pod = request.object
    if pod is None:
        return denied_outcome(request, Denial("request.object is missing or not an object", 400, "bad-request"))
    malformed = shape.problems(pod)
    if malformed:
        return denied_outcome(request, Denial(f"malformed Pod: {'; '.join(malformed)}", 400, "bad-request"))
    try:
        return await handle(pod)
    except Denial as denial:
        return denied_outcome(request, denial, pod)


# -- Reads ----------------------------------------------------------------------------------------------


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

    async def account(self, namespace: str, pod: dict[str, Any]) -> tuple[str, ServiceAccount | None]:
        """The pod's ServiceAccount name and record (None: it does not exist)."""
        name = identity.service_account_name(pod.get("spec") or {})
        try:
            return name, await self.cluster.service_account(namespace, name)
        except ClusterError as exc:
            raise Denial(f"could not read ServiceAccount {namespace}/{name}: {exc}", 503, "cluster") from None

    def resolve(
        self, provider: Provider, namespace: str, name: str, account: ServiceAccount | None, role: str | None
    ) -> identity.Identity:
        """The identity `provider` reads as for this ServiceAccount; a Denial (reason identity) saying how to fix it."""
        who = provider.resolve_identity(namespace, name, account, self.settings, role)
        if isinstance(who, str):
            raise Denial(who, 403, "identity")
        return who

    async def identity(
        self, namespace: str, pod: dict[str, Any], provider: Provider, role: str | None = None
    ) -> tuple[str, ServiceAccount, identity.Identity]:
        name, account = await self.account(namespace, pod)
        who = self.resolve(provider, namespace, name, account, role)
        assert account is not None  # every provider refuses a missing ServiceAccount
        return name, account, who

    async def provider_class(self, namespace: str, name: str, cache_only: bool = False) -> Any:
        """The stored class; `cache_only` for dry runs, which create nothing (the real request checks again)."""
        if cache_only:
            return self.cluster.provider_classes.get((namespace, name))
        try:
            return await self.cluster.secret_provider_class(namespace, name)
        except ClusterError as exc:
            raise Denial(f"could not read SecretProviderClass {namespace}/{name}: {exc}", 503, "cluster") from None


# -- What kvinject injects ------------------------------------------------------------------------------


class Injection:
    """Derives what kvinject injects for a request, and checks an injected pod against it."""

    def __init__(self, settings: Settings, lookups: Lookups):
        self.settings = settings
        self.lookups = lookups

    async def expected(
        self, namespace: str, wanted: contract.InjectionRequest, account: ServiceAccount, who: identity.Identity
    ) -> Expected:
        """What kvinject injects for this request and identity: the class, env sources and objects read."""
        provider = providers.get(wanted.store)
        if wanted.mode is contract.Mode.INIT:
            init = provider.init_spec(who, self.settings)
            return Expected("", [], [m.ref for m in wanted.objects], [], init=init)
        if wanted.provider_class is not None:
            class_name, env, refs, problems = await self._existing_class(namespace, wanted, who)
            return Expected(class_name, env, refs, problems)
        parameters = provider.class_parameters(wanted, who, self.settings)
        generated = spc.generated(provider.name, parameters, wanted, namespace, account)
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
                f"SecretProviderClass {namespace}/{name} named by {names.PROVIDER_CLASS} does not exist",
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
                    f"{names.ENV_PREFIX}{var.name}: SecretProviderClass {name} syncs no object"
                    f" {var.alias!r} to a Secret (add it to spec.secretObjects)"
                )
            else:
                env.append(source)
        if problems:
            raise Denial(enumerate_problems("annotation", problems), 400, "bad-annotation")
        if found.provider != providers.get(wanted.store).name:
            # One store per pod: its identity is the store's, and so must be the class it names.
            store = f"{names.STORE}: {wanted.store}" if wanted.store != names.DEFAULT_STORE else "no store (azure)"
            problems.append(
                f"SecretProviderClass {name} named by {names.PROVIDER_CLASS} has provider {found.provider[:63]!r},"
                f" but the pod names {store}: a pod reads from one store"
            )
            return name, env, [], problems
        refs, problems = providers.get(wanted.store).declared_objects(found, who, self.settings)
        return name, env, refs, problems

    async def check_injected(
        self, namespace: str, pod: dict[str, Any], account: ServiceAccount, who: identity.Identity, ns: Any
    ) -> tuple[list[tuple[str, str]], Expected | None]:
        """Re-derive what kvinject injects for the pod as it is now; any difference is tampering."""
        parts = kvinject_parts(pod)
        if not is_injected(pod):
            return [
                (
                    "tampered",
                    f"the pod carries kvinject's {', '.join(parts)} but kvinject did not inject it"
                    f" (no {names.STATUS}: {names.STATUS_INJECTED})",
                )
            ], None
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        try:
            wanted = contract.parse_annotations(annotations, ns.default_vault if ns else None)
        except contract.ContractError as exc:
            return [("tampered", tampered(pod, [f"its kvinject annotations no longer parse: {exc}"]))], None
        selection = targets.select(pod, wanted)
        if selection.pending:  # every mutating webhook has run: a named container that is not there never will be
            raise Denial(enumerate_problems("annotation", [targets.pending_problem(selection)]), 400, "bad-annotation")
        try:
            expected = await self.expected(namespace, wanted, account, who)
        except Denial as denial:
            return [("tampered", tampered(pod, [denial.message]))], None
        try:
            missing = expected.operations(pod, wanted)
        except plan.PlanError as exc:
            return [("tampered", tampered(pod, exc.problems))], expected
        if missing:
            return [("tampered", tampered(pod, [f"missing {op['path']}" for op in missing]))], expected
        return [], expected
