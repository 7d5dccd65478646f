"""`kvinject report`: a read-only impact report of what kvinject would deny in a cluster as it is.

Every existing pod goes through the admission chain the apiserver would run if it were created again (/mutate as
a dry run, then /validate on the result) and every SecretProviderClass through the class check, judged as if
enforcing so that each finding carries its reason; the namespace's enforcement mode (or `--enforcement`) then
says whether it is a denial or only a would-deny. Pods with kvinject annotations but without the opt-in label
are listed as warnings: they get nothing.

Nothing is written: the cluster view is read-only (no SecretProviderClass created, no token requested) and live
verification is off. Exit codes: 0 nothing would be denied, 1 something would be denied, 2 unusable.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import yaml

from webhook import names, review
from webhook.access import Judge
from webhook.cluster import Cluster, ClusterError
from webhook.commands.common import EXIT_ALLOWED, EXIT_DENIED, EXIT_UNUSABLE, open_cluster
from webhook.metrics import Metrics
from webhook.model import Namespace
from webhook.mutation import Mutator
from webhook.policy import Enforcement
from webhook.settings import Settings
from webhook.validation import Validator

REPORT_API_VERSION = "kvinject.io/v1alpha1"
REPORT_KIND = "ImpactReport"
DENY, WOULD_DENY, WARNING = "deny", "would-deny", "warning"


@dataclass(frozen=True)
class Finding:
    """One row of the report (and one item of `findings` in the JSON output)."""

    kind: str  # Pod | SecretProviderClass
    namespace: str
    name: str
    owner: str  # "ReplicaSet/api-7d9f8c6b5" for a controller's pod, else ""
    effect: str  # deny | would-deny | warning
    mode: str  # the enforcement mode it is judged under (enforce | warn | audit); "" for warnings
    reason: str  # kvinject's reason (the metrics' reason label), e.g. no-policy, provider-class, not-opted-in
    message: str


class AlwaysEnforce(Judge):
    """Judges every namespace as enforcing: each finding becomes a Denial, whose reason and message the report
    keeps; the real mode decides afterwards whether it would deny."""

    def mode(self, namespace: Namespace | None) -> tuple[Enforcement, list[str]]:
        return Enforcement.ENFORCE, []


class Reporter:
    def __init__(self, settings: Settings, cluster: Cluster, enforcement: Enforcement | None):
        metrics = Metrics()
        self.cluster = cluster
        self.mutator = Mutator(settings, cluster, metrics)
        self.validator = Validator(settings, cluster, metrics)
        self.mutator.judge = self.validator.judge = AlwaysEnforce(Enforcement.ENFORCE, metrics)
        self.modes = Judge(settings.enforcement, metrics, settings.relaxable_namespaces)
        self.forced = enforcement

    def mode(self, namespace: str) -> Enforcement:
        if self.forced is not None:
            return self.forced
        mode, _ = self.modes.mode(self.cluster.stores.namespaces.get(namespace))
        return mode

    def _finding(self, kind: str, obj: dict[str, Any], outcome_reason: str, message: str) -> Finding:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        if outcome_reason == "cluster":  # the API stopped answering: no verdict
            raise ClusterError(message)
        mode = self.mode(namespace)
        effect = DENY if mode is Enforcement.ENFORCE else WOULD_DENY
        return Finding(
            kind, namespace, str(meta.get("name") or ""), owner(obj), effect, mode.value, outcome_reason, message
        )

    async def pod(self, pod: dict[str, Any]) -> list[Finding]:
        findings = [w for w in [not_opted_in(pod)] if w is not None]
        namespace = str((pod.get("metadata") or {}).get("namespace") or "")
        # As the apiserver would send it again: a dry-run CREATE through /mutate, then /validate.
        mutated = await self.mutator.mutate(request("Pod", "", namespace, pod))
        if not mutated.response["response"]["allowed"]:
            return [*findings, self._finding("Pod", pod, mutated.reason, denial_message(mutated.response))]
        final = jsonpatch.apply_patch(pod, mutated.ops) if mutated.ops else pod
        validated = await self.validator.validate(request("Pod", "", namespace, final))
        if not validated.response["response"]["allowed"]:
            findings.append(self._finding("Pod", pod, validated.reason, denial_message(validated.response)))
        return findings

    async def provider_class(self, obj: dict[str, Any]) -> list[Finding]:
        namespace = str((obj.get("metadata") or {}).get("namespace") or "")
        outcome = await self.validator.validate(request(names.CLASS_KIND, names.CLASS_GROUP, namespace, obj))
        if outcome.response["response"]["allowed"]:
            return []
        return [self._finding(names.CLASS_KIND, obj, outcome.reason, denial_message(outcome.response))]


def request(kind: str, group: str, namespace: str, obj: dict[str, Any]) -> review.Request:
    """A dry-run CREATE of `obj`: what is judged is exactly what a new copy of it would get."""
    uid = str(uuid.uuid4())
    raw = {
        "uid": uid,
        "kind": {"group": group, "version": "v1", "kind": kind},
        "operation": "CREATE",
        "namespace": namespace,
        "object": obj,
        "dryRun": True,
    }
    return review.Request(uid, kind, group, "CREATE", namespace, "", True, obj, raw)


def denial_message(response: dict[str, Any]) -> str:
    """The denial's reasons without the "kvinject denied <pod> in namespace <ns>: " every answer starts with."""
    message = str(response["response"]["status"]["message"])
    _, sep, rest = message.partition(" in namespace ")
    if sep:
        _, sep, reasons = rest.partition(": ")
        if sep:
            return reasons
    return message


