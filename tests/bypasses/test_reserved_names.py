"""The shipped ValidatingAdmissionPolicy on the real apiserver: generated SecretProviderClasses (named kvinject-*
or labelled app.kubernetes.io/managed-by: kvinject) are kvinject's alone.

The attacker is alice (tenant.py): `edit` does not cover SecretProviderClasses (a CRD with no aggregated role), so a
Role gives her every verb on them in her namespace: what refuses her is the policy, never RBAC."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.bypasses.tenant import (
    ALICE,
    KVINJECT,
    MANAGED_BY,
    RESOURCE,
    as_user,
    assert_allowed,
    grant_all_on_provider_classes,
    new_namespace,
    provider_class,
    refused,
    wait_for_policy,
)
from tests.harness import HANG_GUARD, ControlPlane, KvinjectServer, get_json, provider_classes, wait_for

pytestmark = pytest.mark.e2e


def can(cp: ControlPlane, user: str, verb: str, namespace: str) -> bool:
    return as_user(cp, user, "auth", "can-i", verb, RESOURCE, "-n", namespace).stdout.strip() == "yes"


@pytest.fixture
def tenant(control_plane: ControlPlane, kvinject: KvinjectServer) -> Iterator[str]:
    """alice's namespace; the shipped base (policy included) was applied by the `kvinject` fixture."""
    ns = new_namespace(control_plane, "tenant")
    wait_for_policy(control_plane, ns)
    yield ns
    control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def generated(cp: ControlPlane, namespace: str, name: str = "kvinject-00000000000000aa", **meta: Any) -> dict[str, Any]:
    """A class as kvinject makes it, created by kvinject's ServiceAccount."""
    doc = provider_class(namespace, name, MANAGED_BY, **meta)
    assert_allowed(as_user(cp, KVINJECT, "create", doc=doc))
    result: dict[str, Any] = get_json(cp, RESOURCE, name, "-n", namespace)
    return result


def test_edit_does_not_cover_provider_classes_so_the_test_grants_them(control_plane: ControlPlane, tenant: str) -> None:
    control_plane.kubectl("delete", "rolebinding", "alice-spc", "-n", tenant)
    assert not can(control_plane, ALICE, "create", tenant)
    grant_all_on_provider_classes(control_plane, tenant, "alice-spc", {"kind": "User", "name": ALICE})
    assert all(can(control_plane, ALICE, verb, tenant) for verb in ("create", "update", "patch", "delete"))


@pytest.mark.parametrize(
    ("name", "labels", "meta"),
    [
        ("kvinject-0123456789abcdef", {}, {}),
        ("payments-spc", MANAGED_BY, {}),
        ("", {}, {"generateName": "kvinject-"}),
    ],
    ids=["reserved-name", "managed-by-label", "reserved-generate-name"],
)
def test_tenant_cannot_create_a_class_that_looks_generated(
    control_plane: ControlPlane, tenant: str, name: str, labels: dict[str, str], meta: dict[str, str]
) -> None:
    doc = provider_class(tenant, name, labels, **meta)
    if not name:
        del doc["metadata"]["name"]
    result = as_user(control_plane, ALICE, "create", doc=doc)
    assert refused(result), result.stderr
    assert provider_classes(control_plane, tenant) == []


def test_tenant_cannot_change_remove_the_label_of_or_delete_a_generated_class(
    control_plane: ControlPlane, tenant: str
) -> None:
    cp = control_plane
    original = generated(cp, tenant)
    name = original["metadata"]["name"]
    rewritten = provider_class(tenant, name, MANAGED_BY)
    rewritten["spec"]["parameters"]["keyvaultName"] = "attacker-kv"
    attempts = {
        "replace the spec": as_user(cp, ALICE, "replace", doc=rewritten),
        "patch the spec": as_user(
            cp, ALICE, "patch", RESOURCE, name, "-n", tenant, "--type=merge",
            "-p", '{"spec":{"parameters":{"keyvaultName":"attacker-kv"}}}',
        ),
        "add a label": as_user(cp, ALICE, "label", RESOURCE, name, "-n", tenant, "team=payments"),
        "remove the managed-by label": as_user(
            cp, ALICE, "label", RESOURCE, name, "-n", tenant, "app.kubernetes.io/managed-by-"
        ),
        "delete it": as_user(cp, ALICE, "delete", RESOURCE, name, "-n", tenant),
        "delete every class": as_user(cp, ALICE, "delete", RESOURCE, "--all", "-n", tenant),
    }  # fmt: skip
    for what, result in attempts.items():
        assert refused(result), f"{what}: {result.returncode} {result.stderr}"
    after = get_json(cp, RESOURCE, name, "-n", tenant)
    assert after["metadata"]["resourceVersion"] == original["metadata"]["resourceVersion"]
    assert after["metadata"]["labels"] == original["metadata"]["labels"] and after["spec"] == original["spec"]


