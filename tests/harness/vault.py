"""A real HashiCorp Vault for the Vault store's tests: `vault server -config`, TLS on 127.0.0.1, driven with hvac.

The binary is the one tests/e2e/build_vault.sh builds and caches (VAULT_VERSION in tests/e2e/versions.env). A real
server rather than `-dev`: dev mode always adds a plain-HTTP listener and keeps its own certificates, while this
serves only TLS, with a server certificate from a CA of tests/harness/pki.py, exactly as a production Vault does.
Its file storage lives in the work directory, so stop() then start() is a restart (Vault down, then back): the
unseal key is kept in memory and the server is unsealed again.

Set up through the API as the root token: KV v2 mounts (`enable_kv`, `put_secret`), ACL policies (`write_policy`,
`read_policy`), and Kubernetes auth configured against the e2e control plane (`enable_kubernetes_auth`: a
reviewer ServiceAccount bound to system:auth-delegator does the TokenReviews) with roles (`write_role`). A test then
mints a ServiceAccount token with the role's audience (`service_account_token`), logs in (`login`) and reads, or
asks `sys/capabilities-self` (`capabilities_self`). Every client trusts only this Vault's CA, given explicitly
(this machine sets REQUESTS_CA_BUNDLE/SSL_CERT_FILE to the system bundle). No token, key or value is logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import requests
from hvac.exceptions import VaultError

from tests.harness.controlplane import ControlPlane, cache_dir, read_versions
from tests.harness.pki import PKI
from tests.harness.process import Lifecycle, Process, free_port

BUILD_SCRIPT = "tests/e2e/build_vault.sh"
KV_MOUNT = "secret"
KUBERNETES_MOUNT = "kubernetes"
AUDIENCE = "vault"  # the audience every role sets (a role without one accepts a token of any audience)
REVIEWER_NAMESPACE = "vault-system"
REVIEWER = "vault-token-reviewer"


class VaultMissing(RuntimeError):
    """The cached Vault binary is missing: run tests/e2e/build_vault.sh."""


def vault_binary(cache: Path | None = None, versions: Mapping[str, str] | None = None) -> Path:
    """Where build_vault.sh caches the pinned Vault (not checked)."""
    v = versions if versions is not None else read_versions()
    return (cache if cache is not None else cache_dir()) / "bin" / f"vault-{v['VAULT_VERSION']}" / "vault"


def require_vault(cache: Path | None = None) -> Path:
    """The cached Vault binary, or VaultMissing naming the build script."""
    path = vault_binary(cache)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise VaultMissing(
            f"Vault binary missing: run `{BUILD_SCRIPT}` (about 10 minutes and 4 GB once, then cached). Missing: {path}"
        )
    return path


def kv_data_path(mount: str, path: str) -> str:
    """The API path of a KV v2 secret's data (what ACL policies and capabilities-self name)."""
    return f"{mount}/data/{path.strip('/')}"


def read_policy(mount: str, *paths: str) -> str:
    """An ACL policy (HCL) granting read on the KV v2 secrets `paths` (globs allowed) of `mount`."""
    return "".join(f'path "{kv_data_path(mount, p)}" {{\n  capabilities = ["read"]\n}}\n' for p in paths)


@dataclass(frozen=True)
class VaultRole:
    """A Kubernetes-auth role: who may log in (ServiceAccount names and namespaces), for which token audience,
    with which ACL policies."""

    name: str
    service_accounts: Sequence[str]
    namespaces: Sequence[str]
    policies: Sequence[str]
    audience: str = AUDIENCE
    ttl: str = "10m"

    def body(self) -> dict[str, Any]:
        return {
            "bound_service_account_names": list(self.service_accounts),
            "bound_service_account_namespaces": list(self.namespaces),
            "audience": self.audience,
            "token_policies": list(self.policies),
            "token_ttl": self.ttl,
        }


@dataclass
class _Keys:
    """What `operator init` returns, held in memory only (never written, never logged)."""

    unseal: str = field(repr=False)
    root_token: str = field(repr=False)


