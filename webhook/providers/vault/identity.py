"""Pure: the HashiCorp Vault identity a ServiceAccount reads as, a Kubernetes-auth role on the server's auth mount."""

from __future__ import annotations

from webhook.identity import Identity
from webhook.model import ServiceAccount, auth_mount
from webhook.names import SA_VAULT_ROLE, STORE_VAULT, VAULT_ROLE, VAULT_ROLE_NAME


def resolve(
    namespace: str, name: str, account: ServiceAccount | None, mount: str, pod_role: str | None = None
) -> Identity | str:
    """The role `namespace/name` logs in as (the pod's kvinject.io/vault-role over the ServiceAccount's
    annotation), or the sentence telling how to fix it.

    A pod's role needs no check here: the policy decision admits it only if a SecretAccessPolicy for that role
    lists this ServiceAccount, as Vault binds roles to ServiceAccounts (docs/vault-design.md).
    """
    ref = f"ServiceAccount {namespace}/{name}"
    if account is None:
        return (
            f"{ref} does not exist: create it and annotate it with {SA_VAULT_ROLE}=<the Vault Kubernetes-auth"
            " role bound to it>"
        )
    role = pod_role or account.vault_role
    if not role:
        return (
            f"{ref} has no {SA_VAULT_ROLE} annotation: run kubectl annotate serviceaccount -n {namespace} {name}"
            f" {SA_VAULT_ROLE}=<the Vault Kubernetes-auth role bound to it>, or set {VAULT_ROLE} on the pod"
        )
    if not VAULT_ROLE_NAME.match(role):
        where = f"pod annotation {VAULT_ROLE}" if pod_role else f"{ref} annotation {SA_VAULT_ROLE}"
        return f"{where}={role[:128]!r} is not a Vault role name"
    return Identity(client_id=role.lower(), tenant_id=auth_mount(mount), store=STORE_VAULT)
