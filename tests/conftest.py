"""Fixtures shared by the tiers: a session-wide real control plane with kvinject installed as shipped, a real node
joined to it, and the Azure doubles. Whatever they run comes from tests/harness.

Tests that use them are marked ``e2e`` (deselect with ``-m "not e2e"``): every test under tests/e2e and tests/node
by the hook below, the others by their module. The binaries come from tests/e2e/build_binaries.sh; when they are
missing the tests are skipped locally and fail under CI (``CI=true``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    CLIENT_ID,
    E2E_VAULTS,
    TENANT_ID,
    VAULT,
    Binaries,
    BinariesMissing,
    ControlPlane,
    KvinjectServer,
    Node,
    NodeArtifacts,
    NodeUnavailable,
    access_policy,
    apply_docs,
    install,
    point_webhooks_at,
    require_isolation,
    serve_as_shipped,
    unavailable,
)
from tests.harness import hygiene as hygiene_scan
from tests.harness.doubles import KEY_VAULT_RESOURCE, FakeEntra, FakeKeyVault, TokenIssuer
from tests.harness.node import describe

# The bypass tests prove that hand-written pods and classes are denied: judge what is not kvinject's with enforce
# (the shipped default is audit, docs/rollout.md) unless a test sets it; the servers started by the harness
# say the same (tests/harness/serve.py). Set before any Settings() is made.
os.environ.setdefault("KVINJECT_NOT_OPTED_IN_ENFORCEMENT", "enforce")

E2E_DIRS = tuple(Path(__file__).resolve().parent / d for d in ("e2e", "node"))


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(d in Path(str(item.fspath)).resolve().parents for d in E2E_DIRS):
            item.add_marker(pytest.mark.e2e)


# Namespaces whose kvinject.io/enforcement label may loosen enforcement on the session's kvinject.
RELAXABLE_NAMESPACES = ["e2e-relaxable-warn", "e2e-relaxable-audit"]
EVENTS: list[str] = []  # the cluster's events, collected before the control plane stops


@pytest.fixture(scope="session")
def e2e_binaries(hygiene: list[str]) -> Binaries:
    """The cached binaries; with them the hygiene scan starts (first, so that it ends last, after every process)."""
    binaries = Binaries.locate()
    try:
        binaries.require(*Binaries.CONTROL_PLANE, "spc_crd")
    except BinariesMissing as exc:
        unavailable(str(exc))
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


@pytest.fixture(scope="session")
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
    install(control_plane)
    env = {"KVINJECT_TENANT_ID": TENANT_ID, "KVINJECT_RELAXABLE_NAMESPACES": json.dumps(RELAXABLE_NAMESPACES)}
    server = serve_as_shipped(control_plane, tmp_path_factory.mktemp("kvinject"), env)
    configs = point_webhooks_at(control_plane, server)
    yield server
    for config in configs:
        control_plane.kubectl("delete", config["kind"].lower(), config["metadata"]["name"], check=False)
    server.stop()
    assert "Traceback" not in server.logs()


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


# --------------------------------------------------------------------------------------
# A real node (tests/harness/node.py)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_artifacts() -> NodeArtifacts:
    """The node's binaries, manifests and images from tests/node/build.sh and images.sh (`make node-binaries
    node-images`), with root and tests/isolated.sh's namespaces: skipped locally without them, failed under CI."""
    try:
        require_isolation()
        return NodeArtifacts.locate()
    except NodeUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def node(
    node_artifacts: NodeArtifacts, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """A Ready node `kvinject-node` at 192.0.2.10 on the session's control plane, for the whole session (it starts in
    seconds; the images are imported once): containerd with the pause, busybox, kvinject and kvinject-fetch images,
    the kubelet, kube-scheduler, the Secrets Store CSI driver (rotation on, every 5s) and the Azure provider. Tests
    add hosts entries (`node.set_hosts`) and the provider's environment (`node.set_provider_env`) as they need them.
    Its teardown must leave nothing behind."""
    with Node(control_plane, tmp_path_factory.mktemp("node"), node_artifacts, rotation_interval="5s") as started:
        sys.stderr.write(f"\n[e2e] {describe(started)}\n")
        yield started
        started.check_alive()
    assert not started.leftovers(), started.leftovers()


# --------------------------------------------------------------------------------------
# The Azure doubles
# --------------------------------------------------------------------------------------


@pytest.fixture
def entra(tmp_path: Path) -> Iterator[FakeEntra]:
    """A started fake Entra token endpoint with no federated credentials yet."""
    with FakeEntra(tmp_path / "entra") as endpoint:
        yield endpoint
        assert not endpoint.errors, "\n".join(endpoint.errors)
    log = endpoint.log_path.read_text()
    assert "Traceback" not in log, log


@pytest.fixture
def key_vault(tmp_path: Path, entra: FakeEntra) -> Iterator[FakeKeyVault]:
    """A started fake Key Vault with one vault ``kv-e2e`` in TENANT_ID that accepts only tokens ``entra`` issued
    for Key Vault, to clients granted by its access policy (``key_vault.grant``)."""
    kv = FakeKeyVault(
        tmp_path / "keyvault",
        [VAULT],
        tenant_id=TENANT_ID,
        identity_of=functools.partial(entra.identity_of, resource=KEY_VAULT_RESOURCE),
    )
    with kv:
        sys.stderr.write(f"\n[e2e] fake Key Vault {VAULT} at {kv.vault_url(VAULT)} ({kv.start_seconds:.3f}s)\n")
        yield kv
        assert not kv.errors, "\n".join(kv.errors)


@pytest.fixture
def sa_issuer() -> TokenIssuer:
    """A service-account token issuer without Kubernetes (RSA key, JWKS as a dict)."""
    return TokenIssuer()
