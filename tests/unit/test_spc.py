"""The generated SecretProviderClass: content, name hashing, and the provider's objects format."""

from __future__ import annotations

import pytest
import yaml

from tests.harness import CLIENT_ID, TENANT_ID
from webhook import contract, spc
from webhook.model import SecretProviderClass, ServiceAccount
from webhook.names import PREFIX
from webhook.providers.azure import classes, provider_view

K = PREFIX
SA = ServiceAccount("payments", "api", "uid-1", CLIENT_ID, TENANT_ID)


def build(annotations: dict[str, str], account: ServiceAccount = SA, namespace: str = "payments") -> dict:
    wanted = contract.parse_annotations(annotations, "payments-kv")
    return spc.generated("azure", classes.parameters(wanted, CLIENT_ID, TENANT_ID), wanted, namespace, account)


def test_holds_exactly_the_requested_objects() -> None:
    obj = build({K + "secret-db-password": "db-password", K + "secret-tls.pem": "cert:api-tls@abc123"})
    params = obj["spec"]["parameters"]
    assert params["keyvaultName"] == "payments-kv"
    assert params["clientID"] == CLIENT_ID
    assert params["tenantID"] == TENANT_ID and "tenantId" not in params
    assert params["usePodIdentity"] == "false"
    assert params["useVMManagedIdentity"] == "false"
    view = provider_view.read(params)  # as the Azure provider reads it
    assert [(o.object_name, o.object_alias, o.object_type, o.object_version) for o in view.objects] == [
        ("db-password", "db-password", "secret", ""),
        ("api-tls", "tls.pem", "cert", "abc123"),
    ]
    assert (view.identity_mode, view.client_id, view.tenant_id) == ("workload", CLIENT_ID, TENANT_ID)
    assert "secretObjects" not in obj["spec"]


def test_objects_parameter_is_what_the_azure_provider_parses() -> None:
    obj = build({K + "secret-a": "a"})
    doc = yaml.safe_load(obj["spec"]["parameters"]["objects"])
    assert isinstance(doc["array"], list) and all(isinstance(item, str) for item in doc["array"])
    assert yaml.safe_load(doc["array"][0]) == {
        "objectName": "a",
        "objectAlias": "a",
        "objectType": "secret",
        "objectVersion": "",
    }


def test_metadata_labels_owner_and_synced_secret() -> None:
    obj = build({K + "secret-db": "db", K + "secret-other": "other", K + "env-DB": "db"})
    meta = obj["metadata"]
    assert meta["name"].startswith("kvinject-") and len(meta["name"]) == len("kvinject-") + 16
    assert meta["namespace"] == "payments"
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "kvinject"}
    assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "ServiceAccount", "name": "api", "uid": "uid-1"}]
    assert obj["spec"]["secretObjects"] == [
        {
            "secretName": meta["name"],
            "type": "Opaque",
            "labels": {"app.kubernetes.io/managed-by": "kvinject"},
            "data": [{"objectName": "db", "key": "db"}],
        }
    ]


BASE = {K + "secret-db": "db"}


@pytest.mark.parametrize(
    ("annotations", "account", "namespace"),
    [
        ({K + "secret-db": "db2"}, SA, "payments"),
        ({K + "secret-db": "db@abc"}, SA, "payments"),
        ({K + "secret-db": "cert:db"}, SA, "payments"),
        ({K + "secret-d": "db"}, SA, "payments"),
        ({**BASE, K + "env-DB": "db"}, SA, "payments"),
        (BASE, ServiceAccount("payments", "api", "uid-2", CLIENT_ID, TENANT_ID), "payments"),
        (BASE, ServiceAccount("payments", "other", "uid-1", CLIENT_ID, TENANT_ID), "payments"),
        (BASE, SA, "billing"),
        ({K + "secret-db": "other-kv/db"}, SA, "payments"),
    ],
    ids=["object", "version", "type", "alias", "env", "owner-uid", "owner-name", "namespace", "vault"],
)
def test_name_changes_with_anything_that_goes_into_it(
    annotations: dict, account: ServiceAccount, namespace: str
) -> None:
    assert build(annotations, account, namespace)["metadata"]["name"] != build(BASE)["metadata"]["name"]


def test_name_is_stable_and_independent_of_annotation_order() -> None:
    a = build({K + "secret-a": "a", K + "secret-b": "b"})
    b = build({K + "secret-b": "b", K + "secret-a": "a"})
    assert a == b


@pytest.mark.parametrize(
    "text", ["array: nope", "array:\n  - |\n    objectType: secret\n"], ids=["not-list", "no-name"]
)
def test_unreadable_objects_are_problems(text: str) -> None:
    found = SecretProviderClass(
        "payments",
        "c",
        "azure",
        {"clientID": CLIENT_ID, "tenantID": TENANT_ID, "keyvaultName": "kv1", "objects": text},
        [],
        {},
    )
    refs, problems = classes.declared_objects(found, CLIENT_ID)
    assert refs == [] and len(problems) == 1 and "cannot be judged as the Azure provider reads it" in problems[0]