def test_tenant_cannot_give_an_own_class_the_managed_by_label(control_plane: ControlPlane, tenant: str) -> None:
    assert_allowed(as_user(control_plane, ALICE, "create", doc=provider_class(tenant, "payments-spc")))
    result = as_user(
        control_plane, ALICE, "label", RESOURCE, "payments-spc", "-n", tenant, "app.kubernetes.io/managed-by=kvinject"
    )
    assert refused(result), result.stderr
    assert "labels" not in get_json(control_plane, RESOURCE, "payments-spc", "-n", tenant)["metadata"]


def test_even_the_cluster_admin_cannot_rewrite_a_generated_class(control_plane: ControlPlane, tenant: str) -> None:
    name = generated(control_plane, tenant)["metadata"]["name"]
    result = control_plane.kubectl("label", RESOURCE, name, "-n", tenant, "team=payments", check=False)
    assert refused(result), result.stderr


def test_tenant_manages_own_classes(control_plane: ControlPlane, tenant: str) -> None:
    cp = control_plane
    assert_allowed(as_user(cp, ALICE, "create", doc=provider_class(tenant, "payments-spc")))
    changed = provider_class(tenant, "payments-spc", {"team": "payments"})
    changed["spec"]["parameters"]["keyvaultName"] = "payments-kv-2"
    assert_allowed(as_user(cp, ALICE, "replace", doc=changed))
    assert get_json(cp, RESOURCE, "payments-spc", "-n", tenant)["spec"]["parameters"]["keyvaultName"] == "payments-kv-2"
    assert_allowed(as_user(cp, ALICE, "delete", RESOURCE, "payments-spc", "-n", tenant))
    assert provider_classes(cp, tenant) == []


def test_kvinject_creates_changes_and_deletes_generated_classes(control_plane: ControlPlane, tenant: str) -> None:
    cp = control_plane
    name = generated(cp, tenant, "kvinject-0123456789abcdef")["metadata"]["name"]
    assert_allowed(
        as_user(
            cp, KVINJECT, "patch", RESOURCE, name, "-n", tenant, "--type=merge", "-p", '{"spec":{"provider":"azure"}}'
        )
    )
    assert_allowed(as_user(cp, KVINJECT, "label", RESOURCE, name, "-n", tenant, "app.kubernetes.io/managed-by-"))
    assert_allowed(as_user(cp, KVINJECT, "delete", RESOURCE, name, "-n", tenant))
    assert provider_classes(cp, tenant) == []


def test_garbage_collector_deletes_a_generated_class_with_its_service_account(
    control_plane: ControlPlane, tenant: str
) -> None:
    cp = control_plane
    cp.kubectl("create", "serviceaccount", "api", "-n", tenant)
    owner = get_json(cp, "serviceaccount", "api", "-n", tenant)["metadata"]
    reference = {"apiVersion": "v1", "kind": "ServiceAccount", "name": "api", "uid": owner["uid"]}
    name = generated(cp, tenant, ownerReferences=[reference])["metadata"]["name"]
    cp.kubectl("delete", "serviceaccount", "api", "-n", tenant)
    wait_for(
        lambda: name not in {c["metadata"]["name"] for c in provider_classes(cp, tenant)},
        "the garbage collector to delete the generated class",
        timeout=HANG_GUARD,
    )


def test_namespace_deletion_deletes_generated_classes(control_plane: ControlPlane, kvinject: KvinjectServer) -> None:
    cp = control_plane
    ns = new_namespace(cp, "doomed")
    wait_for_policy(cp, ns)
    generated(cp, ns)
    cp.kubectl("delete", "namespace", ns, "--wait=false")

    def gone() -> bool:
        return cp.kubectl("get", "namespace", ns, check=False).returncode != 0

    wait_for(gone, f"namespace {ns} (holding a generated class) to be deleted", timeout=HANG_GUARD)
