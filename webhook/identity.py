"""Who a pod reads as: its ServiceAccount, and the identity a provider resolved for it."""

from __future__ import annotations

from dataclasses import dataclass

from webhook.names import DEFAULT_SERVICE_ACCOUNT, DEFAULT_STORE, STORE_VAULT

# How messages name an identity's parts, by store: (principal, realm, what binds ServiceAccounts to it).
_WORDS = {
    DEFAULT_STORE: ("identity", "client id", "tenant", "federatedServiceAccounts"),
    STORE_VAULT: ("role", "role", "auth mount", "federatedServiceAccounts (the role's bound ServiceAccounts)"),
}


@dataclass(frozen=True, slots=True)
class Identity:
    """The identity policies are written for: Azure's client id in a tenant, or Vault's Kubernetes-auth role
    (`client_id`) on an auth mount (`tenant_id`). Policies are indexed by `client_id` and bind one store."""

    client_id: str
    tenant_id: str
    store: str = DEFAULT_STORE

    @property
    def kind(self) -> str:
        """What the principal is called: "identity" (Azure) or "role" (Vault)."""
        return _WORDS[self.store][0]

    @property
    def principal_word(self) -> str:
        return _WORDS[self.store][1]

    @property
    def realm_word(self) -> str:
        return _WORDS[self.store][2]

    @property
    def binding_word(self) -> str:
        return _WORDS[self.store][3]

    def foreign_to(self, store: str, class_name: str) -> list[str]:
        """A problem if this identity is not `store`'s: the pipeline asks each provider with the identity it
        resolved, so anything else is a bug to deny, never a class to leave unjudged."""
        if self.store == store:
            return []
        return [f"SecretProviderClass {class_name} (provider: {store}) cannot be judged for a {self.store} identity"]


def service_account_name(pod_spec: dict[str, object]) -> str:
    name = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT
    return str(name)