class VaultServer(Lifecycle):
    """`vault server -config` on `host` with TLS and file storage under `workdir`; started, initialised (one key
    share) and unsealed by start(), unsealed again by a later start(). `url` and `ca_file` are what clients need.
    `host` is 127.0.0.1 unless a node's pods must reach Vault: then the node's address (192.0.2.10 inside
    tests/isolated.sh's network), which the certificate names too."""

    def __init__(
        self, workdir: Path, *, binary: Path | None = None, stop_timeout: float = 10.0, host: str = "127.0.0.1"
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.binary = binary if binary is not None else require_vault()
        self.port = free_port()
        self.host = host
        self.url = f"https://{host}:{self.port}"
        self.pki = PKI(self.workdir / "pki", ca_common_name="kvinject-e2e-vault-ca")
        self.ca_file = self.pki.ca_cert
        self.cert_file, self.key_file = self.pki.issue(
            "vault", "vault", dns_names=["localhost"], ip_addresses=sorted({"127.0.0.1", host}), server=True
        )
        self.config_file = self.workdir / "vault.hcl"
        self.log_path = self.workdir / "vault.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
        self.process = Process(
            "vault",
            [str(self.binary), "server", f"-config={self.config_file}", "-log-level=info"],
            self.log_path,
            env=env,
            ready=self._answers,
            readiness=f"{self.url}/v1/sys/health",
            stop_timeout=stop_timeout,
        )
        self._keys: _Keys | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def _start(self) -> None:
        self._write_config()
        self.process.start()
        if self._keys is None:
            answer = self.client().sys.initialize(secret_shares=1, secret_threshold=1)
            self._keys = _Keys(unseal=answer["keys_base64"][0], root_token=answer["root_token"])
        self.client().sys.submit_unseal_key(self._keys.unseal)
        self.process.wait_until(lambda: self.health() == 200, "Vault unsealed and active")

    def _stop(self) -> None:
        self.process.stop()

    def _write_config(self) -> None:
        # The cluster listener (HA forwarding) is unused with file storage; mlock needs CAP_IPC_LOCK.
        config = f"""
storage "file" {{
  path = "{self.workdir / "data"}"
}}
listener "tcp" {{
  address         = "{self.host}:{self.port}"
  tls_cert_file   = "{self.cert_file}"
  tls_key_file    = "{self.key_file}"
  tls_min_version = "tls12"
}}
api_addr      = "{self.url}"
disable_mlock = true
ui            = false
"""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config.lstrip())

    def _answers(self) -> bool:
        self.health()
        return True

    def health(self) -> int:
        """The status code of sys/health: 200 active, 501 not initialised, 503 sealed (raises if nothing answers)."""
        return requests.get(f"{self.url}/v1/sys/health", verify=str(self.ca_file), timeout=5).status_code

    def check_alive(self) -> None:
        self.process.check_alive()

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        """The server's resident memory now (reported, never asserted)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def logs(self) -> str:
        return self.process.logs()

    # -- clients ------------------------------------------------------------------------

    def client(self, token: str | None = None) -> hvac.Client:
        """An hvac client for this Vault trusting only its CA (passed per request, so REQUESTS_CA_BUNDLE cannot
        replace it), authenticated with `token` if given."""
        return hvac.Client(url=self.url, token=token, verify=str(self.ca_file), timeout=10)

    @property
    def admin(self) -> hvac.Client:
        """A client holding the root token (setup only)."""
        if self._keys is None:
            raise RuntimeError("start() Vault first")
        return self.client(self._keys.root_token)

    # -- setup as root --------------------------------------------------------------------

    def enable_kv(self, mount: str = KV_MOUNT) -> None:
        """A KV v2 secrets engine at `mount`, ready for writes."""
        admin = self.admin
        admin.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
        # A new KV v2 mount finishes setting itself up in the background; its config answers once it has.
        self.process.wait_until(lambda: admin.secrets.kv.v2.read_configuration(mount_point=mount), f"KV v2 at {mount}/")

    def put_secret(self, path: str, data: Mapping[str, str], mount: str = KV_MOUNT) -> int:
        """Write a version of the KV v2 secret `path`; returns its version number."""
        answer = self.admin.secrets.kv.v2.create_or_update_secret(path, secret=dict(data), mount_point=mount)
        return int(answer["data"]["version"])

    def write_policy(self, name: str, hcl: str) -> None:
        self.admin.sys.create_or_update_policy(name, hcl)

    def enable_kubernetes_auth(self, cp: ControlPlane, mount: str = KUBERNETES_MOUNT) -> None:
        """Kubernetes auth at `mount`, checking tokens with TokenReviews on the control plane `cp` as a reviewer
        ServiceAccount bound to system:auth-delegator. Vault runs outside the cluster, so the reviewer's token, the
        apiserver's URL and its CA are given, and no local (in-pod) token or CA is read."""
        cp.kubectl("create", "namespace", REVIEWER_NAMESPACE, check=False)
        cp.kubectl("create", "serviceaccount", REVIEWER, "-n", REVIEWER_NAMESPACE, check=False)
        cp.kubectl(
            "create",
            "clusterrolebinding",
            f"{REVIEWER}-auth-delegator",
            "--clusterrole=system:auth-delegator",
            f"--serviceaccount={REVIEWER_NAMESPACE}:{REVIEWER}",
            check=False,
        )
        reviewer_jwt = self.service_account_token(cp, REVIEWER_NAMESPACE, REVIEWER, audience=None, duration="24h")
        admin = self.admin
        admin.sys.enable_auth_method("kubernetes", path=mount)
        admin.write_data(
            f"auth/{mount}/config",
            data={
                "kubernetes_host": cp.url,
                "kubernetes_ca_cert": cp.ca_file.read_text(),
                "token_reviewer_jwt": reviewer_jwt,
                "disable_local_ca_jwt": True,
            },
        )

    def write_role(self, role: VaultRole, mount: str = KUBERNETES_MOUNT) -> None:
        self.admin.write_data(f"auth/{mount}/role/{role.name}", data=role.body())

    # -- as a workload ------------------------------------------------------------------------

    @staticmethod
    def service_account_token(
        cp: ControlPlane, namespace: str, name: str, *, audience: str | None = AUDIENCE, duration: str = "10m"
    ) -> str:
        """A TokenRequest token of ServiceAccount namespace/name for `audience` (None: the apiserver's own)."""
        args = ["create", "token", name, "-n", namespace, "--duration", duration]
        if audience is not None:
            args += ["--audience", audience]
        return str(cp.kubectl(*args).stdout).strip()

    def login(self, jwt: str, role: str, mount: str = KUBERNETES_MOUNT) -> hvac.Client:
        """A client holding the Vault token a Kubernetes-auth login with `jwt` as `role` returns (hvac raises the
        Vault error, its body in `.json`, if the login is refused)."""
        client = self.client()
        client.auth.kubernetes.login(role, jwt, mount_point=mount)
        return client

    @staticmethod
    def capabilities_self(client: hvac.Client, paths: Sequence[str]) -> dict[str, list[str]]:
        """What `sys/capabilities-self` says `client`'s token may do on each API path."""
        answer = client.sys.get_capabilities(list(paths))
        return {p: list(answer[p]) for p in paths}

    @staticmethod
    def read_key(client: hvac.Client, path: str, key: str, mount: str = KV_MOUNT) -> str:
        """The value of `key` in the latest version of KV v2 secret `path` (for comparison, never to print)."""
        answer = client.secrets.kv.v2.read_secret_version(path, mount_point=mount, raise_on_deleted_version=True)
        return str(answer["data"]["data"][key])


