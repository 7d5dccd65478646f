"""One namespace's Vault site: a role in the real Vault, its mirror SecretAccessPolicy, and kvinject pointed at it.

`payments` reads `secret/<ns>/db` (keys password and username) in Vault's ACL and in kvinject's policy alike;
`secret/<ns>/admin` exists but neither grants it, and `secret/<ns>/audit` is granted by kvinject's policy only
(so live verification has something only Vault refuses). ServiceAccount `api` is bound to the role in both;
`intruder` carries the role's annotation but is bound in neither.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import ControlPlane, K, KvinjectServer, apply_docs, hygiene, pod_manifest, point_webhooks_at
from tests.harness.vault import AUDIENCE, KUBERNETES_MOUNT, VaultRole, VaultServer, access_policy, read_policy

# Values the tests seed and then look for in every log (hygiene): they must never appear.
VALUES = {"password": "vault-pass-5c1d", "username": "vault-user-9a2e"}
ADMIN_VALUE = "vault-admin-0f3b"
AUDIT_VALUE = "vault-audit-77d1"


@dataclass
class Site:
    cp: ControlPlane
    session: KvinjectServer
    vault: VaultServer
    namespace: str
    tmp: Path
    server: KvinjectServer | None = None

    @property
    def role(self) -> str:
        return f"app-{self.namespace}"

    def path(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    def ref(self, name: str, key: str) -> str:
        return f"secret/{self.namespace}/{name}#{key}"

    def seed(self) -> None:
        hygiene.remember(*VALUES.values(), ADMIN_VALUE, AUDIT_VALUE)
        self.vault.put_secret(self.path("db"), VALUES)
        self.vault.put_secret(self.path("admin"), {"password": ADMIN_VALUE})
        self.vault.put_secret(self.path("audit"), {"password": AUDIT_VALUE})
        self.vault.write_policy(self.role, read_policy("secret", self.path("db")))
        self.vault.write_role(VaultRole(self.role, ["api"], [self.namespace], [self.role]))
        policy = access_policy(
            f"vault-{self.namespace}",
            self.role,
            [(self.namespace, "api")],
            {f"secret/{self.namespace}/db": ["password", "username"], f"secret/{self.namespace}/audit": ["*"]},
        )
        apply_docs(self.cp, [policy])
        for account in ("api", "intruder"):
            self.cp.kubectl("create", "serviceaccount", account, "-n", self.namespace, check=False)
            self.cp.kubectl(
                "annotate", "serviceaccount", account, "-n", self.namespace, f"vault.kvinject.io/role={self.role}"
            )

    def settings(self) -> dict[str, str]:
        return {
            "KVINJECT_HASHICORP_VAULT_ADDRESS": self.vault.url,
            "KVINJECT_HASHICORP_VAULT_AUTH_MOUNT": KUBERNETES_MOUNT,
            "KVINJECT_HASHICORP_VAULT_AUDIENCE": AUDIENCE,
        }

    def start(self, **env: str) -> KvinjectServer:
        """A kvinject serving with this site's Vault settings (plus `env`), the shipped webhooks pointed at it."""
        if self.server is not None:
            self.server.stop()
        self.server = KvinjectServer(
            self.tmp / f"vault-kvinject-{time.monotonic_ns()}",
            self.session.kubeconfig,
            env={**{k: v for k, v in self.session.env.items() if k.startswith("KVINJECT_")}, **self.settings(), **env},
        ).start()
        point_webhooks_at(self.cp, self.server)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            logs = self.server.logs()
            assert "Traceback" not in logs
            for value in (*VALUES.values(), ADMIN_VALUE, AUDIT_VALUE):
                assert value not in logs
        point_webhooks_at(self.cp, self.session)

    def pod(self, annotations: dict[str, str], account: str = "api", **spec: Any) -> dict[str, Any]:
        pod: dict[str, Any] = pod_manifest(
            self.namespace, {K + "store": "vault", **annotations}, serviceAccountName=account, **spec
        )
        return pod
