"""The Azure Workload Identity webhook (azwi-webhook, built by tests/e2e/build_binaries.sh) as a process.

It binds every interface on :9443 (it has no flag for its address): run it only inside tests/isolated.sh's
private network namespace; `isolated_network()` tells whether this is one."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.harness.builders import TENANT_ID
from tests.harness.pki import ServesTls, loopback
from tests.harness.process import Process, free_port

AZWI_PORT = 9443


def isolated_network() -> bool:
    """Whether this is tests/isolated.sh's network namespace: made empty by it, holding only loopback, the
    veth pair whose both ends it keeps inside (the test node's address), and what a test node adds (its CNI
    bridge and the veths to its pods' namespaces) - no interface of the machine's own network."""
    if os.environ.get("KVINJECT_NETNS") != "1":
        return False
    links = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, check=True).stdout)
    return all(
        link["ifname"] == "lo" or link.get("linkinfo", {}).get("info_kind") in ("veth", "bridge") for link in links
    )


class AzwiWebhook(ServesTls, Process):
    """azwi-webhook reading the API through `kubeconfig`, serving https://127.0.0.1:9443/mutate-v1-pod with a
    certificate of its own CA (`ca_file`, `ca_bundle`); ready once it answers a request."""

    def __init__(
        self, binary: Path, workdir: Path, kubeconfig: Path, *, name: str = "azwi-webhook", wrapper: Sequence[str] = ()
    ) -> None:
        certdir = workdir / "azwi-certs"
        self.issued = loopback(certdir)
        metrics = f"127.0.0.1:{free_port()}"
        self.metrics_url = f"http://{metrics}/metrics"
        args = [*wrapper, str(binary), "-webhook-cert-dir", str(certdir), "-disable-cert-rotation"]
        args += ["-health-addr", f"127.0.0.1:{free_port()}", "-metrics-addr", metrics]
        args += ["-kubeconfig", str(kubeconfig), "-tls-min-version", "1.2"]
        env = {**os.environ, "AZURE_TENANT_ID": TENANT_ID}
        env.pop("KUBECONFIG", None)
        super().__init__(name, args, workdir / "azwi.log", env=env, readiness="answering on :9443")

    @property
    def mutate_url(self) -> str:
        return f"https://127.0.0.1:{AZWI_PORT}/mutate-v1-pod"

    def ready(self) -> bool:
        httpx.post(self.mutate_url, content=b"{}", verify=self.trust(), timeout=1)  # any answer will do
        return True