def error_body(exc: VaultError) -> Any:
    """The JSON body of the Vault answer behind an hvac exception (its text if not JSON)."""
    if exc.json is not None:
        return exc.json
    try:
        return json.loads(exc.text or "")
    except ValueError:
        return exc.text


__all__ = [
    "AUDIENCE",
    "BUILD_SCRIPT",
    "KUBERNETES_MOUNT",
    "KV_MOUNT",
    "VaultMissing",
    "VaultRole",
    "VaultServer",
    "error_body",
    "kv_data_path",
    "read_policy",
    "require_vault",
    "vault_binary",
]


def access_policy(
    name: str,
    role: str,
    accounts: Sequence[tuple[str, str]],
    allow: Mapping[str, Sequence[str]],
    mount: str = KUBERNETES_MOUNT,
) -> dict[str, Any]:
    """A SecretAccessPolicy for Vault role `role`: `accounts` mirror the role's bound ServiceAccounts, `allow`
    maps path globs (`<mount>/<path>`) to key globs."""
    return {
        "apiVersion": "kvinject.io/v1alpha1",
        "kind": "SecretAccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "identity": {"vault": {"authMount": mount, "role": role}},
            "federatedServiceAccounts": [{"namespace": n, "name": a} for n, a in accounts],
            "allow": [{"path": p, "keys": list(k)} for p, k in allow.items()],
        },
    }
