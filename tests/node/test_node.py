"""The real node itself (tests/harness/node.py): pods run from the local images, logs and exec go through the
kubelet, the Secrets Store CSI driver is registered and reaches the Azure provider, names resolve through the
node's hosts file, and stopping a node, even a broken one, or reaping a crashed one, leaves nothing behind.

Pods with Secrets Store CSI volumes go to kube-system, which kvinject's webhooks leave alone (they judge every
such volume elsewhere, and these volumes are the node's, not kvinject's)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import HANG_GUARD, NODE_ADDRESS, ControlPlane, Node, NodeArtifacts, create, reap_dead_runs
from tests.harness.node import DRIVER_NAME, TOKEN_AUDIENCE, network_interfaces, read_sysctls, run_processes

CSI_NAMESPACE = "kube-system"  # outside kvinject's webhooks (see the module docstring)
TEARDOWN_TAINT = {"key": "kvinject.io/node-test", "value": "teardown", "effect": "NoSchedule"}


def pod_manifest(name: str, namespace: str, image: str, **spec: Any) -> dict[str, Any]:
    """A pod of one container `main` running a local image (imagePullPolicy Never), quick to stop."""
    container = {"name": "main", "image": image, "imagePullPolicy": "Never", **spec.pop("container", {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [container],
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            **spec,
        },
    }


def csi_volume(**attributes: str) -> dict[str, Any]:
    return {"name": "secrets", "csi": {"driver": DRIVER_NAME, "readOnly": True, "volumeAttributes": attributes}}


def get_pod(node: Node, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = node.cp.api_get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return pod


def wait_phase(node: Node, namespace: str, name: str, phase: str) -> dict[str, Any]:
    """The pod once in `phase` (a pod that ends in another final phase fails the wait at once)."""

    def reached() -> dict[str, Any] | None:
        pod = get_pod(node, namespace, name)
        current = pod["status"].get("phase")
        if current != phase and current in ("Succeeded", "Failed"):
            raise AssertionError(f"pod {namespace}/{name} ended {current}: {pod['status']}")
        return pod if current == phase else None

    pod: dict[str, Any] = node.wait_until(reached, f"pod {namespace}/{name} {phase}")
    return pod


def accept_line(server: socket.socket) -> bytes:
    """Accept one connection on `server` and return what it sent (one short line), then close it."""
    conn, _ = server.accept()
    with conn:
        return conn.recv(100)


@pytest.fixture
def node_namespace(node: Node) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    node.kubectl("create", "namespace", name)
    yield name
    node.kubectl("delete", "namespace", name, "--wait=false")


def test_node_runs_pods(node: Node, node_namespace: str) -> None:
    status = node.cp.api_get(f"/api/v1/nodes/{node.name}")["status"]
    assert {"type": "InternalIP", "address": NODE_ADDRESS} in status["addresses"]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])

    # busybox, scheduled by kube-scheduler, its log and an exec read back through the kubelet
    name = "busybox"
    aliases = [{"ip": NODE_ADDRESS, "hostnames": ["login.kvinject.test"]}]
    create(
        node.cp,
        pod_manifest(
            name,
            node_namespace,
            node.images["busybox"],
            container={"command": ["sh", "-c", "echo hello from $(hostname); exec sleep 3600"]},
            hostAliases=aliases,
        ),
    )
    pod = wait_phase(node, node_namespace, name, "Running")
    assert pod["spec"]["nodeName"] == node.name
    assert pod["status"]["hostIP"] == NODE_ADDRESS
    node.wait_until(lambda: f"hello from {name}" in node.logs(node_namespace, name), "the busybox log line")
    assert node.exec(node_namespace, name, "cat", "/etc/hostname").stdout.strip() == name
    # pods reach servers on the node's address, by a hostAliases name (as the init container reaches the doubles)
    with socket.create_server((NODE_ADDRESS, 0)) as server:
        server.settimeout(HANG_GUARD)
        received: list[bytes] = []
        accepting = threading.Thread(target=lambda: received.append(accept_line(server)))
        accepting.start()
        node.exec(node_namespace, name, "sh", "-c", f"echo from-pod | nc login.kvinject.test {server.getsockname()[1]}")
        accepting.join()
    assert received == [b"from-pod\n"]

    # both images built from our Dockerfile, under the restricted Pod Security profile (read-only root, non-root)
    restricted = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for image, args, printed in (
        ("kvinject", ["--help"], "usage: kvinject"),
        ("fetch", ["fetch", "--help"], "KVINJECT_OBJECTS"),
    ):
        name = f"{image}-help"
        create(
            node.cp,
            pod_manifest(
                name,
                node_namespace,
                node.images[image],
                container={"args": args, "securityContext": restricted},
                restartPolicy="Never",
                securityContext={
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "runAsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            ),
        )
        pod = wait_phase(node, node_namespace, name, "Succeeded")
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        assert printed in node.logs(node_namespace, name)


def test_provider_takes_new_environment(node: Node) -> None:
    """What tests pass to the provider after the node started (a CA bundle of their doubles) reaches it; the driver
    then talks to the restarted provider (test_csi_driver_registered runs after this)."""
    before = node.provider_env
    node.set_provider_env({**before, "KVINJECT_NODE_TEST": "marker"})
    try:
        assert node.provider is not None
        environ = Path(f"/proc/{node.provider.pid}/environ").read_bytes().split(b"\0")
        assert b"KVINJECT_NODE_TEST=marker" in environ
        with urllib.request.urlopen(node.provider_healthz, timeout=10) as resp:
            assert resp.read().decode().strip() == "ok"
    finally:
        node.set_provider_env(before)


def test_csi_driver_registered(node: Node) -> None:
    csinode = node.cp.api_get(f"/apis/storage.k8s.io/v1/csinodes/{node.name}")
    assert [(d["name"], d["nodeID"]) for d in csinode["spec"]["drivers"]] == [(DRIVER_NAME, node.name)]
    driver = node.cp.api_get(f"/apis/storage.k8s.io/v1/csidrivers/{DRIVER_NAME}")["spec"]
    assert driver["podInfoOnMount"] is True and driver["attachRequired"] is False
    assert driver["volumeLifecycleModes"] == ["Ephemeral"] and driver["requiresRepublish"] is True
    assert driver["tokenRequests"] == [{"audience": TOKEN_AUDIENCE}]
    with urllib.request.urlopen(node.provider_healthz, timeout=10) as resp:
        assert resp.read().decode().strip() == "ok"

    # kubelet -> driver -> provider, without any Key Vault: the provider refuses the class, in its own words
    suffix = uuid.uuid4().hex[:6]
    spc = f"no-vault-{suffix}"
    pod = f"no-vault-{suffix}"
    create(
        node.cp,
        {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": spc, "namespace": CSI_NAMESPACE},
            "spec": {"provider": "azure", "parameters": {"tenantId": "t", "objects": "array: []"}},
        },
    )
    try:
        create(
            node.cp,
            pod_manifest(
                pod,
                CSI_NAMESPACE,
                node.images["busybox"],
                container={"command": ["sleep", "3600"], "volumeMounts": [{"name": "secrets", "mountPath": "/mnt"}]},
                volumes=[csi_volume(secretProviderClass=spc)],
            ),
        )
        events = node.wait_until(
            lambda: [e for e in node.events(CSI_NAMESPACE, pod) if "keyvaultName is not set" in e],
            "the provider's error in the pod's events",
        )
        assert events[0].startswith("FailedMount: "), events
        status = get_pod(node, CSI_NAMESPACE, pod)["status"]
        assert status["phase"] == "Pending"
        assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
        assert "keyvaultName is not set" in node.provider.logs()  # type: ignore[union-attr]
    finally:
        node.kubectl("delete", "pod", "-n", CSI_NAMESPACE, pod, "--ignore-not-found", "--wait=false")
        node.kubectl("delete", "secretproviderclass", "-n", CSI_NAMESPACE, spc, "--ignore-not-found")


def test_hosts_entries_resolve_in_the_node(node: Node) -> None:
    before = Path("/etc/hosts").read_text()
    node.set_hosts({"login.kvinject.test": NODE_ADDRESS, "kv-e2e.vault.kvinject.test": NODE_ADDRESS})
    try:
        for host in ("login.kvinject.test", "kv-e2e.vault.kvinject.test"):
            out = subprocess.run([*node.enter, "getent", "hosts", host], capture_output=True, text=True, check=True)
            assert out.stdout.split()[0] == NODE_ADDRESS, out.stdout
        assert Path("/etc/hosts").read_text() == before  # only the node's mount namespace sees them
    finally:
        node.set_hosts({})
    gone = subprocess.run([*node.enter, "getent", "hosts", "login.kvinject.test"], capture_output=True, check=False)
    assert gone.returncode != 0


def run_csi_pod(node: Node) -> str:
    """A busybox pod bound to `node` (no scheduler there) with a Secrets Store CSI volume of the driver's own mock
    provider (the driver mounts a tmpfs, no provider call), Running; returns its name."""
    name = f"csi-{uuid.uuid4().hex[:6]}"
    create(
        node.cp,
        pod_manifest(
            name,
            CSI_NAMESPACE,
            node.images["busybox"],
            container={"command": ["sleep", "3600"], "volumeMounts": [{"name": "secrets", "mountPath": "/mnt"}]},
            volumes=[csi_volume(providerName="mock_provider")],
            nodeName=node.name,
            tolerations=[{**TEARDOWN_TAINT, "operator": "Equal"}],
        ),
    )
    wait_phase(node, CSI_NAMESPACE, name, "Running")
    targets = [m for m in node.mounts() if m.startswith(f"{node.kubelet_dir}/pods/") and m.endswith("/mount")]
    assert targets, node.mounts()  # the CSI volume is mounted: stopping must undo it
    return name


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie: a zombie has no command line)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


NODE_PROGRAMS = (
    "containerd",
    "containerd-shim-runc-v2",
    "kubelet",
    "kube-scheduler",
    "secrets-store-csi-driver",
    "secrets-store-csi-driver-provider-azure",
    "registrar",
    "pause",
)


def programs() -> dict[str, int]:
    """How many processes of each node program run in this PID namespace, by name (the session's node counts too)."""
    counts = dict.fromkeys(NODE_PROGRAMS, 0)
    for entry in Path("/proc").iterdir():
        try:
            name = Path((entry / "cmdline").read_bytes().split(b"\0")[0].decode()).name
        except (OSError, IndexError):
            continue
        if name in counts:
            counts[name] += 1
    return counts


def small_node(cp: ControlPlane, artifacts: NodeArtifacts, workdir: Path, name: str) -> Node:
    """A second node beside the session's: no scheduler, a NoSchedule taint, only the small images."""
    return Node(cp, workdir, artifacts, name=name, images=("pause", "busybox"), schedule=False, taints=[TEARDOWN_TAINT])


@pytest.mark.parametrize("failure", ["none", "kubelet killed"])
def test_teardown_leaves_nothing(
    node_artifacts: NodeArtifacts, control_plane: ControlPlane, tmp_path: Path, failure: str
) -> None:
    sysctls, before = read_sysctls(), programs()
    node = small_node(control_plane, node_artifacts, tmp_path, "kvinject-teardown")
    try:
        node.start()
        pod = run_csi_pod(node)
        running = run_processes(node.run_dir, node.run_id, node.mount_namespace)
        assert any("containerd-shim" in cmd for cmd in running.values()), running
        assert any(cmd == "sleep 3600" for cmd in running.values()), running
        assert node.bridge in network_interfaces()
        # this node's own (machine-wide counts race with the session node's pods going away meanwhile)
        assert {"kubelet", "containerd-shim-runc-v2", "pause"} <= {Path(c.split()[0]).name for c in running.values()}
        if failure == "kubelet killed":
            assert node.kubelet is not None
            os.kill(node.kubelet.pid, signal.SIGKILL)
            node.kubelet.proc.wait()  # type: ignore[union-attr]
    finally:
        node.stop()
    assert node.leftovers() == []
    after = programs()  # by name: none more than before (the session's node may have lost a pod meanwhile)
    assert all(after[name] <= before[name] for name in NODE_PROGRAMS), (before, after)
    assert read_sysctls() == sysctls
    assert not [pid for pid in running if alive(pid)], running
    assert node.mounts() == []
    assert control_plane.kubectl("get", "pod", "-n", CSI_NAMESPACE, pod, check=False).returncode != 0
    assert control_plane.kubectl("get", "node", node.name, check=False).returncode != 0


def test_setup_reaps_a_crashed_run(node_artifacts: NodeArtifacts, control_plane: ControlPlane, tmp_path: Path) -> None:
    node = small_node(control_plane, node_artifacts, tmp_path, "kvinject-crashed")
    pod = ""
    try:
        node.start()
        pod = run_csi_pod(node)
        node.crash()  # the harness dies: nothing undone, shims and containers live on
        left = node.leftovers()
        assert any("containerd-shim" in item for item in left), left
        assert any(item.startswith("cgroup ") for item in left), left
        assert f"directory {node.run_dir}" in left, left

        reaped = reap_dead_runs()  # what every Node.start() does first
        assert any(item.startswith(f"{node.run_id}: process") for item in reaped), reaped
        assert node.leftovers() == []
    finally:
        if node.running:
            node.stop()
        if pod:
            control_plane.kubectl(
                "delete", "pod", "-n", CSI_NAMESPACE, pod, "--force", "--grace-period=0", "--ignore-not-found"
            )
        control_plane.kubectl("delete", "node", node.name, "--ignore-not-found", check=False)
