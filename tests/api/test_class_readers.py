"""/validate over ASGI: a SecretProviderClass write judged again for every live pod of the namespace that reads
through it, kvinject's or not, each under its own enforcement (kvinject's pods: KVINJECT_ENFORCEMENT; the others:
KVINJECT_NOT_OPTED_IN_ENFORCEMENT), and `csi.storage.k8s.io/` class parameters refused for both stores.

The red team's reproductions: tests/bypasses/test_redteam_vault_api.py; through the real apiserver:
tests/e2e/vault/test_admission_vault.py."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.test_after_admission import Listed as AfterAdmissionListed
from tests.api.test_after_admission import opted_in, write
from tests.api.test_validate import csi_volume, hand_written, post
from tests.bypasses.test_redteam_vault_api import (
    ADDRESS,
    ALLOWED,
    FORBIDDEN,
    POLICY,
    TOKENS,
    VAPI,
    class_write,
    objects,
    opted_in_pod,
    params,
    vault_class,
)
from tests.harness import EXAMPLES, RELAXABLE, ROOT, admission_review
from webhook.policy import Enforcement
from webhook.settings import Settings


class Listed(AfterAdmissionListed):
    """test_after_admission's listing double, counting how often kvinject lists."""

    asked = 0

    async def namespace_pods(self, namespace: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        self.asked += 1
        return await super().namespace_pods(namespace, keep)


def listing(*pods: dict[str, Any], failure: str = "") -> Listed:
    cluster = Listed.from_path(EXAMPLES / "cluster.yaml", ROOT / "tests" / "golden" / "cluster-extra.yaml")
    assert isinstance(cluster, Listed)
    cluster.apply("ADDED", VAPI)
    cluster.apply("ADDED", POLICY)
    cluster.apply("ADDED", vault_class(params()))  # the class as the pods were admitted with it
    cluster.pods, cluster.failure = pods, failure
    return cluster


def settings(others: Enforcement, kvinjects: Enforcement = Enforcement.ENFORCE) -> Settings:
    return Settings(
        relaxable_namespaces=RELAXABLE,
        hashicorp_vault_address=ADDRESS,
        enforcement=kvinjects,
        not_opted_in_enforcement=others,
    )


def pod(
    name: str,
    account: str = "vapi",
    spc: str = "team-vault",
    phase: str = "Running",
    gated: bool = False,
    ours: bool = False,
) -> dict[str, Any]:
    """A live pod of namespace payments mounting `spc`: hand-written, or (ours) one of kvinject's."""
    found = opted_in_pod({}) if ours else hand_written(service_account=account)
    found["spec"]["serviceAccountName"] = account
    found["spec"]["volumes"] = [csi_volume(spc)]
    found["metadata"].update(name=name, namespace="payments")
    if gated:
        found["spec"]["schedulingGates"] = [{"name": "example.com/hold"}]
    found["status"] = {"phase": phase}
    return found


TO_BILLING = class_write(params(objects(FORBIDDEN)), "UPDATE")
UNCHANGED = class_write(params(objects(ALLOWED)), "UPDATE")
MOUNTED = "SecretProviderClass team-vault is mounted by pod {} (ServiceAccount payments/{}): volume secrets: "
BILLING = "may not read secret/billing/db#password"
NO_ROLE = "ServiceAccount payments/api has no vault.kvinject.io/role annotation"

# (id, class write, pods, KVINJECT_NOT_OPTED_IN_ENFORCEMENT, KVINJECT_ENFORCEMENT, denied with / None, decision)
WRITES: list[tuple[str, dict[str, Any], list[dict[str, Any]], Enforcement, Enforcement, list[str] | None, str]] = [
    ("hand-written-pod-enforce", TO_BILLING, [pod("worker-1")], Enforcement.ENFORCE, Enforcement.ENFORCE,
     [MOUNTED.format("worker-1", "vapi"), BILLING], ""),
    ("hand-written-pod-audit", TO_BILLING, [pod("worker-1")], Enforcement.AUDIT, Enforcement.ENFORCE,
     None, "would-deny (audit)"),
    ("hand-written-pod-warn", TO_BILLING, [pod("worker-1")], Enforcement.WARN, Enforcement.ENFORCE,
     None, "would-deny (warn)"),
    ("held-by-scheduling-gates", TO_BILLING, [pod("worker-1", phase="Pending", gated=True)], Enforcement.ENFORCE,
     Enforcement.ENFORCE, [MOUNTED.format("worker-1", "vapi"), BILLING], ""),
    ("finished-pod", TO_BILLING, [pod("worker-1", phase="Succeeded")], Enforcement.ENFORCE, Enforcement.ENFORCE,
     None, "allowed"),
    ("failed-pod", TO_BILLING, [pod("worker-1", phase="Failed")], Enforcement.ENFORCE, Enforcement.ENFORCE,
     None, "allowed"),
    ("pod-of-another-class", TO_BILLING, [pod("worker-1", spc="other")], Enforcement.ENFORCE, Enforcement.ENFORCE,
     None, "allowed"),
    ("granted-path", UNCHANGED, [pod("worker-1")], Enforcement.ENFORCE, Enforcement.ENFORCE, None, "allowed"),
    ("account-without-a-role", UNCHANGED, [pod("worker-1", account="api")], Enforcement.ENFORCE, Enforcement.ENFORCE,
     [MOUNTED.format("worker-1", "api"), NO_ROLE], ""),
    ("two-accounts-both-named", TO_BILLING, [pod("worker-1"), pod("worker-2", account="api")], Enforcement.ENFORCE,
     Enforcement.ENFORCE, [MOUNTED.format("worker-1", "vapi"), BILLING, MOUNTED.format("worker-2", "api"), NO_ROLE],
     ""),
    # kvinject's pod decides under its enforcement, whatever the others' setting.
    ("kvinjects-pod-under-audit-first", TO_BILLING, [pod("api-1", ours=True), pod("worker-1")], Enforcement.AUDIT,
     Enforcement.ENFORCE, [MOUNTED.format("api-1", "vapi"), BILLING], ""),
    # The hand-written pod is judged under its own setting beside a kvinject pod the class is fine for.
    ("hand-written-beside-kvinjects-enforce", UNCHANGED, [pod("api-1", ours=True), pod("worker-1", account="api")],
     Enforcement.ENFORCE, Enforcement.ENFORCE, [MOUNTED.format("worker-1", "api"), NO_ROLE], ""),
    ("hand-written-beside-kvinjects-audit", UNCHANGED, [pod("api-1", ours=True), pod("worker-1", account="api")],
     Enforcement.AUDIT, Enforcement.ENFORCE, None, "would-deny (audit)"),
    # And the other way round: kvinject's own setting relaxed, the others enforced.
    ("kvinject-audit-others-enforce", TO_BILLING, [pod("api-1", ours=True), pod("worker-1")], Enforcement.ENFORCE,
     Enforcement.AUDIT, [MOUNTED.format("worker-1", "vapi"), BILLING], ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "pods", "others", "kvinjects", "says", "decision"),
    [w[1:] for w in WRITES],
    ids=[w[0] for w in WRITES],
)
async def test_a_class_write_is_judged_for_every_pod_reading_it(
    doc: dict[str, Any],
    pods: list[dict[str, Any]],
    others: Enforcement,
    kvinjects: Enforcement,
    says: list[str] | None,
    decision: str,
) -> None:
    answer = await post("/validate", copy.deepcopy(doc), listing(*pods), settings(others, kvinjects))
    if says is not None:
        assert answer["allowed"] is False, answer
        assert all(s in answer["status"]["message"] for s in says), answer["status"]["message"]
        return
    assert answer["allowed"] is True, answer
    assert answer["auditAnnotations"]["decision"] == decision, answer
    if decision.startswith("would-deny"):
        assert "is mounted by pod worker-1" in answer["auditAnnotations"]["reason"]
    warned = [w for w in answer.get("warnings", []) if "would deny" in w]
    assert bool(warned) is (decision == "would-deny (warn)"), answer


async def test_pods_alike_are_judged_once() -> None:
    pods = [pod(f"worker-{i}") for i in range(3)]
    answer = await post("/validate", copy.deepcopy(TO_BILLING), listing(*pods), settings(Enforcement.ENFORCE))
    assert answer["allowed"] is False
    assert answer["status"]["message"].count("is mounted by pod") == 1, answer["status"]["message"]


@pytest.mark.parametrize(
    ("others", "allowed"), [(Enforcement.AUDIT, False), (Enforcement.ENFORCE, False)], ids=["audit", "enforce"]
)
async def test_a_class_is_denied_when_the_pods_cannot_be_listed(others: Enforcement, allowed: bool) -> None:
    """As before the others' pods were judged: which pods read a class cannot be told, so it is denied."""
    cluster = listing(failure="list Pod: HTTP 403 forbidden")
    answer = await post("/validate", copy.deepcopy(UNCHANGED), cluster, settings(others))
    assert answer["allowed"] is allowed and cluster.asked == 1
    assert "could not list the pods in namespace payments" in answer["status"]["message"]


async def test_a_generated_class_lists_no_pods() -> None:
    doc = copy.deepcopy(UNCHANGED)
    doc["request"]["object"]["metadata"]["name"] = "kvinject-0123456789abcdef"
    cluster = listing(pod("worker-1"))
    await post("/validate", doc, cluster, settings(Enforcement.ENFORCE))
    assert cluster.asked == 0


# Azure: a hand-written pod of payments/api mounting the class payments-shared, turned to another vault.
AZURE = [
    ("enforce", Enforcement.ENFORCE, False),
    ("audit", Enforcement.AUDIT, True),
]


@pytest.mark.parametrize(("others", "allowed"), [a[1:] for a in AZURE], ids=[a[0] for a in AZURE])
async def test_an_azure_class_turned_under_a_hand_written_pod(others: Enforcement, allowed: bool) -> None:
    worker = hand_written(volumes=[csi_volume("payments-shared")])
    worker["metadata"].update(name="worker-1", namespace="payments")
    worker["status"] = {"phase": "Running"}
    answer = await post("/validate", write("payments-shared", keyvaultName="other-kv"), listing(worker),
                        settings(others))  # fmt: skip
    said = "SecretProviderClass payments-shared is mounted by pod worker-1 (ServiceAccount payments/api)"
    if allowed:
        assert answer["allowed"] is True and said in answer["auditAnnotations"]["reason"], answer
    else:
        assert answer["allowed"] is False and said in answer["status"]["message"], answer
        assert "other-kv" in answer["status"]["message"]
    # The same class is fine for kvinject's pod of the same account: the denial is the hand-written pod's.
    fine = await post("/validate", write("payments-shared"), listing(worker, opted_in("api-1")), settings(others))
    assert fine["allowed"] is True, fine


# csi.storage.k8s.io/ keys in a class's parameters, for both stores: at the class write and at a pod mounting it.
DRIVER_KEYS = [
    ("vault-tokens", class_write(params(**TOKENS)), "team-vault"),
    ("vault-pod-name", class_write(params(**{"csi.storage.k8s.io/pod.name": "x"})), "team-vault"),
    ("azure-tokens", write("payments-shared", **TOKENS), "payments-shared"),
    ("azure-any-case", write("payments-shared", **{"CSI.storage.k8s.io/serviceAccount.tokens": "x"}),
     "payments-shared"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "name"), [d[1:] for d in DRIVER_KEYS], ids=[d[0] for d in DRIVER_KEYS])
async def test_a_driver_key_in_a_class_is_refused(doc: dict[str, Any], name: str) -> None:
    enforced = settings(Enforcement.ENFORCE)
    answer = await post("/validate", copy.deepcopy(doc), listing(), enforced)
    assert answer["allowed"] is False, answer
    assert "csi.storage.k8s.io/" in answer["status"]["message"]
    assert "eyJhbGciOi" not in str(answer)
    cluster = listing()
    cluster.apply("ADDED", {**doc["request"]["object"], "metadata": {"name": name, "namespace": "payments"}})
    account = "vapi" if name == "team-vault" else "api"
    mounting = hand_written(service_account=account, volumes=[csi_volume(name)])
    answer = await post("/validate", admission_review(mounting), cluster, enforced)
    assert answer["allowed"] is False, answer
    assert "csi.storage.k8s.io/" in answer["status"]["message"]
    assert "eyJhbGciOi" not in str(answer)
