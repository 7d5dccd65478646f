"""Store vault, init mode, on the real node: a pod annotated `kvinject.io/store: vault` is admitted by kvinject, and
its kvinject-fetch init container (the fetch image built from our Dockerfile) logs in to the real Vault with the
pod's projected ServiceAccount token and writes the files the app then reads.

The Vault is the harness's (tests/harness/vault.py), listening on the node's address so that pods reach it through
the node's bridge, with Kubernetes auth doing real TokenReviews on the session's control plane; kvinject-fetch
trusts it through the CA ConfigMap kvinject's init container mounts (KVINJECT_HASHICORP_VAULT_CA_CONFIGMAP)."""

from __future__ import annotations

import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness import (
    ControlPlane,
    KvinjectServer,
    VaultMissing,
    apply_docs,
    point_webhooks_at,
    require_vault,
    serve_as_shipped,
    unavailable,
    wait_for,
)
from tests.harness.vault import KV_MOUNT, VaultRole, VaultServer, access_policy, read_policy
from tests.node.workloads import FS_GROUP, deployment, describe, pods, read, running_pod, secret
from webhook.names import OUTPUT_DIR, PREFIX

pytestmark = pytest.mark.e2e

CA_CONFIGMAP = "kvinject-vault-ca"


@pytest.fixture(scope="module")
def node_vault(
    control_plane: ControlPlane, node: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VaultServer]:
    """A real Vault on the node's address (pods reach it), KV v2 at secret/, Kubernetes auth on the control plane."""
    try:
        binary = require_vault()
    except VaultMissing as exc:
        unavailable(str(exc))
    with VaultServer(tmp_path_factory.mktemp("node-vault"), binary=binary, host=node.address) as server:
        sys.stderr.write(f"\n[node] Vault at {server.url}; log {server.log_path}\n")
        server.enable_kv()
        server.enable_kubernetes_auth(control_plane)
        yield server
        server.check_alive()


@pytest.fixture(scope="module")
def vault_kvinject(
    control_plane: ControlPlane,
    kvinject: KvinjectServer,
    node_vault: VaultServer,
    node: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KvinjectServer]:
    """kvinject serving with Vault settings (the init image: the kvinject-fetch image on the node), registered in place
    of the session's kvinject for the module, which gets it back afterwards."""
    env = {
        "KVINJECT_INIT_IMAGE": node.images["fetch"],
        "KVINJECT_HASHICORP_VAULT_ADDRESS": node_vault.url,
        "KVINJECT_HASHICORP_VAULT_CA_CONFIGMAP": CA_CONFIGMAP,
        "KVINJECT_LOG_LEVEL": "DEBUG",
    }
    server = serve_as_shipped(control_plane, tmp_path_factory.mktemp("kvinject-vault"), env)
    point_webhooks_at(control_plane, server)
    try:
        yield server
    finally:
        point_webhooks_at(control_plane, kvinject)
        server.stop()
        assert "Traceback" not in server.logs()


@dataclass(frozen=True)
class Team:
    namespace: str
    role: str
    password: str  # seeded; compared, never printed

    def ref(self, path: str, key: str) -> str:
        return f"{KV_MOUNT}/{self.namespace}/{path}#{key}"


