"""The validating side: re-check the final pod, after every mutating webhook has run.

Closes the bypasses the mutating path cannot see: a hand-written Secrets Store
CSI volume (foreign or node-identity SecretProviderClass), reading another
workload's synced Secret, and a later webhook changing what kvinject injected.
"""

from __future__ import annotations

import logging
from typing import Any

from webhook import podrefs, policy, providers, review, rollout, targets
from webhook.access import Denial, Judge, Verdict
from webhook.cluster import Cluster, ClusterError
from webhook.contract import ObjectRef
from webhook.identity import Identity
from webhook.injection import (
    Injection,
    Lookups,
    Outcome,
    answer_pod,
    denied_outcome,
    describe_pod,
    is_injected,
    kvinject_parts,
    squatted,
)
from webhook.metrics import Metrics
from webhook.model import Namespace, SecretProviderClass, ServiceAccount
from webhook.names import (
    CLASS_NAME_PREFIX,
    DEFAULT_STORE,
    INIT_CONTAINER,
    REFRESH_CONTAINER,
    STORE,
    VAULT_ROLE,
)
from webhook.policy import Enforcement
from webhook.providers import Provider
from webhook.settings import Settings

log = logging.getLogger(__name__)


class Validator:
    def __init__(self, settings: Settings, cluster: Cluster, metrics: Metrics | None = None):
        metrics = metrics or Metrics()
        self.settings = settings
        self.cluster = cluster
        self.lookups = Lookups(settings, cluster)
        self.injection = Injection(settings, self.lookups)
        self.judge = Judge(settings.enforcement, metrics, settings.relaxable_namespaces)
        # What is not kvinject's (webhook/rollout.py) is judged under its own setting, audit by default.
        self.others = Judge(settings.not_opted_in_enforcement, metrics, settings.relaxable_namespaces)

    async def validate(self, request: review.Request) -> Outcome:
        if request.is_provider_class_write:
            return await self._validate_class(request)
        ephemeral = request.is_ephemeral_update
        if ephemeral:
            return await answer_pod(request, lambda pod: self._validate_ephemeral(request, pod))
        if request.is_pod_create:
            return await answer_pod(request, lambda pod: self._validate(request, pod))
        if request.is_pod_update:
            return await answer_pod(request, lambda pod: self._validate_update(request, pod))
        return Outcome(review.allowed(request.uid), "skipped")

    async def _validate_class(self, request: review.Request) -> Outcome:
        """A SecretProviderClass written or changed: the driver re-reads it at every mount and rotation, so a
        class that pods were admitted with must not turn later into one that reads with another identity."""
        obj = request.object
        if obj is None or not isinstance(obj.get("spec"), dict) or not isinstance(obj.get("metadata"), dict):
            return denied_outcome(request, Denial("request.object is not a SecretProviderClass", 400, "bad-request"))
        params = obj["spec"].get("parameters") or {}
        provider = providers.for_class(str(obj["spec"].get("provider")))
        if provider is None:
            return Outcome(review.allowed(request.uid), "skipped")
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            return denied_outcome(request, Denial("spec.parameters must map names to strings", 400, "bad-request"))
        found = SecretProviderClass.from_object(
            {**obj, "metadata": {**obj["metadata"], "namespace": request.namespace}}
        )
        generated = rollout.class_is_kvinjects(obj)
        reserved = rollout.reserved_syncs(obj)
        try:
            # kvinject's own classes are written by kvinject alone (reserved-provider-classes.yaml) and mounted by
            # its pods alone. Any other class is judged again for every live pod that reads through it, each under
            # its own enforcement; a class a pod of kvinject's reads is kvinject's, whichever webhook entry
            # delivered it: the entries split by name and label, which the class's writer chooses.
            users = [] if generated else await self._class_users(request.namespace, found.name)
        except Denial as denial:
            return denied_outcome(request, denial)
        ours = [p for p in users if rollout.pod_is_kvinjects(p)]
        theirs = [p for p in users if not rollout.pod_is_kvinjects(p)]
        kvinjects = generated or bool(reserved) or bool(ours)
        try:
            ns = await self.lookups.namespace(request.namespace)
        except Denial as denial:
            if not kvinjects and unjudged(self.others.default, denial):
                return not_judged(request, denial)
            return denied_outcome(request, denial)
        own = provider.class_problems(found, self.settings)
        own += [
            f"secretObjects syncs into Secret {name[:253]}: Secret names starting with {CLASS_NAME_PREFIX} are"
            " kvinject's (its generated classes sync them, and its checks take them to be), name it otherwise"
            for name in reserved
        ]
        # The class's own problems go with the class's owner: kvinject's judge if it is kvinject's, else the others';
        # the pods that are not kvinject's are judged under KVINJECT_NOT_OPTED_IN_ENFORCEMENT in either case.
        groups = [(self.judge, ours, own if kvinjects else None), (self.others, theirs, None if kvinjects else own)]
        verdicts: list[Verdict] = []
        warnings: list[str] = []
        for judge, pods, class_problems in groups:
            if not pods and class_problems is None:
                continue
            mode, mode_warnings = judge.mode(ns)
            try:
                verdict = await self._judge_class(request.namespace, found, pods, class_problems or [], judge, mode)
            except Denial as denial:
                if judge is self.others and unjudged(mode, denial):
                    if not verdicts:
                        return not_judged(request, denial)
                    # kvinject's part was judged: its verdict stands, the others' part is not judged, as for a pod.
                    log.warning("not judged uid=%s namespace=%s: %s", request.uid, request.namespace, denial.message)
                    continue
                return denied_outcome(request, denial)
            warnings += [*mode_warnings, *verdict.warnings]
            verdicts.append(verdict)
        # One audit record: a would-deny over an allowed.
        shown = next((v for v in verdicts if v.would_deny is not None), verdicts[0] if verdicts else Verdict())
        return Outcome(
            review.allowed(request.uid, list(dict.fromkeys(warnings)), shown.audit),
            "allowed",
            would_deny=shown.would_deny,
        )

    async def _judge_class(
        self,
        namespace: str,
        found: SecretProviderClass,
        pods: list[dict[str, Any]],
        class_problems: list[str],
        judge: Judge,
        mode: Enforcement,
    ) -> Verdict:
        """The class's own problems and its readers' findings, under one judge: a Denial when it enforces."""
        judged = await self._users_findings(namespace, found, pods)
        # A problem of the class itself is named once, not again for every pod reading through it.
        problems = class_problems + [f for f in judged if not any(f.endswith(f": {p}") for p in class_problems)]
        return judge.findings("validate", mode, "provider-class", problems, {"class": found.name[:253]})

    async def _class_users(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The live pods that read through class `name`: any pod mounting it in a Secrets Store CSI volume (kvinject's
        or not: the driver reads the class again at its first mount, a pod held by schedulingGates included, and at
        every rotation), and kvinject's pods naming it (webhook/rollout.py `classes_used`). When the pods cannot be
        listed the class is denied: a change to it could not be told apart from one to a class kvinject's pods
        mount."""
        try:
            return await self.cluster.namespace_pods(namespace, lambda pod: reads_class(pod, name))
        except ClusterError as exc:
            raise Denial(
                f"could not list the pods in namespace {namespace} to tell whether kvinject's pods read through"
                f" SecretProviderClass {name}: {exc}",
                503,
                "cluster-pods",
            ) from None

    async def _users_findings(
        self, namespace: str, found: SecretProviderClass, users: list[dict[str, Any]]
    ) -> list[str]:
        """The class as written, judged for every pod that reads through it, as /validate judges that pod's volume
        (its ServiceAccount's identity and SecretAccessPolicies, the volume's attributes): the driver reads it again
        at the pod's next mount or rotation. Pods alike (ServiceAccount, role, volume) are judged once."""
        findings: list[str] = []
        seen: set[tuple[str, str | None, tuple[tuple[str, str], ...], bool]] = set()
        for pod in users:
            pod_name = str((pod.get("metadata") or {}).get("name", ""))[:253]
            volumes = [v for v in podrefs.csi_volumes(pod.get("spec") or {}) if v.provider_class == found.name]
            sa_name, account = await self.lookups.account(namespace, pod)
            readers = Readers(self, namespace, sa_name, account, pod)
            for volume in volumes:
                key = (sa_name, readers.role, tuple(sorted(volume.attributes.items())), volume.node_publish_secret)
                if key in seen:
                    continue
                seen.add(key)
                checked = await self._check_volume(readers, volume, {found.name: found})
                findings += [
                    f"SecretProviderClass {found.name} is mounted by pod {pod_name} (ServiceAccount"
                    f" {namespace}/{sa_name}): {f}"
                    for _, f in checked
                ]
        return findings

    async def _validate_update(self, request: review.Request, pod: dict[str, Any]) -> Outcome:
        """A pod changed after admission (labels and annotations are all that may change of its metadata): what
        kvinject recorded on a pod it injected stays as it wrote it."""
        old = request.raw.get("oldObject")
        changes = targets.record_changes(old if isinstance(old, dict) else {}, pod)
        if not changes:
            return Outcome(review.allowed(request.uid), "skipped")
        raise Denial(
            f"kvinject's record of the injection cannot change after admission: {'; '.join(changes)}; kvinject chose"
            " the pod's targets and secrets when it admitted it, from these values (recreate the pod to change them)",
            403,
            "record-changed",
        )

    async def _validate_ephemeral(self, request: review.Request, pod: dict[str, Any]) -> Outcome:
        """Containers added to a running pod (`kubectl debug`): the Secrets they read and the secret volumes
        they mount are judged for the pod's ServiceAccount, as at creation."""
        old = request.raw.get("oldObject")
        before = {
            c.get("name")
            for c in ((old.get("spec") or {}).get("ephemeralContainers") or [] if isinstance(old, dict) else [])
            if isinstance(c, dict)
        }
        spec = pod.get("spec") or {}
        added = [
            c for c in spec.get("ephemeralContainers") or [] if isinstance(c, dict) and c.get("name") not in before
        ]
        if not added:
            return Outcome(review.allowed(request.uid), "skipped")
        taken = targets.ephemeral_problems(spec, added)
        if taken:
            # Denied whatever the enforcement: these are kvinject's own volumes and Secrets, never a policy question.
            raise Denial("; ".join(taken), 403, "ephemeral-container")
        only_added = {"ephemeralContainers": added}
        mounted = {m.get("name") for c in added for m in c.get("volumeMounts") or [] if isinstance(m, dict)}
        volumes = [v for v in podrefs.csi_volumes(spec) if v.name in mounted]
        synced = await self._synced(request.namespace, podrefs.referenced_secrets(only_added))
        if not volumes and not synced:
            return Outcome(review.allowed(request.uid), "skipped")
        return await self._judge(request, pod, volumes, synced, False, rollout.pod_is_kvinjects(pod))

    async def _synced(self, namespace: str, names: list[str]) -> dict[str, list[SecretProviderClass]]:
        """Referenced Secrets that some SecretProviderClass syncs from Key Vault (any name: hand-written classes
        sync under names of their own). A `kvinject-*` Secret with no class is listed with none: fail closed."""
        result: dict[str, list[SecretProviderClass]] = {}
        for name in names:
            classes = self.cluster.classes_syncing(namespace, name)
            if not classes and name.startswith(CLASS_NAME_PREFIX):
                # Generated classes share their synced Secret's name; another replica may have just made it.
                found = await self.lookups.provider_class(namespace, name)
                classes = (
                    [found]
                    if found is not None and any(so.get("secretName") == name for so in found.secret_objects)
                    else []
                )
                result[name] = classes
            elif classes:
                result[name] = classes
        return result

    def _synced_findings(
        self,
        readers: Readers,
        synced: dict[str, list[SecretProviderClass]],
        generated: dict[str, SecretProviderClass],
    ) -> list[tuple[str, str]]:
        findings: list[tuple[str, str]] = []
        for secret, found_classes in synced.items():
            classes = found_classes or ([generated[secret]] if secret in generated else [])
            if not classes:
                findings.append(
                    (
                        "synced-secret",
                        f"Secret {secret} has the name of a kvinject-synced Secret but no SecretProviderClass"
                        f" {secret} syncs it: what it holds cannot be judged",
                    )
                )
            for found in classes:
                provider = providers.for_class(found.provider)
                if provider is None:
                    continue  # a store kvinject does not judge: its objects are not this policy's
                where = f"Secret {secret} holds {provider.objects_name} objects synced by SecretProviderClass"
                where += f" {found.name}"
                try:
                    who = readers.of(provider)
                except Denial as denial:
                    findings.append(("identity", f"{where}: {denial.message}"))
                    continue
                refs, problems = provider.declared_objects(found, who, self.settings)
                findings += [("synced-secret", f"{where}: {p}") for p in problems]
                decision = readers.decide(refs, who)
                if not decision.allowed:
                    findings.append(("synced-secret", f"{where}: {decision.message}"))
        return findings

    async def _validate(self, request: review.Request, pod: dict[str, Any]) -> Outcome:
        spec = pod.get("spec") or {}
        volumes = podrefs.csi_volumes(spec)
        synced = await self._synced(request.namespace, podrefs.referenced_secrets(spec))
        injected = is_injected(pod) or bool(kvinject_parts(pod))
        ignored = rollout.ignored_annotations(pod)
        if not volumes and not synced and not injected:
            return Outcome(review.allowed(request.uid, [ignored] if ignored else []), "skipped", ignored=ignored)
        outcome = await self._judge(request, pod, volumes, synced, injected, rollout.pod_is_kvinjects(pod))
        if ignored and outcome.response["response"].get("allowed"):
            outcome.response["response"]["warnings"] = [ignored, *outcome.response["response"].get("warnings", [])]
            outcome.ignored = ignored
        return outcome

    async def _judge(
        self,
        request: review.Request,
        pod: dict[str, Any],
        volumes: list[podrefs.CsiVolume],
        synced: dict[str, list[SecretProviderClass]],
        injected: bool,
        kvinjects: bool,
    ) -> Outcome:
        """Judge a pod's secret reads: kvinject's pods under `enforcement`, the others under
        `not_opted_in_enforcement`, which also admits them when the cluster cannot be read (unless enforce)."""
        judge = self.judge if kvinjects else self.others
        try:
            ns = await self.lookups.namespace(request.namespace)
        except Denial as denial:
            if not kvinjects and unjudged(judge.default, denial):
                return not_judged(request, denial)
            raise
        mode, warnings = judge.mode(ns)
        try:
            return await self._judge_in(request, pod, volumes, synced, injected, judge, (ns, mode, warnings))
        except Denial as denial:
            if not kvinjects and unjudged(mode, denial):
                return not_judged(request, denial)
            raise

    async def _judge_in(
        self,
        request: review.Request,
        pod: dict[str, Any],
        volumes: list[podrefs.CsiVolume],
        synced: dict[str, list[SecretProviderClass]],
        injected: bool,
        judge: Judge,
        where: tuple[Namespace | None, Enforcement, list[str]],
    ) -> Outcome:
        namespace = request.namespace
        ns, mode, warnings = where
        sa_name, account = await self.lookups.account(namespace, pod)
        readers = Readers(self, namespace, sa_name, account, pod)
        findings: list[tuple[str, str]] = []
        generated: dict[str, SecretProviderClass] = {}
        if injected:
            try:
                # kvinject's own injection reads from the pod's store, as the pod's identity there.
                who = readers.of(providers.get(readers.store))
            except Denial as denial:
                if denial.reason != "identity":
                    raise
                verdict = judge.findings("validate", mode, "identity", [denial.message], {})
                return Outcome(
                    review.allowed(request.uid, [*warnings, *verdict.warnings], verdict.audit),
                    "allowed",
                    would_deny=verdict.would_deny,
                )
            assert account is not None
            tamper, expected = await self.injection.check_injected(namespace, pod, account, who, ns)
            findings.extend(tamper)
            if not tamper and expected is not None and expected.init is not None:
                # What kvinject-fetch will read, for the pod's current ServiceAccount.
                decision = readers.decide(expected.refs, who)
                if not decision.allowed:
                    ours = ", ".join(c for c in (INIT_CONTAINER, REFRESH_CONTAINER) if has_init_container(pod, c))
                    findings.append((decision.reason.value, f"init container {ours}: {decision.message}"))
            if expected is not None and expected.generated is not None:
                stored = await self.lookups.provider_class(namespace, expected.class_name, request.dry_run)
                if stored is not None:
                    # What the driver will read is the stored object: it must be exactly kvinject's.
                    problem = squatted(stored, expected.generated)
                    if problem:
                        raise Denial(problem, 403, "provider-class-tampered")
                elif request.dry_run:
                    # Never created on a dry run: judge the class kvinject would create.
                    generated[expected.class_name] = SecretProviderClass.from_object(expected.generated)
        for volume in volumes:
            findings.extend(await self._check_volume(readers, volume, generated))
        findings += self._synced_findings(readers, synced, generated)
        if not injected and findings and all(reason == "identity" for reason, _ in findings):
            # Nothing else to say: the ServiceAccount has no identity in the store its volumes read.
            findings = [("identity", message) for message in dict.fromkeys(readers.unresolved)]

        audit = {"service-account": f"{namespace}/{sa_name}", "client-id": readers.client_ids()}
        reason = findings[0][0] if findings else "allowed"
        verdict = judge.findings("validate", mode, reason, [f for _, f in findings], audit)
        log.debug(
            "validated uid=%s namespace=%s %s decision=%s",
            request.uid,
            namespace,
            describe_pod(pod),
            verdict.audit["decision"],
        )
        return Outcome(
            review.allowed(request.uid, [*warnings, *verdict.warnings], verdict.audit),
            "allowed",
            would_deny=verdict.would_deny,
        )

    async def _check_volume(
        self, readers: Readers, volume: podrefs.CsiVolume, generated: dict[str, SecretProviderClass]
    ) -> list[tuple[str, str]]:
        namespace = readers.namespace
        findings = self._volume_fields(volume)
        if not volume.provider_class:
            return [*findings, ("provider-class", f"volume {volume.name} names no secretProviderClass")]
        found = generated.get(volume.provider_class) or await self.lookups.provider_class(
            namespace, volume.provider_class
        )
        if found is None:
            return [
                *findings,
                (
                    "provider-class",
                    f"volume {volume.name} mounts SecretProviderClass {namespace}/{volume.provider_class},"
                    " which does not exist",
                ),
            ]
        provider = providers.for_class(found.provider)
        if provider is None:
            return findings  # a store kvinject does not judge: its objects are not this policy's
        try:
            # The class's provider reads as the pod's identity in that store, whatever the pod's own store.
            who = readers.of(provider)
        except Denial as denial:
            return [*findings, ("identity", f"volume {volume.name}: {denial.message}")]
        # The driver copies the volume's attributes over the class's parameters: judge what it will pass on.
        refs, problems = provider.declared_objects(found, who, self.settings, volume.attributes)
        findings += [("provider-class", f"volume {volume.name}: {p}") for p in problems]
        decision = readers.decide(refs, who)
        if not decision.allowed:
            findings.append((decision.reason.value, f"volume {volume.name}: {decision.message}"))
        return findings

    def _volume_fields(self, volume: podrefs.CsiVolume) -> list[tuple[str, str]]:
        """Fields of a Secrets Store CSI volume that change what the provider reads, unless allowed."""
        findings = []
        if volume.overrides and not self.settings.allow_volume_attributes:
            names = ", ".join(n[:64] for n in volume.overrides[:10]) + (", ..." if len(volume.overrides) > 10 else "")
            findings.append(
                (
                    "volume-attributes",
                    f"volume {volume.name} sets volumeAttributes {names}: the CSI driver passes them to the"
                    " provider over the SecretProviderClass's parameters; only secretProviderClass is allowed",
                )
            )
        if volume.node_publish_secret and not self.settings.allow_node_publish_secret:
            findings.append(
                (
                    "node-publish-secret",
                    f"volume {volume.name} sets nodePublishSecretRef: the provider would read with the"
                    " service-principal credentials in that Secret, not the pod's workload identity",
                )
            )
        return findings


class Readers:
    """The identities one pod reads as, resolved once per store: its own store's for what kvinject injected,
    each class's provider's for the volumes and synced Secrets it mounts."""

    def __init__(
        self, validator: Validator, namespace: str, name: str, account: ServiceAccount | None, pod: dict[str, Any]
    ):
        self.validator = validator
        self.namespace = namespace
        self.name = name
        self.account = account
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        # Raw reads: a pod whose annotations do not parse is judged (tampering, or its volumes) all the same.
        store = annotations.get(STORE) if isinstance(annotations, dict) else None
        self.store = store if isinstance(store, str) and providers.for_class(store) is not None else DEFAULT_STORE
        role = annotations.get(VAULT_ROLE) if isinstance(annotations, dict) else None
        self.role = role if isinstance(role, str) else None
        self._resolved: dict[str, Identity | Denial] = {}
        self.unresolved: list[str] = []

    def of(self, provider: Provider) -> Identity:
        """The identity `provider` reads as for this pod; a Denial (reason identity) when it has none."""
        if provider.name not in self._resolved:
            lookups = self.validator.lookups
            try:
                self._resolved[provider.name] = lookups.resolve(
                    provider, self.namespace, self.name, self.account, self.role
                )
            except Denial as denial:
                self._resolved[provider.name] = denial
                self.unresolved.append(denial.message)
        found = self._resolved[provider.name]
        if isinstance(found, Denial):
            raise found
        return found

    def decide(self, refs: list[ObjectRef], who: Identity) -> policy.Decision:
        return policy.decide(refs, self.namespace, self.name, who, self.validator.cluster.policies_for(who.client_id))

    def client_ids(self) -> str:
        return ",".join(w.client_id for w in self._resolved.values() if isinstance(w, Identity))


def has_init_container(pod: dict[str, Any], name: str) -> bool:
    inits = (pod.get("spec") or {}).get("initContainers") or []
    return any(isinstance(c, dict) and c.get("name") == name for c in inits)


def reads_class(pod: dict[str, Any], name: str) -> bool:
    """A live pod (not Succeeded or Failed) that mounts SecretProviderClass `name` or, if kvinject's, names it."""
    status = pod.get("status")
    if isinstance(status, dict) and status.get("phase") in ("Succeeded", "Failed"):
        return False
    if name in rollout.classes_used(pod):
        return True
    spec = pod.get("spec")
    return any(v.provider_class == name for v in podrefs.csi_volumes(spec if isinstance(spec, dict) else {}))


def unjudged(mode: Enforcement, denial: Denial) -> bool:
    """The cluster could not be read for what is not kvinject's: outside enforce, admit it, as the webhook's
    failurePolicy Ignore does while kvinject cannot be reached."""
    return mode is not Enforcement.ENFORCE and denial.reason == "cluster"


def not_judged(request: review.Request, denial: Denial) -> Outcome:
    log.warning("not judged uid=%s namespace=%s: %s", request.uid, request.namespace, denial.message)
    audit = {"decision": "not-judged", "reason": denial.message[:1024]}
    return Outcome(review.allowed(request.uid, audit=audit), "allowed", "not-judged")
