"""Red-team reproductions (issue 15 review): what an app team with `edit` (+ `kubectl debug`) could do after kvinject
admitted its pods, each now denied, and the legitimate counterparts that stay admitted.

What docs/targets.md and the README's threat model promise: ephemeral containers take nothing of kvinject's, its
record on a pod is fixed at admission, a class kvinject's pods read through is judged as kvinject's whatever the
audit-first setting, and kvinject-* Secret names are kvinject's. The pure functions: tests/unit/test_after_admission.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bypasses.tenant import ALICE, as_user
from tests.bypasses.test_bypasses_e2e import admitted, alice_creates, csi, pod, provider_class, team  # noqa: F401
from tests.harness import CLIENT_ID, TENANT_ID, ControlPlane, K, KvinjectServer, get_json
from tests.harness.kube import point_webhooks_at, serve_as_shipped

pytestmark = pytest.mark.e2e


def _injected_pod(cp: ControlPlane, namespace: str) -> dict[str, Any]:
    """An init-mode pod whose only target is `app` (kvinject.io/containers: app)."""
    opted = pod(namespace)
    opted["metadata"]["labels"] = {K + "inject": "true"}
    opted["metadata"]["annotations"] = {
        K + "mode": "init",
        K + "secret-config": "team-kv/config",
        K + "containers": "app",
    }
    stored = admitted(alice_creates(cp, opted))
    assert stored["metadata"]["annotations"][K + "injected-containers"] == "app"
    return stored


def _debug(cp: ControlPlane, namespace: str, name: str, container: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    patch = [{"op": "add", "path": "/spec/ephemeralContainers", "value": [container]}]
    return as_user(
        cp, ALICE, "patch", "pod", name, "-n", namespace, "--subresource=ephemeralcontainers", "--type=json",
        "-p", json.dumps(patch),
    )  # fmt: skip


def test_an_ephemeral_container_mounting_kvinjects_volume_is_not_a_target(
    control_plane: ControlPlane,
    team: str,  # noqa: F811
) -> None:
    """docs/targets.md: a container carrying kvinject's volume mount without being a target is denied.
    An ephemeral container is neither recorded nor named, yet may mount kvinject-secrets."""
    cp = control_plane
    stored = _injected_pod(cp, team)
    name = stored["metadata"]["name"]
    dbg = {"name": "dbg", "image": "busybox:1", "volumeMounts": [{"name": "kvinject-secrets", "mountPath": "/s"}]}
    result = _debug(cp, team, name, dbg)
    after = json.loads(cp.kubectl("get", "pod", name, "-n", team, "-o", "json").stdout)
    got = [c["name"] for c in after["spec"].get("ephemeralContainers") or []]
    assert result.returncode != 0 and "dbg" not in got, (
        f"admitted: ephemeral container {got} mounts kvinject-secrets on a pod whose targets are 'app' only"
    )


def test_the_record_and_named_containers_can_be_edited_after_admission(control_plane: ControlPlane, team: str) -> None:  # noqa: F811
    """No webhook sees pod UPDATEs: kvinject's record and kvinject.io/containers are rewritten freely afterwards
    (the record is then trusted by later checks, e.g. ephemeral containers)."""
    cp = control_plane
    name = _injected_pod(cp, team)["metadata"]["name"]
    result = as_user(
        cp, ALICE, "annotate", "pod", name, "-n", team, "--overwrite",
        f"{K}injected-containers=app,dbg", f"{K}containers=app,dbg",
    )  # fmt: skip
    after = json.loads(cp.kubectl("get", "pod", name, "-n", team, "-o", "json").stdout)
    assert result.returncode != 0 and after["metadata"]["annotations"][K + "injected-containers"] == "app", (
        "kvinject's record was rewritten after admission: "
        + after["metadata"]["annotations"][K + "injected-containers"]
    )


@pytest.fixture
def audit_first(control_plane: ControlPlane, kvinject: KvinjectServer, tmp_path: Path) -> Iterator[KvinjectServer]:
    """The shipped default: KVINJECT_NOT_OPTED_IN_ENFORCEMENT=audit (KVINJECT_ENFORCEMENT stays enforce)."""
    env = {"KVINJECT_TENANT_ID": TENANT_ID, "KVINJECT_NOT_OPTED_IN_ENFORCEMENT": "audit"}
    server = serve_as_shipped(control_plane, tmp_path / "audit", env)
    point_webhooks_at(control_plane, server)
    yield server
    point_webhooks_at(control_plane, kvinject)  # back to the session's server
    server.stop()


def test_an_opted_in_pods_provider_class_changed_later_under_audit(
    control_plane: ControlPlane,
    team: str,  # noqa: F811
    audit_first: KvinjectServer,
) -> None:
    """An enforced kvinject pod (kvinject.io/provider-class) mounts the hand-written class itself; the driver re-reads
    it at every rotation. Changing it to read with the node's identity from billing's vault is only audited."""
    cp = control_plane
    admitted(as_user(cp, ALICE, "apply", "-o", "json", doc=provider_class(team, "team-spc", CLIENT_ID, "team-kv")))
    opted = pod(team)
    opted["metadata"]["labels"] = {K + "inject": "true"}
    opted["metadata"]["annotations"] = {K + "provider-class": "team-spc"}
    stored = admitted(alice_creates(cp, opted))
    mounted = [v["csi"]["volumeAttributes"]["secretProviderClass"] for v in stored["spec"]["volumes"] if "csi" in v]
    assert mounted == ["team-spc"], mounted
    changed = provider_class(team, "team-spc", CLIENT_ID, "billing-kv", parameters={"useVMManagedIdentity": "true"})
    result = as_user(cp, ALICE, "apply", doc=changed)
    now = get_json(cp, "secretproviderclass", "team-spc", "-n", team)["spec"]["parameters"]
    assert result.returncode != 0 and "useVMManagedIdentity" not in now, (
        f"admitted under audit: the class of running kvinject pod {stored['metadata']['name']} now reads"
        f" {now['keyvaultName']} with useVMManagedIdentity={now.get('useVMManagedIdentity')}"
    )


GENERATED = "kvinject-0123456789abcdef"  # a generated class's synced Secret name; none syncs it here
READS = [
    ("env", {"containers": [{"name": "app", "image": "a:1", "env": [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": GENERATED, "key": "k"}}}]}]}),
    ("envFrom", {"containers": [{"name": "app", "image": "a:1", "envFrom": [{"secretRef": {"name": GENERATED}}]}]}),
    ("secret-items", {"volumes": [{"name": "s", "secret": {"secretName": GENERATED, "items": [
        {"key": "k", "path": "k"}]}}]}),
    ("projected", {"volumes": [{"name": "s", "projected": {"sources": [
        {"serviceAccountToken": {"path": "t"}}, {"secret": {"name": GENERATED}}]}}]}),
    ("init-env", {"initContainers": [{"name": "i", "image": "a:1", "envFrom": [{"secretRef": {"name": GENERATED}}]}]}),
    ("csi", {"volumes": [{"name": "s", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": True,
        "volumeAttributes": {"secretProviderClass": GENERATED}}}]}),
    ("label-odd-value", {"containers": [{"name": "app", "image": "a:1", "env": [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "billing-config", "key": "c"}}}]}]}),
]  # fmt: skip


@pytest.mark.parametrize("spec", [r[1] for r in READS], ids=[r[0] for r in READS])
def test_kvinjects_names_are_enforced_under_audit(
    control_plane: ControlPlane,
    team: str,  # noqa: F811
    audit_first: KvinjectServer,
    spec: dict[str, Any],
) -> None:
    """Reading a kvinject-* Secret or class (or carrying the opt-in label, any value) makes the pod kvinject's:
    judged by validate.kvinject.io, enforced, whatever KVINJECT_NOT_OPTED_IN_ENFORCEMENT says."""
    doc = pod(team, **spec)
    if "label-odd-value" in json.dumps(spec) or "billing-config" in json.dumps(spec):
        doc["metadata"]["labels"] = {K + "inject": "no"}
    result = alice_creates(control_plane, doc)
    assert result.returncode != 0, result.stdout[:300]
    assert 'admission webhook "validate.kvinject.io" denied the request' in result.stderr, result.stderr


def test_an_ephemeral_container_mounting_kvinjects_token_volume(control_plane: ControlPlane, team: str) -> None:  # noqa: F811
    """Init mode gives the Azure token volume to kvinject-fetch only; an ephemeral container may mount it and is not
    judged at all (neither kvinject's volume nor a CSI volume nor a Secret)."""
    cp = control_plane
    stored = _injected_pod(cp, team)
    assert any(v["name"] == "kvinject-azure-token" for v in stored["spec"]["volumes"]), stored["spec"]["volumes"]
    name = stored["metadata"]["name"]
    dbg = {"name": "dbg", "image": "busybox:1", "volumeMounts": [{"name": "kvinject-azure-token", "mountPath": "/t"}]}
    result = _debug(cp, team, name, dbg)
    print("can-i token:", as_user(cp, ALICE, "auth", "can-i", "create", "serviceaccounts/token", "-n", team).stdout)
    print(
        "can-i impersonate:", as_user(cp, ALICE, "auth", "can-i", "impersonate", "serviceaccounts", "-n", team).stdout
    )
    assert result.returncode != 0, (
        "admitted: ephemeral container mounts kvinject-azure-token (the pod's federated token)"
    )


def test_an_ephemeral_reader_of_a_kvinject_secret_is_enforced_under_audit(
    control_plane: ControlPlane,
    team: str,  # noqa: F811
    audit_first: KvinjectServer,
) -> None:
    """A plain pod (not kvinject's) gets a `kubectl debug` container reading a kvinject-* Secret: the pod becomes
    kvinject's (validate.kvinject.io), enforced."""
    cp = control_plane
    name = admitted(alice_creates(cp, pod(team)))["metadata"]["name"]
    result = _debug(
        cp, team, name, {"name": "dbg", "image": "busybox:1", "envFrom": [{"secretRef": {"name": GENERATED}}]}
    )
    assert 'admission webhook "validate.kvinject.io" denied the request' in result.stderr, result.stderr


def test_a_hand_written_class_syncing_into_a_kvinject_secret_name(control_plane: ControlPlane, team: str) -> None:  # noqa: F811
    """A class of alice's own (not kvinject-*) that syncs into the name of a generated class's Secret."""
    cp = control_plane
    squat = provider_class(
        team,
        "mine",
        CLIENT_ID,
        "team-kv",
        secretObjects=[{"secretName": GENERATED, "type": "Opaque", "data": [{"objectName": "config", "key": "c"}]}],
    )
    result = as_user(cp, ALICE, "apply", doc=squat)
    assert result.returncode != 0, "admitted: a hand-written class syncs into the kvinject-* Secret name " + GENERATED


def test_an_opted_in_pods_provider_class_pointed_at_another_vault_under_audit(
    control_plane: ControlPlane,
    team: str,  # noqa: F811
    audit_first: KvinjectServer,
) -> None:
    """Same identity, nothing wrong with the class itself: only another vault, which the pod's ServiceAccount may not
    read (SecretAccessPolicy). The class is judged for the kvinject pods that read through it, as at their admission."""
    cp = control_plane
    admitted(as_user(cp, ALICE, "apply", "-o", "json", doc=provider_class(team, "team-spc", CLIENT_ID, "team-kv")))
    opted = pod(team)
    opted["metadata"]["labels"] = {K + "inject": "true"}
    opted["metadata"]["annotations"] = {K + "provider-class": "team-spc"}
    name = admitted(alice_creates(cp, opted))["metadata"]["name"]
    result = as_user(cp, ALICE, "apply", doc=provider_class(team, "team-spc", CLIENT_ID, "billing-kv"))
    assert result.returncode != 0, "admitted: the class of a running kvinject pod now reads billing-kv"
    said = f"SecretProviderClass team-spc is mounted by pod {name} (ServiceAccount {team}/api)"
    assert said in result.stderr, result.stderr
    assert "billing-kv" in result.stderr
    now = get_json(cp, "secretproviderclass", "team-spc", "-n", team)["spec"]["parameters"]
    assert now["keyvaultName"] == "team-kv"


def test_a_class_no_kvinject_pod_reads_stays_audited(
    control_plane: ControlPlane,
    team: str,  # noqa: F811
    audit_first: KvinjectServer,
) -> None:
    """Audit-first still admits what is not kvinject's: a hand-written class mounted only by a pod that did not opt
    in may be changed (recorded as a would-deny), so installing kvinject stops nothing that ran before it."""
    cp = control_plane
    admitted(as_user(cp, ALICE, "apply", "-o", "json", doc=provider_class(team, "plain-spc", CLIENT_ID, "team-kv")))
    admitted(alice_creates(cp, pod(team, volumes=[csi("plain-spc")])))
    changed = provider_class(team, "plain-spc", CLIENT_ID, "team-kv", parameters={"useVMManagedIdentity": "true"})
    admitted(as_user(cp, ALICE, "apply", "-o", "json", doc=changed))


def test_what_stays_editable_on_an_injected_pod(control_plane: ControlPlane, team: str) -> None:  # noqa: F811
    """Only kvinject's record is fixed: other annotations and labels, and a debug container that takes nothing of
    kvinject's, are still admitted."""
    cp = control_plane
    name = _injected_pod(cp, team)["metadata"]["name"]
    edited = as_user(cp, ALICE, "annotate", "pod", name, "-n", team, "team.example/owner=alice")
    assert edited.returncode == 0, edited.stderr
    relabelled = as_user(cp, ALICE, "label", "pod", name, "-n", team, "tier=web")
    assert relabelled.returncode == 0, relabelled.stderr
    debugged = _debug(cp, team, name, {"name": "dbg", "image": "busybox:1"})
    assert debugged.returncode == 0, debugged.stderr
    after = json.loads(cp.kubectl("get", "pod", name, "-n", team, "-o", "json").stdout)
    assert after["metadata"]["annotations"]["team.example/owner"] == "alice"
    assert after["metadata"]["labels"]["tier"] == "web"
    assert [c["name"] for c in after["spec"]["ephemeralContainers"]] == ["dbg"]


def test_the_opt_in_label_is_fixed_on_an_injected_pod(control_plane: ControlPlane, team: str) -> None:  # noqa: F811
    """The label keeps an injected pod among those whose classes are judged as kvinject's."""
    cp = control_plane
    name = _injected_pod(cp, team)["metadata"]["name"]
    result = as_user(cp, ALICE, "label", "pod", name, "-n", team, f"{K}inject-")
    assert result.returncode != 0 and f"label {K}inject removed" in result.stderr, result.stderr


def test_a_pod_kvinject_did_not_inject_stays_editable(control_plane: ControlPlane, team: str) -> None:  # noqa: F811
    """A pod carrying the opt-in label with another value, and no annotations at all: its label and kvinject.io/
    annotations change freely (kvinject recorded nothing on it), through the webhook's matchConditions unharmed."""
    cp = control_plane
    doc = pod(team)
    doc["metadata"]["labels"] = {K + "inject": "false"}
    name = admitted(alice_creates(cp, doc))["metadata"]["name"]
    for change in (["label", "pod", name, "tier=web"], ["annotate", "pod", name, f"{K}containers=app"]):
        result = as_user(cp, ALICE, *change, "-n", team)
        assert result.returncode == 0, result.stderr
    relabelled = as_user(cp, ALICE, "label", "pod", name, "-n", team, "--overwrite", f"{K}inject=maybe")
    assert relabelled.returncode == 0, relabelled.stderr


def test_a_container_mounting_kvinjects_token_volume_at_creation(control_plane: ControlPlane, team: str) -> None:  # noqa: F811
    """The creation-time twin of the ephemeral case: the author mounts kvinject-azure-token (which kvinject is about to
    add) in a container of an init-mode pod; only kvinject-fetch reads the token."""
    cp = control_plane
    opted = pod(team)
    opted["metadata"]["labels"] = {K + "inject": "true"}
    opted["metadata"]["annotations"] = {K + "mode": "init", K + "secret-config": "team-kv/config"}
    opted["spec"]["containers"][0]["volumeMounts"] = [{"name": "kvinject-azure-token", "mountPath": "/t"}]
    result = alice_creates(cp, opted)
    assert result.returncode != 0, "admitted: container 'app' mounts the pod's Azure token volume"
    assert "container 'app' mounts kvinject's token volume kvinject-azure-token" in result.stderr, result.stderr
