"""Audit-first rollout over ASGI: what is not kvinject's is judged with KVINJECT_NOT_OPTED_IN_ENFORCEMENT (audit
by default: admitted, counted, annotated), kvinject's own pods with KVINJECT_ENFORCEMENT; a namespace label
enforce tightens it; annotations without the opt-in label are warned about."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import orjson
import pytest

from tests.api.test_validate import JSON, csi_volume, hand_written, synced_env
from tests.bypasses.test_bypasses_api import WORKLOAD, class_review
from tests.harness import EXAMPLES, ROOT, admission_review, golden_cluster
from webhook.app import create_app
from webhook.cluster import ClusterError, FileCluster
from webhook.commands.report import Reporter
from webhook.names import PREFIX
from webhook.policy import Enforcement
from webhook.settings import Settings

K = PREFIX
NODE_IDENTITY = "SecretProviderClass payments/node-identity reads with the node's managed identity"


def settings(others: str) -> Settings:
    """The shipped enforcement for kvinject's pods; `others` for the rest (the test environment says enforce)."""
    return Settings(enforcement=Enforcement.ENFORCE, not_opted_in_enforcement=Enforcement(others))


async def answer(
    doc: dict[str, Any], others: str = "audit", cluster: FileCluster | None = None
) -> tuple[dict[str, Any], str]:
    """/validate's answer and the server's metrics afterwards."""
    app = create_app(settings(others), cluster or golden_cluster())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://k") as c:
        resp = await c.post("/validate", content=orjson.dumps(doc), headers=JSON)
        metrics = (await c.get("/metrics")).text
    assert resp.status_code == 200
    result: dict[str, Any] = resp.json()["response"]
    return result, metrics


def would_deny(metrics: str, namespace: str, mode: str, reason: str) -> float:
    line = f'kvinject_would_deny_total{{enforcement="{mode}",namespace="{namespace}",reason="{reason}"}} '
    return sum(float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines() if x.startswith(line))


NODE_POD = hand_written(volumes=[csi_volume("node-identity")])


@pytest.mark.parametrize("mode", ["audit", "warn"])
async def test_a_hand_written_pod_is_admitted_and_counted_outside_enforce(mode: str) -> None:
    result, metrics = await answer(admission_review(NODE_POD), mode)
    assert result["allowed"] is True, result
    assert result["auditAnnotations"]["decision"] == f"would-deny ({mode})"
    assert NODE_IDENTITY in result["auditAnnotations"]["reason"]
    assert would_deny(metrics, "payments", mode, "provider-class") == 1
    warned = [w for w in result.get("warnings", []) if NODE_IDENTITY in w]
    assert bool(warned) is (mode == "warn")


async def test_a_hand_written_pod_is_denied_under_enforce() -> None:
    result, metrics = await answer(admission_review(NODE_POD), "enforce")
    assert result["allowed"] is False and NODE_IDENTITY in result["status"]["message"]
    assert "kvinject_would_deny_total{" not in metrics


async def test_a_namespace_labelled_enforce_enforces_for_its_hand_written_pods() -> None:
    cluster = golden_cluster()
    cluster.apply(
        "ADDED",
        {
            "kind": "Namespace",
            "metadata": {
                "name": "payments",
                "labels": {K + "enforcement": "enforce"},
                "annotations": {K + "vault": "payments-kv"},
            },
        },
    )
    result, _ = await answer(admission_review(NODE_POD), "audit", cluster)
    assert result["allowed"] is False and NODE_IDENTITY in result["status"]["message"]


async def test_dry_runs_are_not_counted() -> None:
    result, metrics = await answer(admission_review(NODE_POD, dry_run=True))
    assert result["allowed"] is True and "kvinject_would_deny_total{" not in metrics


def kvinjects(change: str) -> dict[str, Any]:
    pod = copy.deepcopy(NODE_POD)
    if change == "label-yes":
        pod["metadata"]["labels"][K + "inject"] = "yes"
    elif change == "kvinject-secret":
        pod["spec"]["containers"][0]["env"] = synced_env("kvinject-api-ffff")
    elif change == "status":
        pod["metadata"]["annotations"][K + "status"] = "injected"
    return pod


