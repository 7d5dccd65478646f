"""High availability on the real node: kvinject installed from manifests/ (kustomize) and from charts/kvinject (Helm,
taking over the session's kustomize install) runs as 2 replicas (pods of the image built here), and the apiserver
calls them through their Service (kube-proxy, iptables mode: ServiceNetwork). Every scenario runs once per way in.
Under constant admission load through the apiserver, losing a replica and rolling the Deployment out again cost
no admission: every failure is counted and the count must be 0. Nothing here bounds a duration or a rate; the
timings written to stderr are reported only (docs/ha.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    BinariesMissing,
    ControlPlane,
    KvinjectServer,
    Node,
    federated_namespace,
    get_json,
    point_webhooks_at,
    unavailable,
)
from tests.harness.apiload import AdmissionLoad, admission_load
from tests.harness.deploy import INSTALLERS, NAMESPACE, REVISION_ANNOTATION, Installed
from tests.harness.kube import pod_manifest
from tests.harness.services import ServiceNetwork
from tests.harness.waiting import wait_for
from webhook.names import PREFIX

SELECTOR = "app.kubernetes.io/name=kvinject"
TEAM_VAULT = "team-kv"


@pytest.fixture(scope="module")
def services(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceNetwork]:
    with ServiceNetwork(node, tmp_path_factory.mktemp("services")) as network:
        yield network
        assert network.proxy is not None
        network.proxy.check_alive()


@pytest.fixture(scope="module", params=sorted(INSTALLERS))
def installed(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    kvinject: KvinjectServer,
    node: Node,
    services: ServiceNetwork,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Installed, Path]]:
    """kvinject installed one way (INSTALLERS), rolled out, and answering through its Service; afterwards the
    Deployment is gone and the webhooks are the session's kvinject's again."""
    installer = INSTALLERS[request.param]
    try:
        installer.requires()
    except BinariesMissing as exc:
        unavailable(str(exc))
    workdir = tmp_path_factory.mktemp(f"install-{request.param}")
    cp = control_plane
    try:
        result = installer.install(cp, workdir, node.images["kvinject"])
        rollout_complete(cp)
        yield result, workdir
    finally:
        # Replicas first: in certificate mode self they write their caBundle into the webhook configurations.
        installer.uninstall(cp)
        wait_for(lambda: not replicas(cp, terminating=True), "kvinject's pods to be gone")
        point_webhooks_at(cp, kvinject)


@pytest.fixture(scope="module")
def team_pod(control_plane: ControlPlane, installed: tuple[Installed, Path]) -> dict[str, Any]:
    """An opted-in pod of a federated namespace, asking for one secret: what the load creates again and again."""
    ns = federated_namespace(control_plane, "ha", {TEAM_VAULT: ["db-password"]})
    pod = pod_manifest(ns, {PREFIX + "vault": TEAM_VAULT, PREFIX + "secret-db-password": "db-password"})
    wait_for(lambda: admitted_once(control_plane, pod), "an admission through kvinject's Service")
    return pod


def admitted_once(cp: ControlPlane, pod: dict[str, Any]) -> bool:
    with admission_load(cp, pod, threads=1) as load:
        wait_for(lambda: load.attempts > 0, "one dry-run create")
    return not load.failures


def replicas(cp: ControlPlane, terminating: bool = False) -> list[dict[str, Any]]:
    """kvinject's pods (with those being deleted when `terminating`)."""
    items: list[dict[str, Any]] = get_json(cp, "pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
    return [p for p in items if terminating or not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def rollout_complete(cp: ControlPlane) -> None:
    """`kubectl rollout status` (its timeout a hang guard): every replica updated and available."""
    cp.kubectl("rollout", "status", "deployment/kvinject", "-n", NAMESPACE, "--timeout=240s", timeout=300)


def served(cp: ControlPlane, pod: str) -> float:
    """Admissions a replica answered, from its /metrics (read through the apiserver's pod proxy)."""
    text = cp.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/https:{pod}:8443/proxy/metrics").stdout
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("kvinject_admissions_total{")
    )


def keep_going(load: AdmissionLoad, more: int = 20) -> None:
    """Until `more` further creates are admitted: the load ran on past the event."""
    mark = load.mark()
    wait_for(lambda: load.mark() >= mark + more or load.failures, f"{more} more admissions")


def report(what: str, load: AdmissionLoad) -> None:
    """What happened, for docs/ha.md (reported, never asserted)."""
    timeline = "".join(
        f"\n  {line}" for line in sorted([*load.events, *load.failures], key=lambda x: float(x[1:].split("s")[0]))
    )
    sys.stderr.write(f"\n[ha] {what}: {load.admitted} admitted, {len(load.failures)} failed{timeline}\n")


def test_two_replicas_answer_through_the_service(
    control_plane: ControlPlane, installed: tuple[Installed, Path], team_pod: dict[str, Any], node: Node
) -> None:
    cp = control_plane
    (result, _) = installed
    pods = replicas(cp)
    assert len(pods) == 2 and all(ready(p) for p in pods), [p["metadata"]["name"] for p in pods]
    assert {p["spec"]["nodeName"] for p in pods} == {"kvinject-node"}
    assert {c["image"] for p in pods for c in p["spec"]["containers"]} == {node.images["kvinject"]}
    # the Deployment is the installer's (with Helm: the release's labels, ownership taken from kustomize)
    live = get_json(cp, "deployment", "kvinject", "-n", NAMESPACE)["metadata"]["labels"]
    assert result.deployment["metadata"]["labels"].items() <= live.items(), live
    # the apiserver has no way to kvinject but the Service: every webhook names it, none a URL
    for kind, name in (("mutatingwebhookconfiguration", "kvinject"), ("validatingwebhookconfiguration", "kvinject")):
        for hook in get_json(cp, kind, name)["webhooks"]:
            service = hook["clientConfig"]["service"]
            assert (service["name"], service["namespace"], service["port"]) == ("kvinject", NAMESPACE, 443), hook
            assert "url" not in hook["clientConfig"]
    before = sum(served(cp, p["metadata"]["name"]) for p in pods)
    with admission_load(cp, team_pod) as load:
        keep_going(load)
    assert not load.failures, "\n".join(load.failures)
    assert sum(served(cp, p["metadata"]["name"]) for p in pods) >= before + load.admitted


def test_a_replica_killed_under_load_costs_no_admission(
    control_plane: ControlPlane, installed: tuple[Installed, Path], team_pod: dict[str, Any]
) -> None:
    cp = control_plane
    rollout_complete(cp)
    (victim, survivor) = sorted(p["metadata"]["name"] for p in replicas(cp))
    with admission_load(cp, team_pod) as load:
        keep_going(load)
        load.note(f"delete pod {victim} --grace-period=0 --force")
        cp.kubectl("delete", "pod", victim, "-n", NAMESPACE, "--grace-period=0", "--force", "--wait=false")
        wait_for(
            lambda: (
                (now := replicas(cp))
                and len(now) == 2
                and all(ready(p) for p in now)
                and victim not in {p["metadata"]["name"] for p in now}
            ),
            "the Deployment to replace the killed replica",
        )
        load.note("2 ready replicas again")
        keep_going(load)
    report("a replica force-deleted", load)
    assert not load.failures, "\n".join(load.failures)
    assert survivor in {p["metadata"]["name"] for p in replicas(cp)}


def test_rolling_upgrade_under_load_costs_no_admission(
    control_plane: ControlPlane, installed: tuple[Installed, Path], team_pod: dict[str, Any], node: Node
) -> None:
    cp = control_plane
    (result, workdir) = installed
    rollout_complete(cp)
    old = {p["metadata"]["name"] for p in replicas(cp)}
    with admission_load(cp, team_pod) as load:
        keep_going(load)
        load.note(f"{result.how}: revision 2")
        INSTALLERS[result.how].install(cp, workdir, node.images["kvinject"], revision="2")
        rollout_complete(cp)
        load.note("rollout complete")
        # every old replica through its whole shutdown (preStop, drain, exit), under load
        wait_for(lambda: not old & {p["metadata"]["name"] for p in replicas(cp, terminating=True)}, "old pods gone")
        load.note("old pods gone")
        keep_going(load)
    report("rolling upgrade", load)
    assert not load.failures, "\n".join(load.failures)
    now = replicas(cp)
    assert len(now) == 2 and not old & {p["metadata"]["name"] for p in now}
    assert {p["metadata"]["annotations"][REVISION_ANNOTATION] for p in now} == {"2"}


def evict(cp: ControlPlane, pod: str) -> subprocess.CompletedProcess[str]:
    """The Eviction API, as `kubectl drain` calls it (refused while the PodDisruptionBudget allows no disruption)."""
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": NAMESPACE}}
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/eviction"
    result: subprocess.CompletedProcess[str] = cp.kubectl(
        "create", "--raw", path, "-f", "-", input=json.dumps(eviction), check=False
    )
    return result


def test_a_node_drain_evicts_one_replica_at_a_time_under_load(
    control_plane: ControlPlane, installed: tuple[Installed, Path], team_pod: dict[str, Any], node: Node
) -> None:
    """`kubectl drain` of the node: cordon, evict both replicas. The PodDisruptionBudget refuses the second eviction
    while the first one's replacement cannot be Ready (the only node is cordoned: it stays Pending); once the
    node takes pods again (as another node would) and the replacement is Ready, the second eviction goes through."""
    cp = control_plane
    rollout_complete(cp)
    first, second = sorted(p["metadata"]["name"] for p in replicas(cp))
    with admission_load(cp, team_pod) as load:
        keep_going(load)
        cp.kubectl("cordon", node.name)
        try:
            load.note(f"cordon; evict {first}")
            assert evict(cp, first).returncode == 0
            refused = evict(cp, second)
            load.note(f"evict {second}: refused")
            assert refused.returncode != 0 and "disruption budget" in refused.stderr, refused.stderr
            assert [p["metadata"]["name"] for p in replicas(cp) if ready(p)] == [second]
        finally:
            cp.kubectl("uncordon", node.name)
        load.note("uncordon")
        wait_for(lambda: evict(cp, second).returncode == 0, f"the budget to allow evicting {second}")
        load.note(f"evict {second}: done")
        wait_for(
            lambda: (
                len(now := replicas(cp)) == 2
                and all(ready(p) for p in now)
                and not {first, second} & {p["metadata"]["name"] for p in now}
            ),
            "two new replicas Ready",
        )
        load.note("2 ready replicas again")
        keep_going(load)
    report("node drain (evictions)", load)
    assert not load.failures, "\n".join(load.failures)
