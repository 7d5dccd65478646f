"""pytest wiring for the e2e tier: a session-wide real control plane.

Every test under tests/e2e is marked ``e2e`` (deselect with ``-m "not e2e"``).
The binaries come from tests/e2e/build_binaries.sh; when they are missing the tests
are skipped locally and fail under CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e import hygiene as hygiene_scan
from tests.e2e.controlplane import Binaries, BinariesMissing, ControlPlane
from tests.e2e.webhook_harness import (
    MANIFESTS,
    KvinjectServer,
    access_policy,
    apply_docs,
    rendered_manifests,
    service_account_kubeconfig,
    wait_for_kvinject_webhooks,
    webhook_configurations,
)
from tests.helpers import CLIENT_ID, TENANT_ID

E2E_DIR = Path(__file__).resolve().parent
# Namespaces whose kvinject.io/enforcement label may loosen enforcement on the session's kvinject.
RELAXABLE_NAMESPACES = ["e2e-relaxable-warn", "e2e-relaxable-audit"]
EVENTS: list[str] = []  # the cluster's events, collected before the control plane stops


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def _missing_binaries(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def e2e_binaries() -> Binaries:
    binaries = Binaries.locate()
    try:
        binaries.require(*Binaries.CONTROL_PLANE, "spc_crd")
    except BinariesMissing as exc:
        _missing_binaries(str(exc))
    return binaries


@pytest.fixture(scope="session")
def control_plane(e2e_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A started etcd + kube-apiserver + kube-controller-manager, with the
    SecretProviderClass CRD applied and Established."""
    workdir = tmp_path_factory.mktemp("controlplane")
    cp = ControlPlane(workdir, binaries=e2e_binaries)
    t0 = time.monotonic()
    with cp:
        cp.apply_crd(e2e_binaries.spc_crd)
        elapsed = time.monotonic() - t0
        sys.stderr.write(
            f"\n[e2e] control plane ready in {elapsed:.1f}s "
            f"(processes {cp.start_seconds:.1f}s, CRD {elapsed - (cp.start_seconds or 0):.1f}s) "
            f"at {cp.url}; logs in {cp.log_dir}\n"
        )
        yield cp
        cp.check_alive()
        EVENTS.append(cp.kubectl("get", "events", "-A", "-o", "json").stdout)


@pytest.fixture(scope="session", autouse=True)
def hygiene() -> Iterator[list[str]]:
    """At the end of the session, scan every kvinject log, the outputs of kubectl (denials and warnings are
    kvinject's responses), kvinject's metrics and the cluster's events for secret values and tokens."""
    outputs: list[str] = []
    original = ControlPlane.kubectl

    def recording(self: ControlPlane, *args: str, **kwargs: object) -> object:
        result = original(self, *args, **kwargs)  # type: ignore[arg-type]
        if "token" not in args:  # `kubectl create token` prints a token by design
            outputs.append(f"{result.stdout}\n{result.stderr}")
        return result

    ControlPlane.kubectl = recording  # type: ignore[method-assign,assignment]
    yield outputs
    ControlPlane.kubectl = original  # type: ignore[method-assign]
    found: list[str] = []
    for server in KvinjectServer.instances:
        if server.log_path.exists():
            found += hygiene_scan.leaks(f"log of {server.workdir.name}", server.logs())
        if server.proc is not None and server.proc.poll() is None:
            found += hygiene_scan.leaks("metrics", server.get("/metrics").text)
    found += hygiene_scan.leaks("kubectl output (kvinject's responses)", "\n".join(outputs))
    found += hygiene_scan.leaks("events", "\n".join(EVENTS))
    assert not found, "\n".join(found)


@pytest.fixture(scope="session")
def kube_api_client(control_plane: ControlPlane) -> Iterator[object]:
    """An official-``kubernetes``-client ApiClient authenticated as the admin user."""
    from kubernetes import config as kube_config

    api_client = kube_config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture(scope="session")
def kvinject(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvinjectServer]:
    """kvinject serving as its shipped ServiceAccount and ClusterRole, registered with the shipped configuration."""
    workdir = tmp_path_factory.mktemp("kvinject")
    docs = rendered_manifests(control_plane)
    # The whole shipped base, for real: the API validates every object. Without a kubelet the
    # Deployment never runs; the local process below stands in for it.
    control_plane.kubectl("apply", "-k", str(MANIFESTS))
    control_plane.kubectl("wait", "--for=condition=Established", "crd/secretaccesspolicies.kvinject.io")
    kubeconfig = service_account_kubeconfig(control_plane, workdir / "kvinject.kubeconfig", "kvinject", "kvinject")
    env = {"KVINJECT_TENANT_ID": TENANT_ID, "KVINJECT_RELAXABLE_NAMESPACES": json.dumps(RELAXABLE_NAMESPACES)}
    server = KvinjectServer(workdir, kubeconfig, env=env).start()
    configs = webhook_configurations(docs, server.url, server.ca_bundle)
    control_plane.kubectl("replace", "-f", "-", input=yaml.safe_dump_all(configs))
    wait_for_kvinject_webhooks(control_plane, server)
    yield server
    for config in configs:
        control_plane.kubectl("delete", config["kind"].lower(), config["metadata"]["name"], check=False)
    server.stop()
    assert "Traceback" not in server.logs()


E2E_VAULTS = ["kv-e2e", "kv-locked", "shape-kv", "deny-kv", "x-kv", "late-kv", "down-kv", "dry-kv", "peer-kv"]


@pytest.fixture
def namespace(control_plane: ControlPlane, kvinject: KvinjectServer) -> Iterator[str]:
    """A fresh namespace with a federated ServiceAccount `api` (and `late`), granted every object of the
    e2e vaults by a SecretAccessPolicy, and an unfederated `default`."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "api", "namespace": name, "annotations": {"azure.workload.identity/client-id": CLIENT_ID}},
    }
    grant = access_policy(f"grant-{name}", [(name, "api"), (name, "late")], {v: ["*:*"] for v in E2E_VAULTS})
    apply_docs(control_plane, [sa, grant])
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
    control_plane.kubectl("delete", "secretaccesspolicy", f"grant-{name}", check=False)
