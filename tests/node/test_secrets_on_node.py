"""Pods start on a real node and read their secrets: csi mode through the real Secrets Store CSI driver and Azure
provider, init mode through `kvinject fetch` in the image built from our Dockerfile, rotation, and what a user
waits for when a pod may not read what it asks for (kvinject's denial against a pod stuck in ContainerCreating).

Key Vault and Entra ID are the doubles of tests/harness/cloud.py, reached by name as a custom cloud; everything
else is the real component."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    CLIENT_ID,
    ControlPlane,
    KvinjectServer,
    apply_docs,
    get_json,
    kvinject_webhooks_removed,
    wait_for,
)
from tests.harness.cloud import AzureCloud
from tests.node.workloads import (
    FS_GROUP,
    deployment,
    describe,
    events,
    hand_written,
    pod_of,
    pods,
    read,
    running_pod,
    secret,
    secret_data,
    team_namespace,
)
from webhook.names import PREFIX

pytestmark = pytest.mark.e2e

VAULT = "payments-kv"
RESULTS: dict[str, Any] = {}


def test_csi_mode_pods_run_with_their_files_env_and_versions(
    control_plane: ControlPlane, azure_cloud: AzureCloud, cloud_kvinject: KvinjectServer, node: Any
) -> None:
    cp, cloud = control_plane, azure_cloud
    ns = team_namespace(cp, cloud, "csi", {VAULT: ["db-password", "api-key"]})
    versions = cloud.vault.seed(VAULT, {"db-password": "csi-db-value", "api-key": "csi-api-value"})
    cloud.vault.grant(VAULT, CLIENT_ID, "get")
    annotations = {
        PREFIX + "vault": VAULT,
        secret("db-password"): "db-password",
        secret("api-key"): "api-key",
        PREFIX + "env-DB_PASSWORD": "db-password",
    }
    apply_docs(cp, [deployment(ns, "web", annotations, image=node.images["busybox"], host_aliases=[])])
    pod = running_pod(cp, ns, "web")

    assert read(cp, ns, pod, "cat", "/mnt/secrets/db-password") == "csi-db-value"
    assert read(cp, ns, pod, "cat", "/mnt/secrets/api-key") == "csi-api-value"
    # The driver writes files 0644 by default (behind the symlinks of its atomic writer); the volume is read-only.
    assert read(cp, ns, pod, "stat", "-L", "-c", "%a", "/mnt/secrets/db-password").strip() == "644"
    assert read(cp, ns, pod, "sh", "-c", "echo $DB_PASSWORD").strip() == "csi-db-value"

    (status,) = get_json(cp, "secretproviderclasspodstatuses", "-n", ns)["items"]
    recorded = {o["id"]: o["version"] for o in status["status"]["objects"]}
    assert recorded == {"secret/db-password": versions["db-password"], "secret/api-key": versions["api-key"]}
    assert status["status"]["mounted"] is True and status["status"]["podName"] == pod


def test_rotation_reaches_the_mounted_file_and_the_synced_secret(
    control_plane: ControlPlane, azure_cloud: AzureCloud, cloud_kvinject: KvinjectServer, node: Any
) -> None:
    cp, cloud = control_plane, azure_cloud
    ns = team_namespace(cp, cloud, "rotate", {VAULT: ["rotating"]})
    cloud.vault.seed(VAULT, {"rotating": "before"})
    cloud.vault.grant(VAULT, CLIENT_ID, "get")
    annotations = {secret("rotating"): f"{VAULT}/rotating", PREFIX + "env-ROTATING": "rotating"}
    apply_docs(cp, [deployment(ns, "rotating", annotations, image=node.images["busybox"], host_aliases=[])])
    pod = running_pod(cp, ns, "rotating")
    assert read(cp, ns, pod, "cat", "/mnt/secrets/rotating") == "before"
    (provider_class,) = get_json(cp, "secretproviderclasses", "-n", ns)["items"]
    synced = provider_class["metadata"]["name"]  # generated classes sync into a Secret of their own name
    wait_for(lambda: secret_data(cp, ns, synced).get("rotating") == "before", "the synced Secret")

    new_version = cloud.vault.seed(VAULT, {"rotating": "after"})["rotating"]
    wait_for(
        lambda: read(cp, ns, pod, "cat", "/mnt/secrets/rotating") == "after",
        "the new version in the mounted file",
        context=lambda: node.driver.logs()[-3000:],
    )
    wait_for(lambda: secret_data(cp, ns, synced).get("rotating") == "after", "the new version in the synced Secret")
    (status,) = get_json(cp, "secretproviderclasspodstatuses", "-n", ns)["items"]
    assert {o["id"]: o["version"] for o in status["status"]["objects"]} == {"secret/rotating": new_version}


def test_init_mode_runs_kvinject_fetch_from_the_fetch_image_as_non_root(
    control_plane: ControlPlane, azure_cloud: AzureCloud, cloud_kvinject: KvinjectServer, node: Any
) -> None:
    cp, cloud = control_plane, azure_cloud
    ns = team_namespace(cp, cloud, "init", {VAULT: ["db-password", "missing-*"]})
    cloud.vault.seed(VAULT, {"db-password": "init-db-value"})
    cloud.vault.grant(VAULT, CLIENT_ID, "get")
    annotations = {PREFIX + "mode": "init", secret("db-password"): f"{VAULT}/db-password"}
    aliases = cloud.host_aliases
    apply_docs(cp, [deployment(ns, "init", annotations, image=node.images["busybox"], host_aliases=aliases)])
    pod = running_pod(cp, ns, "init")

    # The app (uid 1000, fsGroup 2000) reads the file kvinject-fetch (the image's uid 65532) wrote.
    assert read(cp, ns, pod, "cat", "/mnt/secrets/db-password") == "init-db-value"
    owner = read(cp, ns, pod, "stat", "-c", "%a %g", "/mnt/secrets/db-password").split()
    assert owner == ["440", str(FS_GROUP)]
    (created,) = pods(cp, ns, "init")
    (fetch,) = created["spec"]["initContainers"]
    # ... from the kvinject-fetch image: no web server, no Kubernetes client (tests/node/test_images.py)
    assert fetch["image"] == node.images["fetch"] and fetch["securityContext"]["runAsNonRoot"] is True
    (done,) = created["status"]["initContainerStatuses"]
    assert done["state"]["terminated"]["exitCode"] == 0

    # An object the policy allows but Key Vault does not have: the init container fails with its reason.
    missing = {PREFIX + "mode": "init", secret("missing-thing"): f"{VAULT}/missing-thing"}
    apply_docs(cp, [deployment(ns, "missing", missing, image=node.images["busybox"], host_aliases=aliases)])

    def failed() -> str | None:
        for candidate in pods(cp, ns, "missing"):
            for status in candidate.get("status", {}).get("initContainerStatuses") or []:
                terminated = (status.get("lastState") or {}).get("terminated") or status["state"].get("terminated")
                if terminated and terminated.get("exitCode") == 1:
                    return str(candidate["metadata"]["name"])
        return None

    name = wait_for(failed, "kvinject-fetch to fail", context=lambda: describe(cp, ns, "missing"))
    shown = cp.kubectl("describe", "pod", name, "-n", ns).stdout
    assert f"missing-thing ({VAULT}/missing-thing): object not found in vault {VAULT}" in shown


def test_the_value_side_by_side_denied_at_create_or_stuck_in_container_creating(
    control_plane: ControlPlane, azure_cloud: AzureCloud, cloud_kvinject: KvinjectServer, node: Any
) -> None:
    """A pod whose identity may not read an object: kvinject says so at `kubectl apply`; without kvinject, the pod
    is created and waits in ContainerCreating with the provider's 403 in its events."""
    cp, cloud = control_plane, azure_cloud
    ns = team_namespace(cp, cloud, "value", {VAULT: ["allowed"]})
    cloud.vault.seed(VAULT, {"forbidden-one": "never-read"})
    # Key Vault grants nothing to the identity: the provider's read would be refused with a 403.
    cloud.vault.revoke(VAULT, CLIENT_ID)
    annotations = {secret("forbidden-one"): f"{VAULT}/forbidden-one"}
    image = node.images["busybox"]
    pod = pod_of(deployment(ns, "forbidden", annotations, image=image, host_aliases=[]), "forbidden")

    started = time.monotonic()
    refused = cp.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
    denied_after = time.monotonic() - started
    assert refused.returncode != 0
    assert "kvinject denied pod forbidden" in refused.stderr and "forbidden-one" in refused.stderr

    # Without kvinject: the same pod as a Secrets Store CSI user writes it, with a class written by hand.
    hand, plain = hand_written(cloud, ns, "forbidden", image, VAULT, ["forbidden-one"])
    with kvinject_webhooks_removed(cp, cloud_kvinject):
        apply_docs(cp, [hand])
        started = time.monotonic()
        cp.kubectl("create", "-f", "-", input=json.dumps(plain))

        def provider_403() -> str | None:
            for event in events(cp, ns, "forbidden"):
                if event.get("reason") == "FailedMount" and "RESPONSE 403" in event.get("message", ""):
                    return str(event["message"])
            return None

        message = wait_for(provider_403, "the provider's 403 in the pod's events")
        waited = time.monotonic() - started
        phase = get_json(cp, "pod", "forbidden", "-n", ns)
        waiting = phase["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        assert waiting == "ContainerCreating"
        assert "403 Forbidden" in message
        assert f"GET https://{VAULT}.vault.kvinject.test/secrets/forbidden-one" in message
    RESULTS["denied-at-create-seconds"] = round(denied_after, 3)
    RESULTS["first-403-event-seconds"] = round(waited, 3)
    print(f"\nside by side: kvinject denied in {denied_after:.2f}s; without it the first 403 came after {waited:.1f}s")


@pytest.fixture(scope="module", autouse=True)
def _record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    if RESULTS:
        out = Path(tmp_path_factory.getbasetemp()) / "node-waits.json"
        out.write_text(json.dumps(RESULTS))
