"""restart-on-change on a real node (docs/rotation.md): a new version in Key Vault reaches the mounted files through
the Secrets Store CSI driver's rotation (every 5 s on the session's node), the driver records it in the pod's
SecretProviderClassPodStatus, and kvinject rolls the Deployment that opted in, once, so that its new pod's
environment variable (from the synced Secret) holds the new value; a Deployment that did not opt in keeps its pod
(its file changes, its environment does not).

Everything is the real component but Key Vault and Entra ID (the doubles of tests/harness/cloud.py). Two kvinject
replicas decide: the session's and the module's cloud_kvinject."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import CLIENT_ID, ControlPlane, KvinjectServer, apply_docs, get_json, wait_for
from tests.harness.cloud import AzureCloud
from tests.node.workloads import deployment, describe, pods, read, running_pod, secret, team_namespace
from webhook.names import EVENT_RESTARTED, PREFIX, RESTART_ON_CHANGE, RESTART_STATE, RESTARTED_AT
from webhook.restarts import State

pytestmark = pytest.mark.e2e

VAULT = "payments-kv"
OBJECT = "rotating-db"


def workload(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = get_json(cp, "deployment", name, "-n", namespace)
    return obj


def record(cp: ControlPlane, namespace: str, name: str) -> State | None:
    return State.decode((workload(cp, namespace, name)["metadata"].get("annotations") or {}).get(RESTART_STATE))


def replica_sets(cp: ControlPlane, namespace: str, app: str) -> int:
    return len(get_json(cp, "replicasets", "-n", namespace, "-l", f"app={app}")["items"])


def restarts_total(server: KvinjectServer) -> float:
    line = 'kvinject_restarts_total{kind="Deployment",reason="object-version-changed"} '
    found = [x for x in server.get("/metrics").text.splitlines() if x.startswith(line)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def only_new_pod(cp: ControlPlane, namespace: str, app: str, old: str) -> str | None:
    """The app's one pod once the rollout has replaced `old` and the new pod is ready."""
    found = pods(cp, namespace, app)
    if len(found) != 1 or found[0]["metadata"]["name"] == old:
        return None
    statuses = found[0].get("status", {}).get("containerStatuses") or []
    return str(found[0]["metadata"]["name"]) if statuses and all(s.get("ready") for s in statuses) else None


def test_a_new_version_rolls_the_opted_in_deployment_once(
    control_plane: ControlPlane,
    azure_cloud: AzureCloud,
    kvinject: KvinjectServer,
    cloud_kvinject: KvinjectServer,
    node: Any,
) -> None:
    cp, cloud = control_plane, azure_cloud
    # The session's replica has served other tests (tests/e2e/test_restart_on_change.py): count from here.
    counted = restarts_total(kvinject) + restarts_total(cloud_kvinject)
    ns = team_namespace(cp, cloud, "restart", {VAULT: [OBJECT]})
    cloud.vault.seed(VAULT, {OBJECT: "before"})
    cloud.vault.grant(VAULT, CLIENT_ID, "get")
    annotations = {secret(OBJECT): f"{VAULT}/{OBJECT}", PREFIX + "env-DB": OBJECT}
    image = node.images["busybox"]
    apply_docs(
        cp,
        [
            deployment(ns, "rolls", {**annotations, RESTART_ON_CHANGE: "true"}, image=image, host_aliases=[]),
            deployment(ns, "stays", annotations, image=image, host_aliases=[]),
        ],
    )
    rolls, stays = running_pod(cp, ns, "rolls"), running_pod(cp, ns, "stays")
    for pod in (rolls, stays):
        assert read(cp, ns, pod, "sh", "-c", "echo $DB").strip() == "before"
    first = wait_for(lambda: record(cp, ns, "rolls"), "kvinject's record of what Deployment rolls mounts")
    (before,) = first.versions.values()

    # Key Vault throttles the rotation's first reads of the new version (429, Retry-After): it lands all the same,
    # and the Deployment still rolls once.
    cloud.vault.throttle(VAULT, 2, retry_after=1, secret=OBJECT)
    after = cloud.vault.seed(VAULT, {OBJECT: "after"})[OBJECT]
    new = wait_for(
        lambda: only_new_pod(cp, ns, "rolls", rolls),
        "Deployment rolls rolled to a new ready pod",
        context=lambda: describe(cp, ns, "rolls") + node.driver.logs()[-2000:] + cloud_kvinject.logs()[-2000:],
    )
    assert read(cp, ns, new, "sh", "-c", "echo $DB").strip() == "after"
    assert read(cp, ns, new, "cat", "/mnt/secrets/" + OBJECT) == "after"
    rolled = workload(cp, ns, "rolls")
    assert RESTARTED_AT in rolled["spec"]["template"]["metadata"]["annotations"]
    state = record(cp, ns, "rolls")
    assert state is not None and set(state.versions.values()) == {after} and after != before

    # Not opted in: the driver rotated its file, its pod runs on with the value it started with.
    wait_for(lambda: read(cp, ns, stays, "cat", "/mnt/secrets/" + OBJECT) == "after", "the rotated file in stays")
    assert read(cp, ns, stays, "sh", "-c", "echo $DB").strip() == "before"
    assert [p["metadata"]["name"] for p in pods(cp, ns, "stays")] == [stays]
    assert replica_sets(cp, ns, "stays") == 1
    assert RESTART_STATE not in (workload(cp, ns, "stays")["metadata"].get("annotations") or {})

    throttled = [r for r in cloud.vault.records if r.status == 429 and r.path.strip("/").split("/")[1:2] == [OBJECT]]
    assert len(throttled) == 2

    # Once: one new template, one restart counted by the two replicas together.
    assert replica_sets(cp, ns, "rolls") == 2
    assert restarts_total(kvinject) + restarts_total(cloud_kvinject) - counted == 1
    events = get_json(cp, "events", "-n", ns, "--field-selector", "involvedObject.name=rolls")["items"]
    (said,) = [e for e in events if e["reason"] == EVENT_RESTARTED]
    assert f"secret/{OBJECT} changed from version {before} to {after} (1 pods)" in said["message"]
