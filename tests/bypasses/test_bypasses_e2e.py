"""Every bypass class of the bypass issue replayed on the real apiserver by `alice`, an app-team member bound to the
built-in `edit` ClusterRole in her namespace, plus every right on SecretProviderClasses and `kubectl debug` there
(neither of which `edit` covers), so that kvinject, not RBAC, refuses her. Each attack is denied with its message;
its legitimate counterpart is admitted.

Two teams share the namespace: alice's app runs as ServiceAccount `api` (identity CLIENT_ID, vault `team-kv`), the
billing team's as `billing` (identity BILLING, vault `billing-kv`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.bypasses.tenant import ALICE, POLICY, as_user, new_namespace, wait_for_policy
from tests.harness import (
    CLIENT_ID,
    TENANT_ID,
    ControlPlane,
    K,
    KvinjectServer,
    access_policy,
    apply_docs,
    class_webhook_removed,
    get_json,
    service_account,
    wait_for,
)
from webhook.names import CSI_DRIVER

pytestmark = pytest.mark.e2e

BILLING = "99999999-8888-7777-6666-555555555555"
DRIVER = CSI_DRIVER


def provider_class(namespace: str, name: str, client_id: str, vault: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": "azure",
            "parameters": {
                "clientID": client_id,
                "tenantID": TENANT_ID,
                "keyvaultName": vault,
                "objects": "array:\n  - |\n    objectName: config\n    objectType: secret\n",
                **extra.pop("parameters", {}),
            },
            **extra,
        },
    }


@pytest.fixture
def team(control_plane: ControlPlane, kvinject: KvinjectServer) -> Iterator[str]:
    cp = control_plane
    ns = new_namespace(cp, "bypass")
    apply_docs(
        cp,
        [
            service_account(ns, "api", CLIENT_ID),
            service_account(ns, "billing", BILLING),
            access_policy(f"bypass-api-{ns}", [(ns, "api")], {"team-kv": ["*"]}),
            access_policy(f"bypass-billing-{ns}", [(ns, "billing")], {"billing-kv": ["*"]}, client_id=BILLING),
            # The billing team's own class, syncing its objects into a Secret named as they like.
            provider_class(
                ns,
                "billing-spc",
                BILLING,
                "billing-kv",
                secretObjects=[
                    {"secretName": "billing-config", "type": "Opaque", "data": [{"objectName": "config", "key": "c"}]}
                ],
            ),
        ],
    )
    # `edit` does not cover `kubectl debug`: many platforms grant it to app teams for their namespaces.
    debug = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "alice-debug", "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["get", "update", "patch"]}],
    }
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(debug))
    cp.kubectl("create", "rolebinding", "alice-debug", "-n", ns, "--role=alice-debug", f"--user={ALICE}")
    wait_for_policy(cp, ns)
    yield ns
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    for name in (f"bypass-api-{ns}", f"bypass-billing-{ns}"):
        cp.kubectl("delete", "secretaccesspolicy", name, check=False)


def pod(namespace: str, account: str = "api", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "alice-", "namespace": namespace},
        "spec": {
            "serviceAccountName": account,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "app:1"}],
            **spec,
        },
    }


def csi(provider_class: str, **attributes: str) -> dict[str, Any]:
    return {
        "name": "kv",
        "csi": {
            "driver": DRIVER,
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": provider_class, **attributes},
        },
    }


def alice_creates(cp: ControlPlane, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return as_user(cp, ALICE, "create", "-o", "json", doc=doc)


def denied(result: subprocess.CompletedProcess[str], webhook: str = "validate-others") -> str:
    """Refused by kvinject: hand-written objects by validate-others.kvinject.io (webhook/rollout.py)."""
    assert result.returncode != 0, result.stdout[:300]
    assert f'admission webhook "{webhook}.kvinject.io" denied the request' in result.stderr, result.stderr
    return result.stderr


def admitted(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    created: dict[str, Any] = json.loads(result.stdout)
    return created


ATTRIBUTES = [
    ("other-vault", {"keyvaultName": "billing-kv"}),
    ("other-identity", {"clientID": BILLING}),
    ("node-identity", {"useVMManagedIdentity": "true"}),
    ("other-objects", {"objects": "array:\n  - |\n    objectName: theirs\n"}),
    ("other-cloud", {"cloudName": "AzureStackCloud", "cloudEnvFileName": "/tmp/cloud.json"}),
]


@pytest.mark.parametrize("attributes", [a[1] for a in ATTRIBUTES], ids=[a[0] for a in ATTRIBUTES])
def test_volume_attributes_over_an_allowed_class(
    control_plane: ControlPlane, team: str, attributes: dict[str, str]
) -> None:
    cp = control_plane
    admitted(as_user(cp, ALICE, "apply", "-o", "json", doc=provider_class(team, "team-spc", CLIENT_ID, "team-kv")))
    admitted(alice_creates(cp, pod(team, volumes=[csi("team-spc")])))
    message = denied(alice_creates(cp, pod(team, volumes=[csi("team-spc", **attributes)])))
    assert f"volume kv sets volumeAttributes {', '.join(sorted(attributes))}" in message


def test_service_principal_credentials_on_the_volume(control_plane: ControlPlane, team: str) -> None:
    cp = control_plane
    admitted(as_user(cp, ALICE, "apply", "-o", "json", doc=provider_class(team, "team-spc", CLIENT_ID, "team-kv")))
    volume = csi("team-spc")
    volume["csi"]["nodePublishSecretRef"] = {"name": "sp-credentials"}
    assert "volume kv sets nodePublishSecretRef" in denied(alice_creates(cp, pod(team, volumes=[volume])))


def learn_generated_name(cp: ControlPlane, namespace: str, annotations: dict[str, str]) -> tuple[dict[str, Any], str]:
    opted = pod(namespace)
    opted["metadata"]["labels"] = {K + "inject": "true"}
    opted["metadata"]["annotations"] = annotations
    dry = admitted(as_user(cp, ALICE, "create", "--dry-run=server", "-o", "json", doc=opted))
    (volume,) = [v for v in dry["spec"]["volumes"] if "csi" in v]
    return opted, str(volume["csi"]["volumeAttributes"]["secretProviderClass"])


@pytest.fixture
def without_reserved_names_policy(control_plane: ControlPlane, team: str) -> Iterator[None]:
    """The cluster as it would be without the shipped ValidatingAdmissionPolicy (kvinject's own checks alone)."""
    cp = control_plane
    binding = get_json(cp, "validatingadmissionpolicybinding", POLICY)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        binding["metadata"].pop(key, None)
    binding.pop("status", None)
    cp.kubectl("delete", "validatingadmissionpolicybinding", POLICY)
    probe = provider_class(team, "kvinject-policy-probe", CLIENT_ID, "team-kv")
    wait_for(
        lambda: as_user(cp, ALICE, "create", "--dry-run=server", doc=probe).returncode == 0,
        "the reserved-names policy to stop taking effect",
    )
    try:
        yield
    finally:
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(binding))
        wait_for_policy(cp, team)


