"""The bypasses of the validating webhook, replayed on a real node: without kvinject the attacking pod really reads
an object of another identity (the attack is real), with kvinject it is refused at create.

The team's ServiceAccount `api` may read `team-kv/config` (its policy and Key Vault agree). The billing identity's
objects live in `billing-kv`; the node's managed identity may read them too (a kubelet identity with Key Vault
access, as clusters often have), which IMDS hands out to whoever asks on the node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

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
from tests.harness.doubles.imds import FakeImds
from tests.node.workloads import RESTRICTED, azure_class, objects_parameter, read, team_namespace
from webhook.names import CLASS_ATTRIBUTE, CSI_DRIVER, INJECT_LABEL, PREFIX

pytestmark = pytest.mark.e2e

NODE_IDENTITY = "77777777-6666-5555-4444-333333333333"
RESERVED_NAMES = "kvinject-reserved-provider-classes"


@pytest.fixture(scope="module")
def imds(azure_cloud: AzureCloud) -> Iterator[FakeImds]:
    with FakeImds(azure_cloud.entra, [NODE_IDENTITY]) as found:
        yield found


@pytest.fixture
def team(control_plane: ControlPlane, azure_cloud: AzureCloud, cloud_kvinject: KvinjectServer) -> str:
    cloud = azure_cloud
    ns = team_namespace(control_plane, cloud, "attack", {"team-kv": ["config"]})
    cloud.vault.seed("team-kv", {"config": "team-config"})
    cloud.vault.seed("billing-kv", {"payroll": "billing-payroll-value"})
    cloud.vault.grant("team-kv", CLIENT_ID, "get")
    cloud.vault.grant("billing-kv", NODE_IDENTITY, "get")
    return ns


def provider_class(cloud: AzureCloud, namespace: str, name: str, **parameters: str) -> dict[str, Any]:
    """The team's own class: its identity, its vault, its object (kvinject's class webhook admits it)."""
    return azure_class(cloud, namespace, name, "team-kv", ["config"], **parameters)


def attacker(namespace: str, name: str, image: str, provider_class: str, **attributes: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "serviceAccountName": "api",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True},
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "sleep 3600"],
                    "securityContext": {"runAsUser": 1000, **RESTRICTED},
                    "volumeMounts": [{"name": "kv", "mountPath": "/mnt/stolen", "readOnly": True}],
                }
            ],
            "volumes": [
                {
                    "name": "kv",
                    "csi": {
                        "driver": CSI_DRIVER,
                        "readOnly": True,
                        "volumeAttributes": {CLASS_ATTRIBUTE: provider_class, **attributes},
                    },
                }
            ],
        },
    }


NODE_READS_BILLING = {
    "useVMManagedIdentity": "true",
    "userAssignedIdentityID": NODE_IDENTITY,
    "clientID": "",
    "keyvaultName": "billing-kv",
    "objects": objects_parameter("payroll"),
}


def learn_generated_name(cp: ControlPlane, namespace: str, image: str) -> str:
    """The name kvinject will give the team's class, learnt with a dry run as any team member can."""
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "probe-",
            "namespace": namespace,
            "labels": {INJECT_LABEL: "true"},
            "annotations": {PREFIX + "secret-config": "team-kv/config"},
        },
        "spec": {"serviceAccountName": "api", "containers": [{"name": "app", "image": image}]},
    }
    dry = json.loads(cp.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe)).stdout)
    (volume,) = [v for v in dry["spec"]["volumes"] if "csi" in v]
    return str(volume["csi"]["volumeAttributes"][CLASS_ATTRIBUTE])


def attacks(cp: ControlPlane, cloud: AzureCloud, namespace: str, image: str) -> dict[str, list[dict[str, Any]]]:
    squatted = learn_generated_name(cp, namespace, image)
    return {
        "volume-attributes": [
            provider_class(cloud, namespace, "team-spc"),
            attacker(namespace, "by-attributes", image, "team-spc", **NODE_READS_BILLING),
        ],
        "squatted-generated-class": [
            {**provider_class(cloud, namespace, squatted, **NODE_READS_BILLING)},
            attacker(namespace, "by-squat", image, squatted),
        ],
        "node-identity-class": [
            provider_class(cloud, namespace, "node-spc", **NODE_READS_BILLING),
            attacker(namespace, "by-node", image, "node-spc"),
        ],
    }


def stolen(cp: ControlPlane, namespace: str, pod: str) -> str | None:
    found = cp.kubectl("get", "pod", pod, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0 or not json.loads(found.stdout).get("status", {}).get("containerStatuses", [{}])[0].get(
        "ready"
    ):
        return None
    return read(cp, namespace, pod, "cat", "/mnt/stolen/payroll")


def test_each_attack_is_real_without_kvinject_and_refused_with_it(
    control_plane: ControlPlane,
    azure_cloud: AzureCloud,
    cloud_kvinject: KvinjectServer,
    imds: FakeImds,
    team: str,
    node: Any,
) -> None:
    cp, cloud = control_plane, azure_cloud
    image = node.images["busybox"]
    planned = attacks(cp, cloud, team, image)
    binding = get_json(cp, "validatingadmissionpolicybinding", RESERVED_NAMES)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        binding["metadata"].pop(key, None)
    binding.pop("status", None)

    # Without kvinject (its webhooks and its reserved-names policy): every attack reads billing's object.
    cp.kubectl("delete", "validatingadmissionpolicybinding", RESERVED_NAMES)
    try:
        with kvinject_webhooks_removed(cp, cloud_kvinject):
            for name, (spc, pod) in planned.items():
                apply_docs(cp, [spc])
                cp.kubectl("create", "-f", "-", input=json.dumps(pod))
                value = wait_for(
                    lambda pod=pod: stolen(cp, team, pod["metadata"]["name"]),
                    f"the {name} attack to read billing's object",
                    context=lambda: node.provider.logs()[-3000:],
                )
                assert value == "billing-payroll-value", name
            assert {r["client_id"] for r in imds.requests} == {NODE_IDENTITY}
            for _, pod in planned.values():
                cp.kubectl("delete", "pod", pod["metadata"]["name"], "-n", team, "--wait=true")
    finally:
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(binding))

    # With kvinject: the same pods are refused when created, naming why.
    node_identity = "reads with the node's managed identity (useVMManagedIdentity), which is not allowed"
    squatted = planned["squatted-generated-class"][0]["metadata"]["name"]
    reasons = {
        "volume-attributes": "volume kv sets volumeAttributes",
        "squatted-generated-class": f"SecretProviderClass {team}/{squatted} {node_identity}",
        "node-identity-class": f"SecretProviderClass {team}/node-spc {node_identity}",
    }
    for name, (_, pod) in planned.items():
        refused = cp.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
        assert refused.returncode != 0, name
        # A pod mounting a kvinject-* class is kvinject's; the others are hand-written (webhook/rollout.py).
        hook = "validate.kvinject.io" if name == "squatted-generated-class" else "validate-others.kvinject.io"
        assert f'admission webhook "{hook}" denied the request' in refused.stderr, refused.stderr
        assert reasons[name] in refused.stderr, (name, refused.stderr)