@pytest.mark.parametrize("change", ["label-yes", "kvinject-secret", "status"])
async def test_kvinjects_pods_keep_the_servers_enforcement(change: str) -> None:
    """Anything kvinject-related is judged as before: the audit default is only for what is not kvinject's."""
    result, _ = await answer(admission_review(kvinjects(change)), "audit")
    assert result["allowed"] is False, result


async def test_hand_written_classes_are_audited_and_kvinjects_enforced() -> None:
    node = class_review({**WORKLOAD, "useVMManagedIdentity": "true"}, "CREATE")
    result, metrics = await answer(node)
    assert result["allowed"] is True and result["auditAnnotations"]["decision"] == "would-deny (audit)", result
    assert would_deny(metrics, "payments", "audit", "provider-class") == 1
    node["request"]["object"]["metadata"]["name"] = "kvinject-api-0123"
    result, _ = await answer(node)
    assert result["allowed"] is False and "reads with the node's managed identity" in result["status"]["message"]


class Unreachable(FileCluster):
    """A cluster whose API does not answer a miss (kvinject's own seam)."""

    async def _fetch_service_account(self, namespace: str, name: str) -> Any:
        raise ClusterError("the Kubernetes API did not answer")


@pytest.mark.parametrize(("mode", "allowed"), [("audit", True), ("enforce", False)])
async def test_a_hand_written_pod_kvinject_cannot_judge(mode: str, allowed: bool) -> None:
    """Outside enforce it is admitted, as validate-others.kvinject.io's failurePolicy Ignore would."""
    cluster = Unreachable.from_path(EXAMPLES / "cluster.yaml", ROOT / "tests" / "golden" / "cluster-extra.yaml")
    pod = hand_written("ghost", volumes=[csi_volume("payments-shared")])
    result, _ = await answer(admission_review(pod), mode, cluster)
    assert result["allowed"] is allowed, result
    if allowed:
        assert result["auditAnnotations"]["decision"] == "not-judged"


IGNORED = [
    ("annotations-without-label", {}, 'but not the label kvinject.io/inject: "true"'),
    ("inject-yes", {K + "inject": "yes"}, "labelled kvinject.io/inject: 'yes', not \"true\""),
]


@pytest.mark.parametrize(("labels", "says"), [c[1:] for c in IGNORED], ids=[c[0] for c in IGNORED])
@pytest.mark.parametrize("with_volume", [False, True], ids=["alone", "with-own-class"])
async def test_annotations_that_do_nothing_are_warned_about(
    labels: dict[str, str], says: str, with_volume: bool
) -> None:
    pod = hand_written(volumes=[csi_volume("payments-shared")] if with_volume else [])
    pod["metadata"]["labels"].update(labels)
    pod["metadata"]["annotations"] = {K + "secret-db": "db-password"}
    result, _ = await answer(admission_review(pod))
    assert result["allowed"] is True
    (warning,) = [w for w in result["warnings"] if "injects nothing" in w]
    assert says in warning


async def test_the_report_judges_what_is_not_kvinjects_under_its_own_setting() -> None:
    """`kvinject report` tells the same split: hand-written objects would-deny under audit, kvinject's deny."""
    reporter = Reporter(settings("audit"), golden_cluster(), None)
    hand = copy.deepcopy(NODE_POD)
    hand["metadata"].update(name="manual", namespace="payments")
    (finding,) = await reporter.pod(hand)
    assert (finding.effect, finding.mode, finding.reason) == ("would-deny", "audit", "provider-class")
    mine = kvinjects("label-yes")
    mine["metadata"].update(name="mine", namespace="payments")
    (finding,) = await reporter.pod(mine)
    assert (finding.effect, finding.mode) == ("deny", "enforce")
    node_class = class_review({**WORKLOAD, "useVMManagedIdentity": "true"}, "CREATE")["request"]["object"]
    (finding,) = await reporter.provider_class(node_class)
    assert (finding.effect, finding.mode, finding.reason) == ("would-deny", "audit", "provider-class")
