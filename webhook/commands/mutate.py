"""`kvinject mutate`: the /mutate decision offline, for Pods, workloads, `kind: List` and AdmissionReviews.

Exit codes: 0 every pod allowed, 1 some pod denied (reasons on stderr, nothing on stdout), 2 unusable (input,
settings, or a cluster that cannot be read).
"""

from __future__ import annotations

import asyncio
import copy
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import yaml

from webhook import review
from webhook.cluster import Cluster, ClusterError
from webhook.commands.common import EXIT_ALLOWED, EXIT_DENIED, EXIT_UNUSABLE, Unusable, open_cluster
from webhook.mutation import Mutator
from webhook.settings import Settings
from webhook.workloads import TEMPLATE_PATHS, pod_from_template, template_of


@dataclass
class Target:
    """One pod to judge: where it sits in the input and the admission request for it."""

    where: str  # "document 2", "document 1 item 3": for messages
    doc: dict[str, Any]  # the input object (Pod, workload or AdmissionReview)
    request: review.Request
    prefix: str = ""  # JSON pointer from `doc` to the pod (a workload's template)


@dataclass
class Result:
    status: int = EXIT_ALLOWED
    classes: list[dict[str, Any]] = field(default_factory=list)


def _review_target(where: str, doc: dict[str, Any]) -> Target:
    try:
        request = review.decode_review(orjson.dumps(doc))
    except review.MalformedReview as exc:
        raise Unusable(f"{where}: {exc}") from None
    if request.group != "" or request.kind != "Pod":
        kind = f"{request.kind or '?'} ({request.group})" if request.group else request.kind or "?"
        raise Unusable(f"{where}: an AdmissionReview of a {kind}: kvinject mutates Pods only")
    if request.object is None:
        raise Unusable(f"{where}: the AdmissionReview has no request.object (a Pod)")
    return Target(where, doc, request)


def _synthetic(pod: dict[str, Any], namespace: str) -> review.Request:
    """The dry-run CREATE the apiserver would send for `pod`."""
    uid = str(uuid.uuid4())
    raw = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "namespace": namespace,
        "object": pod,
        "dryRun": True,
    }
    return review.Request(
        uid=uid,
        kind="Pod",
        group="",
        operation="CREATE",
        namespace=namespace,
        sub_resource="",
        dry_run=True,
        object=pod,
        raw=raw,
    )


def target_of(where: str, doc: dict[str, Any]) -> Target | None:
    """The pod a document stands for, or None for objects without one (Services, ConfigMaps ...)."""
    kind = doc.get("kind")
    if kind == "AdmissionReview":
        return _review_target(where, doc)
    namespace = str((doc.get("metadata") or {}).get("namespace") or "default")
    if kind == "Pod":
        return Target(where, doc, _synthetic(doc, namespace))
    template = template_of(doc)
    if template is None:
        return None
    pod = pod_from_template(template, str((doc.get("metadata") or {}).get("name") or ""))
    prefix = "".join(f"/{key}" for key in TEMPLATE_PATHS[str(kind)])
    return Target(where, doc, _synthetic(pod, namespace), prefix)


def targets(docs: list[Any]) -> list[Target]:
    """Every pod of the input; `kind: List` (what `kubectl get -o yaml` prints) item by item."""
    found: list[Target] = []
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            raise Unusable(f"document {i} is not an object")
        if is_list(doc):
            for j, item in enumerate(doc.get("items") or [], 1):
                if not isinstance(item, dict):
                    raise Unusable(f"document {i} item {j} is not an object")
                target = target_of(f"document {i} item {j}", item)
                if target is not None:
                    found.append(target)
            continue
        target = target_of(f"document {i}", doc)
        if target is not None:
            found.append(target)
    if not found:
        raise Unusable("no Pod, workload (Deployment, StatefulSet, DaemonSet, Job, CronJob) or AdmissionReview found")
    return found


def is_list(doc: dict[str, Any]) -> bool:
    return str(doc.get("kind") or "").endswith("List") and isinstance(doc.get("items"), list)


def relative(ops: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Pod-relative JSON-patch operations made relative to the object holding the pod at `prefix`."""
    if not prefix:
        return ops
    moved = []
    for op in ops:
        op = dict(op)
        for key in ("path", "from"):
            if key in op:
                op[key] = prefix + op[key]
        moved.append(op)
    return moved


def mutated(target: Target, ops: list[dict[str, Any]]) -> Any:
    """The object to print: the input with the patch applied (a review prints its pod)."""
    if target.doc.get("kind") == "AdmissionReview":
        pod = {"apiVersion": "v1", "kind": "Pod", **(target.request.object or {})}
        return jsonpatch.apply_patch(pod, ops)
    return jsonpatch.apply_patch(copy.deepcopy(target.doc), relative(ops, target.prefix))


async def _judge(mutator: Mutator, found: list[Target], patch: bool) -> tuple[Result, dict[int, Any]]:
    result = Result()
    out: dict[int, Any] = {}
    for target in found:
        outcome = await mutator.mutate(target.request)
        response = outcome.response["response"]
        if not response["allowed"]:
            print(f"{target.where}: {response['status']['message']}", file=sys.stderr)
            # An API that stopped answering is not a verdict on the pod.
            status = EXIT_UNUSABLE if outcome.reason == "cluster" else EXIT_DENIED
            result.status = max(result.status, status)
            continue
        for warning in response.get("warnings", []):
            print(f"warning: {target.where}: {warning}", file=sys.stderr)
        out[id(target.doc)] = relative(outcome.ops, target.prefix) if patch else mutated(target, outcome.ops)
        if outcome.provider_class is not None and outcome.provider_class not in result.classes:
            result.classes.append(outcome.provider_class)
    return result, out


def _replace(docs: list[Any], out: dict[int, Any], patch: bool) -> list[Any]:
    """The input with every judged object swapped for its output, Lists item by item (with --patch, one patch
    of the whole List)."""
    result: list[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and is_list(doc):
            if patch:
                ops = [relative(out.get(id(item), []), f"/items/{j}") for j, item in enumerate(doc["items"])]
                result.append([op for item_ops in ops for op in item_ops])
            else:
                result.append({**doc, "items": [out.get(id(item), item) for item in doc["items"]]})
        else:
            result.append(out.get(id(doc), doc))
    return result


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the SecretProviderClass `objects` parameter) in block style."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False)


def run(file: str, settings: Settings, patch: bool) -> int:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        found = targets(docs)
        cluster: Cluster = open_cluster(settings)
    except (OSError, yaml.YAMLError, Unusable) as exc:
        print(f"kvinject: unusable input: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except ClusterError as exc:
        print(f"kvinject: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    result, out = asyncio.run(_judge(Mutator(settings, cluster), found, patch))
    if result.status == EXIT_ALLOWED:
        sys.stdout.write(dump_yaml(_replace(docs, out, patch) + result.classes))
    return result.status
