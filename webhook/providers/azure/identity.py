"""Pure checks that a pod's ServiceAccount carries a usable Azure workload identity."""

from __future__ import annotations

import re

from webhook.identity import Identity
from webhook.model import ServiceAccount
from webhook.names import SA_CLIENT_ID, SA_TENANT_ID

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def resolve(namespace: str, name: str, account: ServiceAccount | None, default_tenant: str | None) -> Identity | str:
    """The workload identity of `namespace/name`, or the sentence telling how to fix it."""
    ref = f"ServiceAccount {namespace}/{name}"
    if account is None:
        return (
            f"{ref} does not exist: create it and annotate it with {SA_CLIENT_ID}=<client id of the"
            " Azure identity federated to it>"
        )
    if not account.client_id:
        return (
            f"{ref} has no {SA_CLIENT_ID} annotation: run kubectl annotate serviceaccount -n {namespace}"
            f" {name} {SA_CLIENT_ID}=<client id of the Azure identity federated to it>"
        )
    if not _GUID.match(account.client_id):
        return f"{ref} annotation {SA_CLIENT_ID}={account.client_id!r} is not a GUID"
    tenant = account.tenant_id or default_tenant
    if not tenant:
        return (
            f"no tenant for {ref}: annotate it with {SA_TENANT_ID}=<tenant id> or set KVINJECT_TENANT_ID on the webhook"
        )
    if not _GUID.match(tenant):
        return f"{ref} tenant id {tenant!r} is not a GUID"
    return Identity(client_id=account.client_id.lower(), tenant_id=tenant.lower())


def is_guid(text: str) -> bool:
    return bool(_GUID.match(text))
