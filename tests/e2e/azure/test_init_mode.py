"""Init mode end to end: an annotated Deployment's stored pod, then its kvinject-fetch container's exact
environment run as `kvinject fetch` with a token the real apiserver minted for the pod's ServiceAccount."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    CLIENT_ID,
    ROOT,
    TENANT_ID,
    VAULT,
    ControlPlane,
    K,
    apply_docs,
    bundle,
    free_port,
    get_json,
    hygiene,
    wait_for,
)
from tests.harness.doubles.entra import FakeEntra, FederatedCredential
from tests.harness.doubles.keyvault import FakeKeyVault

SECRETS = {"db-password": "s3cr3t-db-value-4f1a", "api-token": "tok-9c2e-not-a-jwt"}
# Paths inside the pod, replaced by local ones: everything else comes from the stored pod as is.
LOCAL = ("KVINJECT_OUTPUT_DIR", "AZURE_FEDERATED_TOKEN_FILE")


@pytest.fixture
def stored_pod(control_plane: ControlPlane, namespace: str) -> dict[str, Any]:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "init-app", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "init-app"}},
            "template": {
                "metadata": {
                    "labels": {"app": "init-app", K + "inject": "true"},
                    "annotations": {
                        K + "mode": "init",
                        K + "vault": VAULT,
                        K + "secret-db-password": "db-password",
                        K + "secret-token": "api-token",
                    },
                },
                "spec": {
                    "serviceAccountName": "api",
                    "securityContext": {"fsGroup": os.getgid()},
                    "containers": [{"name": "app", "image": "a:1"}],
                },
            },
        },
    }
    apply_docs(control_plane, [deployment])
    pods = wait_for(
        lambda: get_json(control_plane, "pods", "-n", namespace, "-l", "app=init-app")["items"], "the ReplicaSet's pod"
    )
    pod: dict[str, Any] = pods[0]
    return pod


def fetch_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "kvinject-fetch"]
    return container


def test_stored_pod_has_the_init_container(stored_pod: dict[str, Any]) -> None:
    assert stored_pod["metadata"]["generateName"].startswith("init-app-")
    assert stored_pod["spec"]["initContainers"][0]["name"] == "kvinject-fetch"
    fetch = fetch_container(stored_pod)
    assert fetch["command"] == ["kvinject", "fetch"]
    assert fetch["securityContext"]["runAsNonRoot"] is True and fetch["securityContext"]["readOnlyRootFilesystem"]
    volumes = {v["name"]: v for v in stored_pod["spec"]["volumes"]}
    assert volumes["kvinject-secrets"]["emptyDir"]["medium"] == "Memory"
    token = volumes["kvinject-azure-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "api://AzureADTokenExchange"
    app = stored_pod["spec"]["containers"][0]
    assert {"name": "kvinject-secrets", "mountPath": "/mnt/secrets", "readOnly": True} in app["volumeMounts"]
    assert "env" not in app  # no Kubernetes Secret, no env vars in init mode


class Harness:
    def __init__(self, cp: ControlPlane, entra: FakeEntra, kv: FakeKeyVault, tmp: Path, namespace: str):
        self.cp, self.entra, self.kv, self.tmp, self.namespace = cp, entra, kv, tmp, namespace
        entra.trust_apiserver(cp)
        entra.add_federated_credential(
            FederatedCredential(TENANT_ID, CLIENT_ID, cp.issuer, f"system:serviceaccount:{namespace}:api")
        )
        self.bundle = bundle(tmp / "ca-bundle.pem", entra.ca_file, kv.ca_file)
        self.runs = 0

    def token(self, account: str) -> Path:
        path = self.tmp / f"token-{account}"
        path.write_text(
            self.cp.kubectl(
                "create", "token", account, "-n", self.namespace, "--audience", "api://AzureADTokenExchange"
            ).stdout.strip()
        )
        return path

    def run(
        self,
        pod: dict[str, Any],
        account: str = "api",
        vault_url: str | None = None,
        objects: list[dict[str, str]] | None = None,
    ) -> tuple[subprocess.CompletedProcess[str], Path, str]:
        self.runs += 1
        out = self.tmp / f"run-{self.runs}" / "secrets"
        out.mkdir(parents=True)
        stored = {e["name"]: e["value"] for e in fetch_container(pod)["env"]}
        assert stored["AZURE_AUTHORITY_HOST"] == "https://login.microsoftonline.com/"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "KVINJECT_"))},
            **stored,
            "KVINJECT_OUTPUT_DIR": str(out),
            "AZURE_FEDERATED_TOKEN_FILE": str(self.token(account)),
            # Where the public cloud would be: the test doubles, trusted through a CA bundle.
            "AZURE_AUTHORITY_HOST": self.entra.authority,
            "KVINJECT_VAULT_URLS": json.dumps({VAULT: vault_url or self.kv.vault_url(VAULT)}),
            "KVINJECT_TERMINATION_LOG": str(out.parent / "termination-log"),
            "REQUESTS_CA_BUNDLE": str(self.bundle),
            "KVINJECT_FETCH_TIMEOUT_SECONDS": "8",
        }
        if objects is not None:
            env["KVINJECT_OBJECTS"] = json.dumps(objects)
        done = subprocess.run(
            [sys.executable, "-m", "webhook", "fetch"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        log = out.parent / "termination-log"
        return done, out, log.read_text() if log.exists() else ""


@pytest.fixture
def harness(
    control_plane: ControlPlane, entra: FakeEntra, key_vault: FakeKeyVault, tmp_path: Path, namespace: str
) -> Harness:
    hygiene.remember(*SECRETS.values())
    key_vault.seed(VAULT, SECRETS)
    key_vault.grant(VAULT, CLIENT_ID, "get")
    return Harness(control_plane, entra, key_vault, tmp_path, namespace)


def test_fetch_with_the_stored_environment_writes_the_files(harness: Harness, stored_pod: dict[str, Any]) -> None:
    done, out, log = harness.run(stored_pod)
    assert done.returncode == 0, done.stderr + log
    assert sorted(p.name for p in out.iterdir()) == ["db-password", "token"]
    assert (out / "db-password").read_bytes() == SECRETS["db-password"].encode()
    assert (out / "token").read_bytes() == SECRETS["api-token"].encode()
    for f in out.iterdir():
        st = f.stat()
        assert stat.S_IMODE(st.st_mode) == 0o440 and st.st_gid == os.getgid()
    output = done.stdout + done.stderr + log
    assert not any(value in output for value in SECRETS.values())


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-object", f"ghost (kv-e2e/ghost): object not found in vault {VAULT}"),
        ("unfederated", "db-password (kv-e2e/db-password): token exchange failed: AADSTS70021"),
        ("unreachable", "db-password (kv-e2e/db-password): vault kv-e2e unreachable"),
    ],
)
def test_failures_leave_a_reason_and_no_files(
    harness: Harness, stored_pod: dict[str, Any], case: str, expected: str
) -> None:
    if case == "missing-object":
        objects = json.loads({e["name"]: e["value"] for e in fetch_container(stored_pod)["env"]}["KVINJECT_OBJECTS"])
        objects.append({"alias": "ghost", "vault": VAULT, "name": "ghost", "type": "secret", "version": ""})
        done, out, log = harness.run(stored_pod, objects=objects)
    elif case == "unfederated":  # a real ServiceAccount token, but Entra has no federated credential for it
        harness.cp.kubectl("create", "serviceaccount", "other", "-n", harness.namespace)
        done, out, log = harness.run(stored_pod, account="other")
    else:
        done, out, log = harness.run(stored_pod, vault_url=f"https://127.0.0.1:{free_port()}")  # nothing listens
    assert done.returncode == 1, done.stderr
    assert expected in log, log
    assert list(out.iterdir()) == []
