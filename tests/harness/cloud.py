"""An Azure cloud of the test's own for the node tier: Entra ID and Key Vault reached by name, as a custom cloud.

The doubles serve on port 443 of documentation-range addresses added to the loopback device of the test's own
network namespace; the node's hosts file (and pods' hostAliases) resolve the cloud's names to them:

- ``login.kvinject.test``: Entra ID (the cloud's activeDirectoryEndpoint). MSAL for Go, inside the Azure
  provider, sends instance discovery for hosts it does not trust to ``login.microsoftonline.com``, so that name
  resolves to the same double inside the namespace (and nowhere else);
- ``<vault>.vault.kvinject.test``: Key Vault (the cloud's keyVaultDNSSuffix).

The cloud is described by an AzureStackCloud environment file, which kvinject (KVINJECT_CLOUD_ENV_FILE) and
the provider (the generated class's cloudEnvFileName) both read; clients trust its CAs through ``ca_bundle``
(the provider's SSL_CERT_FILE, kvinject-fetch's ConfigMap named ``CA_CONFIGMAP``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.harness.builders import CLIENT_ID, TENANT_ID
from tests.harness.controlplane import ControlPlane
from tests.harness.doubles.entra import FakeEntra, FederatedCredential
from tests.harness.doubles.keyvault import FakeKeyVault
from tests.harness.pki import bundle
from tests.harness.process import Lifecycle

LOGIN = "login.kvinject.test"
PUBLIC_LOGIN = "login.microsoftonline.com"
VAULT_SUFFIX = "vault.kvinject.test"
ENTRA_ADDRESS = "192.0.2.11"
VAULT_ADDRESS = "192.0.2.12"
CA_CONFIGMAP = "kvinject-cloud-ca"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


class AzureCloud(Lifecycle):
    """Named Entra ID and Key Vault doubles, the environment file and the CA bundle; ``start()`` it."""

    def __init__(self, workdir: Path, cp: ControlPlane, vaults: Sequence[str]) -> None:
        self.workdir = workdir
        self.cp = cp
        self.vaults = list(vaults)
        self.env_file = workdir / "azurestackcloud.json"
        self.ca_bundle = workdir / "cloud-ca.pem"
        self.entra = FakeEntra(workdir / "entra", hostnames=(LOGIN, PUBLIC_LOGIN), address=ENTRA_ADDRESS)
        self.key_vault: FakeKeyVault | None = None
        self._added: list[str] = []
        self._hosts_mounted = False

    @property
    def vault(self) -> FakeKeyVault:
        assert self.key_vault is not None, "start() the cloud first"
        return self.key_vault

    @property
    def hosts(self) -> dict[str, str]:
        """Name → address, for the node's hosts file."""
        names = {LOGIN: ENTRA_ADDRESS, PUBLIC_LOGIN: ENTRA_ADDRESS}
        names.update({f"{v}.{VAULT_SUFFIX}": VAULT_ADDRESS for v in self.vaults})
        return names

    @property
    def host_aliases(self) -> list[dict[str, Any]]:
        """The same names for a pod's spec.hostAliases (pods have their own /etc/hosts)."""
        by_ip: dict[str, list[str]] = {}
        for name, ip in self.hosts.items():
            by_ip.setdefault(ip, []).append(name)
        return [{"ip": ip, "hostnames": names} for ip, names in sorted(by_ip.items())]

    def kvinject_env(self, init_image: str) -> dict[str, str]:
        """kvinject's settings for this cloud."""
        return {
            "KVINJECT_CLOUD_ENV_FILE": str(self.env_file),
            "KVINJECT_INIT_CA_CONFIGMAP": CA_CONFIGMAP,
            "KVINJECT_INIT_IMAGE": init_image,
            "KVINJECT_TENANT_ID": TENANT_ID,
        }

    def ca_configmap(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CA_CONFIGMAP, "namespace": namespace},
            "data": {"ca.crt": self.ca_bundle.read_text()},
        }

    def federate(self, namespace: str, account: str, client_id: str = CLIENT_ID) -> None:
        """A federated credential on `client_id` for the ServiceAccount's tokens from the real apiserver."""
        subject = f"system:serviceaccount:{namespace}:{account}"
        self.entra.add_federated_credential(FederatedCredential(TENANT_ID, client_id, self.cp.issuer, subject))

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for address in (ENTRA_ADDRESS, VAULT_ADDRESS):
            added = _ip("addr", "add", f"{address}/32", "dev", "lo")
            if added.returncode == 0:
                self._added.append(address)
            elif "File exists" not in added.stderr:
                raise RuntimeError(f"cannot add {address} to lo (the test's own network namespace?): {added.stderr}")
        self.entra.start()
        self.entra.trust_apiserver(self.cp)
        self.key_vault = FakeKeyVault(
            self.workdir / "kv",
            self.vaults,
            tenant_id=TENANT_ID,
            authority=self.entra.authority,
            identity_of=self.entra.identity_of,
            dns_suffix=VAULT_SUFFIX,
            address=VAULT_ADDRESS,
        ).start()
        self.env_file.write_text(
            json.dumps(
                {
                    "name": "AzureStackCloud",
                    "activeDirectoryEndpoint": f"https://{LOGIN}/",
                    "keyVaultEndpoint": f"https://{VAULT_SUFFIX}/",
                    "keyVaultDNSSuffix": VAULT_SUFFIX,
                    "resourceManagerEndpoint": "https://management.kvinject.test/",
                    "tokenAudience": "https://management.kvinject.test/",
                }
            )
        )
        bundle(self.ca_bundle, self.entra.ca_file, self.vault.ca_file)
        self._resolve_here()

    def _resolve_here(self) -> None:
        """The cloud's names for this process and its children too (seeding, kvinject's live verification): a
        hosts file over /etc/hosts, in the mount namespace tests/isolated.sh gives the run (never the host's)."""
        if "mount" not in os.environ.get("KVINJECT_NAMESPACES", "").split():
            raise RuntimeError("the test's own Azure cloud needs tests/isolated.sh's network and mount namespaces")
        hosts = self.workdir / "hosts"
        lines = [Path("/etc/hosts").read_text().rstrip("\n")]
        lines += [f"{ip} {name}" for name, ip in sorted(self.hosts.items())]
        hosts.write_text("\n".join(lines) + "\n")
        subprocess.run(["mount", "-n", "--bind", str(hosts), "/etc/hosts"], check=True)
        self._hosts_mounted = True

    def _stop(self) -> None:
        if self._hosts_mounted:
            subprocess.run(["umount", "-n", "/etc/hosts"], check=False)
            self._hosts_mounted = False
        if self.key_vault is not None:
            self.key_vault.stop()
        self.entra.stop()
        while self._added:
            _ip("addr", "del", f"{self._added.pop()}/32", "dev", "lo")