def test_a_squatted_generated_class(control_plane: ControlPlane, team: str) -> None:
    """The name is learnt with a dry run; creating it first with other content is refused by the shipped policy."""
    cp = control_plane
    opted, name = learn_generated_name(cp, team, {K + "secret-config": "team-kv/config"})
    squat = provider_class(team, name, BILLING, "billing-kv")
    result = as_user(cp, ALICE, "create", doc=squat)
    assert result.returncode != 0 and f"ValidatingAdmissionPolicy '{POLICY}'" in result.stderr, result.stderr
    stored = admitted(alice_creates(cp, opted))  # the legitimate pod: kvinject creates its class
    assert stored["metadata"]["annotations"][K + "status"] == "injected"


def test_a_squatted_generated_class_without_the_policy(
    control_plane: ControlPlane, team: str, without_reserved_names_policy: None
) -> None:
    """Defence in depth: were the class squatted anyway, kvinject compares the stored class and refuses it."""
    cp = control_plane
    opted, name = learn_generated_name(cp, team, {K + "secret-config": "team-kv/config"})
    squat = provider_class(team, name, CLIENT_ID, "billing-kv")
    squat["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "kvinject"}
    admitted(as_user(cp, ALICE, "create", "-o", "json", doc=squat))
    message = denied(alice_creates(cp, opted), "mutate")
    assert f"SecretProviderClass {team}/{name} exists with content kvinject did not write" in message
    assert "spec.parameters.keyvaultName" in message and "spec.parameters.objects" in message


def test_reading_another_teams_synced_secret_under_any_name(control_plane: ControlPlane, team: str) -> None:
    cp = control_plane
    reader = [{"name": "C", "valueFrom": {"secretKeyRef": {"name": "billing-config", "key": "c"}}}]
    attack = pod(team, containers=[{"name": "app", "image": "app:1", "env": reader}])
    message = denied(alice_creates(cp, attack))
    assert "Secret billing-config holds Key Vault objects synced by SecretProviderClass billing-spc" in message
    for other in (
        pod(
            team, containers=[{"name": "app", "image": "app:1", "envFrom": [{"secretRef": {"name": "billing-config"}}]}]
        ),
        pod(team, volumes=[{"name": "s", "secret": {"secretName": "billing-config"}}]),
        pod(team, volumes=[{"name": "s", "projected": {"sources": [{"secret": {"name": "billing-config"}}]}}]),
        pod(team, initContainers=[{"name": "i", "image": "i:1", "env": reader}]),
    ):
        assert "billing-config" in denied(alice_creates(cp, other))
    admitted(alice_creates(cp, pod(team, "billing", containers=[{"name": "app", "image": "app:1", "env": reader}])))


def test_ephemeral_containers_added_later(control_plane: ControlPlane, team: str) -> None:
    cp = control_plane
    plain = admitted(alice_creates(cp, pod(team)))
    name = plain["metadata"]["name"]

    def debug(container: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        patch = [{"op": "add", "path": "/spec/ephemeralContainers", "value": [container]}]
        return as_user(
            cp, ALICE, "patch", "pod", name, "-n", team, "--subresource=ephemeralcontainers", "--type=json",
            "-p", json.dumps(patch),
        )  # fmt: skip

    reader = {"name": "dbg", "image": "busybox:1", "envFrom": [{"secretRef": {"name": "billing-config"}}]}
    message = denied(debug(reader))
    assert "Secret billing-config holds Key Vault objects synced by SecretProviderClass billing-spc" in message
    assert debug({"name": "dbg", "image": "busybox:1"}).returncode == 0


def test_a_hand_written_kvinject_fetch_container(control_plane: ControlPlane, team: str) -> None:
    cp = control_plane
    objects = json.dumps([{"alias": "x", "vault": "billing-kv", "name": "config", "type": "secret", "version": ""}])
    fetch = {
        "name": "kvinject-fetch",
        "image": "ghcr.io/kvinject/kvinject-fetch:0.1.0",
        "command": ["kvinject", "fetch"],
        "env": [{"name": "KVINJECT_OBJECTS", "value": objects}, {"name": "AZURE_CLIENT_ID", "value": BILLING}],
    }
    message = denied(alice_creates(cp, pod(team, initContainers=[fetch])), "validate")
    assert "the pod carries kvinject's init container kvinject-fetch but kvinject did not inject it" in message


def test_an_alias_bomb_in_a_class(control_plane: ControlPlane, team: str) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    bomb = provider_class(
        team, "bomb", CLIENT_ID, "team-kv", parameters={"objects": "\n".join(levels) + "\narray: *a8\n"}
    )
    cp = control_plane
    refused = as_user(cp, ALICE, "apply", "-o", "json", doc=bomb)
    hook = "validate-classes-others.kvinject.io"  # a hand-written class, not kvinject's
    assert f'admission webhook "{hook}" denied the request' in refused.stderr, refused.stderr
    assert "cannot be judged as the Azure provider reads it" in refused.stderr
    with class_webhook_removed(cp):  # a class written before kvinject was installed
        admitted(as_user(cp, ALICE, "apply", "-o", "json", doc=bomb))
    message = denied(alice_creates(cp, pod(team, volumes=[csi("bomb")])))
    assert "SecretProviderClass" in message and "cannot be judged as the Azure provider reads it" in message
    assert len(message) < 16 * 1024


CLASS_CHANGES = [
    ("node-identity", {"useVMManagedIdentity": "true"}, "reads with the node's managed identity"),
    ("node-identity-spelt-1", {"useVMManagedIdentity": " 1 "}, "reads with the node's managed identity"),
    ("pod-identity", {"usePodIdentity": "True"}, "uses aad-pod-identity"),
    ("no-client-id", {"clientID": ""}, "sets no clientID"),
    ("unreadable-boolean", {"usePodIdentity": "yes"}, "cannot be judged as the Azure provider reads it"),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in CLASS_CHANGES], ids=[c[0] for c in CLASS_CHANGES])
def test_an_admitted_pods_class_changed_later(
    control_plane: ControlPlane, team: str, change: dict[str, str], message: str
) -> None:
    """The driver re-reads the class at every mount and rotation: pods admitted with it must not read otherwise."""
    cp = control_plane
    admitted(as_user(cp, ALICE, "apply", "-o", "json", doc=provider_class(team, "team-spc", CLIENT_ID, "team-kv")))
    admitted(alice_creates(cp, pod(team, volumes=[csi("team-spc")])))
    changed = provider_class(team, "team-spc", CLIENT_ID, "team-kv", parameters=change)
    refused = as_user(cp, ALICE, "apply", doc=changed)
    hook = "validate-classes-others.kvinject.io"  # a hand-written class, not kvinject's
    assert f'admission webhook "{hook}" denied the request' in refused.stderr, refused.stderr
    assert message in refused.stderr
    stored = get_json(cp, "secretproviderclass", "team-spc", "-n", team)
    assert (
        stored["spec"]["parameters"]["clientID"] == CLIENT_ID
        and "useVMManagedIdentity" not in stored["spec"]["parameters"]
    )


def test_the_legitimate_counterparts_are_admitted(control_plane: ControlPlane, team: str) -> None:
    cp = control_plane
    admitted(as_user(cp, ALICE, "apply", "-o", "json", doc=provider_class(team, "team-spc", CLIENT_ID, "team-kv")))
    admitted(alice_creates(cp, pod(team, volumes=[csi("team-spc")])))
    opted = pod(team)
    opted["metadata"]["labels"] = {K + "inject": "true"}
    opted["metadata"]["annotations"] = {K + "mode": "init", K + "secret-config": "team-kv/config"}
    stored = admitted(alice_creates(cp, opted))
    assert any(c["name"] == "kvinject-fetch" for c in stored["spec"]["initContainers"])