@pytest.fixture(scope="module")
def team(control_plane: ControlPlane, node_vault: VaultServer) -> Iterator[Team]:
    """A namespace whose ServiceAccount `api` carries role `app-<ns>`: Vault's ACL reads secret/<ns>/db only, while
    kvinject's policy allows secret/<ns>/* (so a pod asking for secret/<ns>/admin is admitted and Vault refuses)."""
    cp, vault = control_plane, node_vault
    ns = f"vault-node-{uuid.uuid4().hex[:6]}"
    role = f"app-{ns}"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl("create", "serviceaccount", "api", "-n", ns)
    cp.kubectl("annotate", "serviceaccount", "api", "-n", ns, f"vault.kvinject.io/role={role}")
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CA_CONFIGMAP, "namespace": ns},
        "data": {"ca.crt": vault.ca_file.read_text()},
    }
    apply_docs(cp, [configmap, access_policy(f"vault-{ns}", role, [(ns, "api")], {f"{KV_MOUNT}/{ns}/*": ["*"]})])
    password = f"from-vault-{secrets.token_urlsafe(12)}"
    vault.put_secret(f"{ns}/db", {"password": password, "username": "app"})
    vault.put_secret(f"{ns}/admin", {"password": secrets.token_urlsafe(12)})
    vault.write_policy(role, read_policy(KV_MOUNT, f"{ns}/db"))
    vault.write_role(VaultRole(role, ["api"], [ns], [role]))
    yield Team(ns, role, password)
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_an_init_mode_pod_of_store_vault_gets_its_files_from_vault(
    control_plane: ControlPlane, team: Team, vault_kvinject: KvinjectServer, node: Any
) -> None:
    cp, ns = control_plane, team.namespace
    annotations = {
        PREFIX + "store": "vault",
        PREFIX + "mode": "init",
        secret("db-password"): team.ref("db", "password"),
        secret("db-user"): team.ref("db", "username"),
    }
    apply_docs(cp, [deployment(ns, "init", annotations, image=node.images["busybox"], host_aliases=[])])
    pod = running_pod(cp, ns, "init")

    # The app (uid 1000, fsGroup 2000) reads what kvinject-fetch (uid 65532) wrote from Vault.
    assert secrets.compare_digest(read(cp, ns, pod, "cat", "/mnt/secrets/db-password"), team.password)
    assert read(cp, ns, pod, "cat", "/mnt/secrets/db-user") == "app"
    owner = read(cp, ns, pod, "stat", "-c", "%a %g", "/mnt/secrets/db-password").split()
    assert owner == ["440", str(FS_GROUP)]
    (created,) = pods(cp, ns, "init")
    (fetch,) = created["spec"]["initContainers"]
    assert fetch["image"] == node.images["fetch"]
    env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert env["KVINJECT_STORE"] == "vault" and env["KVINJECT_HASHICORP_VAULT_ROLE"] == team.role
    (done,) = created["status"]["initContainerStatuses"]
    assert done["state"]["terminated"]["exitCode"] == 0
    logs = cp.kubectl("logs", "-n", ns, pod, "-c", "kvinject-fetch").stdout
    assert f"db-password ({team.ref('db', 'password')}): written to {OUTPUT_DIR}/db-password" in logs
    assert team.password not in logs


def test_a_path_vault_refuses_fails_the_init_container_with_the_reason(
    control_plane: ControlPlane, team: Team, vault_kvinject: KvinjectServer, node: Any
) -> None:
    """kvinject's policy allows secret/<ns>/admin, Vault's ACL does not: admitted, then kvinject-fetch fails and
    `kubectl describe pod` shows why."""
    cp, ns = control_plane, team.namespace
    annotations = {PREFIX + "store": "vault", PREFIX + "mode": "init", secret("admin"): team.ref("admin", "password")}
    apply_docs(cp, [deployment(ns, "admin", annotations, image=node.images["busybox"], host_aliases=[])])

    def failed() -> str | None:
        for candidate in pods(cp, ns, "admin"):
            for status in candidate.get("status", {}).get("initContainerStatuses") or []:
                terminated = (status.get("lastState") or {}).get("terminated") or status["state"].get("terminated")
                if terminated and terminated.get("exitCode") == 1:
                    return str(candidate["metadata"]["name"])
        return None

    name = wait_for(failed, "kvinject-fetch to fail", context=lambda: describe(cp, ns, "admin"))
    shown = cp.kubectl("describe", "pod", name, "-n", ns).stdout
    secret_path = f"{KV_MOUNT}/{ns}/admin"
    assert f"admin ({team.ref('admin', 'password')}): role {team.role} may not read {secret_path}" in shown
