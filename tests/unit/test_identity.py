"""Identity basics: the ServiceAccount must exist and carry a workload-identity client id."""

from __future__ import annotations

import pytest

from tests.harness import CLIENT_ID, TENANT_ID
from webhook import identity
from webhook.model import ServiceAccount
from webhook.providers.azure.identity import resolve


@pytest.mark.parametrize(
    ("account", "default_tenant", "expected"),
    [
        (
            None,
            TENANT_ID,
            "ServiceAccount payments/api does not exist: create it and annotate it with"
            " azure.workload.identity/client-id=<client id of the Azure identity federated to it>",
        ),
        (
            ServiceAccount("payments", "api", "u", None, None),
            TENANT_ID,
            "ServiceAccount payments/api has no azure.workload.identity/client-id annotation: run kubectl annotate"
            " serviceaccount -n payments api azure.workload.identity/client-id=<client id of the Azure identity"
            " federated to it>",
        ),
        (
            ServiceAccount("payments", "api", "u", "not-a-guid", None),
            TENANT_ID,
            "ServiceAccount payments/api annotation azure.workload.identity/client-id='not-a-guid' is not a GUID",
        ),
        (
            ServiceAccount("payments", "api", "u", CLIENT_ID, None),
            None,
            "no tenant for ServiceAccount payments/api: annotate it with azure.workload.identity/tenant-id=<tenant id>"
            " or set KVINJECT_TENANT_ID on the webhook",
        ),
        (
            ServiceAccount("payments", "api", "u", CLIENT_ID, "contoso"),
            None,
            "ServiceAccount payments/api tenant id 'contoso' is not a GUID",
        ),
    ],
    ids=["missing", "no-client-id", "bad-client-id", "no-tenant", "bad-tenant"],
)
def test_resolve_explains_how_to_fix(account: ServiceAccount | None, default_tenant: str | None, expected: str) -> None:
    assert resolve("payments", "api", account, default_tenant) == expected


@pytest.mark.parametrize(
    ("sa_tenant", "default", "expected"),
    [
        (TENANT_ID, None, TENANT_ID),
        (None, TENANT_ID, TENANT_ID),
        ("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", TENANT_ID, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
    ],
    ids=["from-sa", "server-default", "sa-wins"],
)
def test_resolve_tenant(sa_tenant: str | None, default: str | None, expected: str) -> None:
    who = resolve("ns", "sa", ServiceAccount("ns", "sa", "u", CLIENT_ID.upper(), sa_tenant), default)
    assert who == identity.Identity(CLIENT_ID, expected)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "default"),
        ({"serviceAccountName": "api"}, "api"),
        ({"serviceAccount": "legacy"}, "legacy"),
        ({"serviceAccountName": "api", "serviceAccount": "legacy"}, "api"),
    ],
    ids=["default", "name", "deprecated-field", "name-wins"],
)
def test_service_account_name(spec: dict, expected: str) -> None:
    assert identity.service_account_name(spec) == expected
