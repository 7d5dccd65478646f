"""kvinject.io/refresh on a real node: the refresh sidecar (a native sidecar, in the kvinject-fetch image built from
our Dockerfile) swaps a new Key Vault version into the running pod's file without restarting anything, and waits
out Key Vault's 429 Retry-After, as the double's request log shows. kvinject decides that native sidecars can run
from the real API server's /version (v1.35)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import (
    CLIENT_ID,
    ControlPlane,
    KvinjectServer,
    apply_docs,
    serving_in_place_of,
    wait_for,
)
from tests.harness.cloud import AzureCloud
from tests.node.workloads import deployment, describe, pods, read, running_pod, secret, team_namespace
from webhook.names import INIT_CONTAINER, PREFIX, REFRESH, REFRESH_CONTAINER

pytestmark = pytest.mark.e2e

VAULT = "payments-kv"
OBJECT = "refreshed-db"  # read by this module's pod only, so the double's throttle disturbs no other reader
INTERVAL_SECONDS = 3  # below the shipped 1m floor: the module's kvinject lowers it
RETRY_AFTER = 4
VALUES = ("refresh-one", "refresh-two", "refresh-three")


@pytest.fixture(scope="module")
def refresh_kvinject(
    control_plane: ControlPlane,
    kvinject: KvinjectServer,
    azure_cloud: AzureCloud,
    node: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KvinjectServer]:
    """kvinject for the test's cloud (as conftest's cloud_kvinject), allowing a refresh interval of seconds."""
    node.set_hosts(azure_cloud.hosts)
    node.set_provider_env({"SSL_CERT_FILE": str(azure_cloud.ca_bundle)})
    env = {
        **azure_cloud.kvinject_env(node.images["fetch"]),
        "KVINJECT_LOG_LEVEL": "DEBUG",
        "KVINJECT_REFRESH_MIN_SECONDS": "1",
    }
    with serving_in_place_of(control_plane, kvinject, tmp_path_factory.mktemp("kvinject-refresh"), env) as server:
        yield server


def statuses(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = pod.get("status") or {}
    every = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    return {s["name"]: s for s in every}


def test_a_new_version_reaches_the_running_pod_without_a_restart(
    control_plane: ControlPlane, azure_cloud: AzureCloud, refresh_kvinject: KvinjectServer, node: Any
) -> None:
    cp, cloud = control_plane, azure_cloud
    ns = team_namespace(cp, cloud, "refresh", {VAULT: [OBJECT]})
    cloud.vault.seed(VAULT, {OBJECT: VALUES[0]})
    cloud.vault.grant(VAULT, CLIENT_ID, "get")
    annotations = {
        PREFIX + "mode": "init",
        secret("db-password"): f"{VAULT}/{OBJECT}",
        REFRESH: f"{INTERVAL_SECONDS}s",
    }
    workload = deployment(ns, "refreshed", annotations, image=node.images["busybox"], host_aliases=cloud.host_aliases)
    apply_docs(cp, [workload])
    name = running_pod(cp, ns, "refreshed")
    assert read(cp, ns, name, "cat", "/mnt/secrets/db-password") == VALUES[0]

    (pod,) = pods(cp, ns, "refreshed")
    uid = pod["metadata"]["uid"]
    inits = pod["spec"]["initContainers"]
    assert [c["name"] for c in inits] == [INIT_CONTAINER, REFRESH_CONTAINER]
    assert inits[1]["restartPolicy"] == "Always" and inits[1]["image"] == node.images["fetch"]
    sidecar = statuses(pod)[REFRESH_CONTAINER]
    assert sidecar["started"] is True and "running" in sidecar["state"]

    def current() -> str:
        return read(cp, ns, name, "cat", "/mnt/secrets/db-password")

    def sidecar_log() -> str:
        logs = cp.kubectl("logs", "-n", ns, name, "-c", REFRESH_CONTAINER, check=False)
        return logs.stdout + logs.stderr

    # A new version: the file changes in the running pod.
    cloud.vault.seed(VAULT, {OBJECT: VALUES[1]})
    wait_for(lambda: current() == VALUES[1], "the new version in the pod's file", context=sidecar_log)

    # Key Vault throttles: the sidecar waits out Retry-After, then the next version arrives all the same.
    cloud.vault.throttle(VAULT, 2, retry_after=RETRY_AFTER, secret=OBJECT)
    cloud.vault.seed(VAULT, {OBJECT: VALUES[2]})
    wait_for(lambda: current() == VALUES[2], "the version after the throttling", context=sidecar_log)

    reads = [
        r for r in cloud.vault.records if r.principal == CLIENT_ID and r.path.strip("/").split("/")[1:2] == [OBJECT]
    ]
    codes = [r.status for r in reads]
    assert codes.count(429) == 2, codes
    start = codes.index(429)
    for throttled, following in zip(reads[start : start + 2], reads[start + 1 : start + 3], strict=True):
        assert throttled.status == 429
        # A lower bound only: the request after a 429 came no sooner than Retry-After said.
        assert following.at - throttled.at >= RETRY_AFTER - 0.05
    assert reads[start + 2].status == 200

    # Nothing restarted: the same pod, every container with its first start.
    (after,) = pods(cp, ns, "refreshed")
    assert after["metadata"]["uid"] == uid
    assert {n: s["restartCount"] for n, s in statuses(after).items()} == {
        INIT_CONTAINER: 0,
        REFRESH_CONTAINER: 0,
        "app": 0,
    }, describe(cp, ns, "refreshed")
    log = sidecar_log()
    assert f"db-password ({VAULT}/{OBJECT}): changed to version" in log
    assert f"waits at least {RETRY_AFTER}s (Retry-After)" in log
    assert not any(value in log for value in VALUES)
