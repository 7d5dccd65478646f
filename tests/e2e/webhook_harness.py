"""Run `kvinject serve` against the e2e control plane, as the shipped manifests would.

- the shipped RBAC (Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding) is
  applied from `manifests/`, and kvinject runs with a kubeconfig holding a token of
  that ServiceAccount (not admin), so the ClusterRole is proven sufficient;
- the shipped MutatingWebhookConfiguration is registered with only its clientConfig
  rewritten to `url: https://127.0.0.1:PORT/mutate` and the generated caBundle.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.controlplane import ControlPlane, free_port, tail
from webhook import certs

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
K = "kvinject.io/"


def rendered_manifests(cp: ControlPlane) -> list[dict[str, Any]]:
    """`kubectl kustomize manifests/` with the built kubectl."""
    out = cp.kubectl("kustomize", str(MANIFESTS)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def pick(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") in kinds]


def apply_docs(cp: ControlPlane, docs: list[dict[str, Any]]) -> None:
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs))


def service_account_kubeconfig(cp: ControlPlane, path: Path, namespace: str, name: str) -> Path:
    """A kubeconfig that authenticates as namespace/name with a TokenRequest token."""
    token = cp.kubectl("create", "token", name, "-n", namespace, "--duration", "4h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sa",
        "clusters": [{"name": "e2e", "cluster": {"server": cp.url, "certificate-authority": str(cp.ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": "sa"}}],
    }
    path.write_text(yaml.safe_dump(config))
    os.chmod(path, 0o600)
    return path


class KvinjectServer:
    """A `kvinject serve` subprocess on 127.0.0.1 with its own CA."""

    instances: list[KvinjectServer] = []

    def __init__(self, workdir: Path, kubeconfig: Path, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = kubeconfig
        self.port = free_port()
        self.issued = certs.issue(workdir / "certs", ["kvinject.kvinject.svc"], ips=["127.0.0.1"])
        self.log_path = workdir / "kvinject.log"
        self.env = {**os.environ, "KVINJECT_LOG_LEVEL": "DEBUG", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        KvinjectServer.instances.append(self)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.issued.ca_file.read_bytes()).decode()

    def start(self, timeout: float = 30.0) -> KvinjectServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webhook",
                "serve",
                "--kubeconfig",
                str(self.kubeconfig),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--cert-file",
                str(self.issued.cert_file),
                "--key-file",
                str(self.issued.key_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def get(self, path: str) -> httpx.Response:
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.issued.ca_file))
        return httpx.get(self.url + path, verify=ctx, timeout=2)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvinject exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                if self.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kvinject not ready after {timeout}s:\n{tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def webhook_configuration(docs: list[dict[str, Any]], kind: str, url: str, ca_bundle: str) -> dict[str, Any]:
    """The shipped webhook configuration of `kind`, pointed at a local URL; everything else as shipped."""
    (config,) = pick(docs, kind)
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"].get("path", "")
        hook["clientConfig"] = {"url": url + path, "caBundle": ca_bundle}
    return config


def get_json(cp: ControlPlane, *args: str) -> Any:
    return yaml.safe_load(cp.kubectl("get", *args, "-o", "json").stdout)


def wait_for(fetch: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def pod_manifest(namespace: str, annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "probe-",
            "namespace": namespace,
            "labels": {K + "inject": "true"},
            "annotations": annotations,
        },
        "spec": {"serviceAccountName": "api", "containers": [{"name": "app", "image": "app:1"}], **spec},
    }


def create(cp: ControlPlane, doc: dict[str, Any], check: bool = True) -> Any:
    result = cp.kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(doc), check=check)
    return result if not check else yaml.safe_load(result.stdout)


def provider_classes(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cp, "secretproviderclasses", "-n", namespace)["items"]
    return items