def owner(obj: dict[str, Any]) -> str:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return f"{ref.get('kind')}/{ref.get('name')}"
    return ""


def not_opted_in(pod: dict[str, Any]) -> Finding | None:
    """A pod with kvinject annotations that kvinject ignores: it has not opted in (label missing or not "true")."""
    meta = pod.get("metadata") or {}
    annotations = [k for k in meta.get("annotations") or {} if str(k).startswith(names.PREFIX)]
    label = (meta.get("labels") or {}).get(names.INJECT_LABEL)
    if not annotations or label == "true":
        return None
    why = "has no label " + names.INJECT_LABEL if label is None else f'has {names.INJECT_LABEL}="{label}", not "true"'
    message = (
        f"carries kvinject annotations ({', '.join(sorted(annotations)[:5])}{', ...' if len(annotations) > 5 else ''})"
        f" but {why}: kvinject ignores it and it gets no secrets"
    )
    return Finding(
        "Pod",
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
        owner(pod),
        WARNING,
        "",
        "not-opted-in",
        message,
    )


# -- Reading the cluster ---------------------------------------------------------------------------------------


def _path(group_path: str, resource: str, namespace: str) -> str:
    return f"{group_path}/namespaces/{namespace}/{resource}" if namespace else f"{group_path}/{resource}"


def cluster_objects(
    cluster: Cluster, settings: Settings, namespace: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pods, SecretProviderClasses), from the API or the --cluster file."""
    if settings.cluster_file is not None:
        docs = file_objects(settings.cluster_file)
        pick = [d for d in docs if not namespace or (d.get("metadata") or {}).get("namespace") == namespace]
        return [d for d in pick if d.get("kind") == "Pod"], [d for d in pick if d.get("kind") == names.CLASS_KIND]
    from webhook.cluster.api import KubeCluster

    assert isinstance(cluster, KubeCluster)
    pods = cluster.list_objects(_path("/api/v1", "pods", namespace), "Pod") or []
    classes = cluster.list_objects(
        _path(f"/apis/{names.CLASS_API_VERSION}", "secretproviderclasses", namespace), names.CLASS_KIND
    )
    for pod in pods:
        pod.setdefault("kind", "Pod")
    return pods, [{"kind": names.CLASS_KIND, "apiVersion": names.CLASS_API_VERSION, **c} for c in classes or []]


def file_objects(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return [
        i
        for d in docs
        for i in (d.get("items") or [] if str(d.get("kind", "")).endswith("List") else [d])
        if isinstance(i, dict)
    ]


# -- Output --------------------------------------------------------------------------------------------------


def as_json(findings: list[Finding], pods: int, classes: int, source: str, namespace: str, forced: str) -> str:
    doc = {
        "apiVersion": REPORT_API_VERSION,
        "kind": REPORT_KIND,
        "source": source,
        "namespace": namespace,
        "enforcement": forced,
        "checked": {"pods": pods, "secretProviderClasses": classes},
        "summary": {effect: sum(1 for f in findings if f.effect == effect) for effect in (DENY, WOULD_DENY, WARNING)},
        "findings": [asdict(f) for f in findings],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


def as_table(findings: list[Finding], pods: int, classes: int) -> str:
    header = ("NAMESPACE", "KIND", "NAME", "OWNER", "EFFECT", "REASON", "MESSAGE")
    rows = [header] + [
        (
            f.namespace,
            f.kind,
            f.name,
            f.owner or "-",
            f.effect if not f.mode else f"{f.effect} ({f.mode})",
            f.reason,
            f.message,
        )
        for f in findings
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip() for r in rows]
    counts = {e: sum(1 for f in findings if f.effect == e) for e in (DENY, WOULD_DENY, WARNING)}
    summary = (
        f"checked {pods} pods and {classes} SecretProviderClasses: {counts[DENY]} denied,"
        f" {counts[WOULD_DENY]} would be denied when enforcing, {counts[WARNING]} warnings"
    )
    return "\n".join([*(lines if findings else []), summary]) + "\n"


def _order(f: Finding) -> tuple[str, ...]:
    return (f.namespace, f.kind, f.name, f.effect)


async def _judge(reporter: Reporter, pods: list[dict[str, Any]], classes: list[dict[str, Any]]) -> list[Finding]:
    findings: list[Finding] = []
    for pod in pods:
        findings += await reporter.pod(pod)
    for obj in classes:
        findings += await reporter.provider_class(obj)
    return sorted(findings, key=_order)


def run(settings: Settings, namespace: str, enforcement: str | None, output: str) -> int:
    forced = Enforcement(enforcement) if enforcement else None
    try:
        cluster = open_cluster(settings)
        pods, classes = cluster_objects(cluster, settings, namespace)
        findings = asyncio.run(_judge(Reporter(settings, cluster, forced), pods, classes))
    except (ClusterError, OSError, yaml.YAMLError) as exc:
        print(f"kvinject: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if output == "json":
        source = str(settings.cluster_file) if settings.cluster_file else getattr(cluster, "server", "")
        sys.stdout.write(as_json(findings, len(pods), len(classes), source, namespace, enforcement or ""))
    else:
        sys.stdout.write(as_table(findings, len(pods), len(classes)))
    return EXIT_DENIED if any(f.effect == DENY for f in findings) else EXIT_ALLOWED
