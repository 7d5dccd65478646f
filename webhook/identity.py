"""Who a pod reads as: its ServiceAccount, and the identity a provider resolved for it."""

from __future__ import annotations

from dataclasses import dataclass

from webhook.names import DEFAULT_SERVICE_ACCOUNT


@dataclass(frozen=True, slots=True)
class Identity:
    """The identity policies are written for: a client id in a tenant."""

    client_id: str
    tenant_id: str


def service_account_name(pod_spec: dict[str, object]) -> str:
    name = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT
    return str(name)
