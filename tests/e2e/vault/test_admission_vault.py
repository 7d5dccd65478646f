"""Admission of store-vault pods on the real control plane, against a real Vault's roles mirrored in policies.

Each case creates a pod through the apiserver, so the shipped mutating and validating webhooks both run; the
messages are the ones the README's Vault section quotes.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.e2e.vault.site import Site
from tests.harness import MANIFESTS, K, apply_docs, create, get_json, pick, wait_for
from tests.harness.vault import access_policy
from webhook.names import EVENT_WOULD_DENY

pytestmark = pytest.mark.e2e


def init_env(stored: dict[str, Any]) -> dict[str, str]:
    init = next(c for c in stored["spec"]["initContainers"] if c["name"] == "kvinject-fetch")
    return {e["name"]: e.get("value", "") for e in init.get("env") or []}


@pytest.mark.parametrize("mode", ["init", "csi"])
def test_a_granted_path_is_admitted(site: Site, mode: str) -> None:
    annotations = {K + "mode": mode, K + "secret-db-password": site.ref("db", "password")}
    if mode == "csi":
        annotations[K + "env-DB_USER"] = site.ref("db", "username")
    stored = create(site.cp, site.pod(annotations))
    assert stored["metadata"]["annotations"][K + "status"] == "injected"
    if mode == "init":
        env = init_env(stored)
        assert env["VAULT_ADDR"] == site.vault.url
        assert env["KVINJECT_HASHICORP_VAULT_ROLE"] == site.role
        assert env["KVINJECT_HASHICORP_VAULT_AUTH_MOUNT"] == "kubernetes"
        return
    # The generated class is the Vault CSI provider's shape, and the apiserver stored it as kvinject wrote it.
    (generated,) = [
        c
        for c in get_json(site.cp, "secretproviderclasses", "-n", site.namespace)["items"]
        if c["spec"]["provider"] == "vault"
    ]
    params = generated["spec"]["parameters"]
    assert params["roleName"] == site.role
    assert params["vaultAddress"] == site.vault.url
    assert params["vaultKubernetesMountPath"] == "kubernetes"
    objects = yaml.safe_load(params["objects"])
    assert {(o["secretPath"], o["secretKey"]) for o in objects} == {
        (f"secret/data/{site.namespace}/db", "password"),
        (f"secret/data/{site.namespace}/db", "username"),
    }
    assert "vaultSkipTLSVerify" not in params
    env = stored["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == generated["metadata"]["name"]


def denial(site: Site, pod: dict[str, Any]) -> str:
    result = create(site.cp, pod, check=False)
    assert result.returncode != 0, result.stdout
    assert "denied the request" in result.stderr
    return str(result.stderr)


def test_a_path_the_policy_does_not_grant_is_denied(site: Site) -> None:
    message = denial(site, site.pod({K + "secret-admin": site.ref("admin", "password")}))
    assert (
        f"role {site.role} of ServiceAccount {site.namespace}/api may not read {site.ref('admin', 'password')};"
        f" it may read secret/{site.namespace}/audit: *; secret/{site.namespace}/db: password, username" in message
    )


def test_a_key_the_policy_does_not_grant_is_denied(site: Site) -> None:
    message = denial(site, site.pod({K + "secret-db": site.ref("db", "api-key")}))
    assert f"may not read {site.ref('db', 'api-key')}" in message


def test_a_service_account_not_bound_to_the_role_is_denied(site: Site) -> None:
    message = denial(site, site.pod({K + "secret-db": site.ref("db", "password")}, account="intruder"))
    assert (
        f"ServiceAccount {site.namespace}/intruder is not among the federatedServiceAccounts (the role's bound"
        f" ServiceAccounts) of SecretAccessPolicies vault-{site.namespace} for role {site.role}" in message
    )


def test_a_service_account_without_a_role_is_told_how_to_name_one(site: Site) -> None:
    site.cp.kubectl("create", "serviceaccount", "plain", "-n", site.namespace)
    message = denial(site, site.pod({K + "secret-db": site.ref("db", "password")}, account="plain"))
    assert (
        f"ServiceAccount {site.namespace}/plain has no vault.kvinject.io/role annotation: run kubectl annotate"
        f" serviceaccount -n {site.namespace} plain vault.kvinject.io/role=<the Vault Kubernetes-auth role bound to"
        " it>, or set kvinject.io/vault-role on the pod" in message
    )


def test_a_pod_role_no_policy_binds_to_its_service_account_is_denied(site: Site) -> None:
    # The pod may name a role, but only a policy for that role listing its ServiceAccount admits it.
    pod = site.pod({K + "secret-db": site.ref("db", "password"), K + "vault-role": "platform-admin"})
    message = denial(site, pod)
    assert "no SecretAccessPolicy grants role platform-admin" in message


def test_a_pod_mixing_stores_is_denied_listing_every_ref(site: Site) -> None:
    pod = site.pod({K + "secret-db": "payments-kv/db-password", K + "secret-ok": site.ref("db", "password")})
    message = denial(site, pod)
    assert (
        "kvinject.io/secret-db: 'payments-kv/db-password' is not a Vault ref: write <mount>/<path>#<key>,"
        " e.g. secret/payments/db#password" in message
    )


def test_an_azure_pod_cannot_name_a_vault_class(site: Site) -> None:
    apply_docs(site.cp, [hand_written_class(site, site.role)])
    pod = site.pod({K + "provider-class": "handmade"})
    del pod["metadata"]["annotations"][K + "store"]
    message = denial(site, pod)
    assert "SecretProviderClass handmade named by kvinject.io/provider-class has provider 'vault'" in message


def hand_written_class(site: Site, role: str, path: str = "db") -> dict[str, Any]:
    objects = f'- objectName: "db"\n  secretPath: "secret/data/{site.namespace}/{path}"\n  secretKey: "password"\n'
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "handmade", "namespace": site.namespace},
        "spec": {
            "provider": "vault",
            "parameters": {"roleName": role, "vaultAddress": site.vault.url, "objects": objects},
        },
    }


def csi_volume() -> dict[str, Any]:
    return {
        "name": "secrets",
        "csi": {
            "driver": "secrets-store.csi.k8s.io",
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": "handmade"},
        },
    }


@pytest.mark.parametrize(
    ("role", "path", "message"),
    [
        ("{role}", "db", None),
        ("other-role", "db", "logs in as role 'other-role', not {role}"),
        ("{role}", "admin", "may not read secret/{ns}/admin#password"),
    ],
    ids=["own-role-granted", "other-role", "ungranted-path"],
)
def test_hand_written_vault_classes_are_judged_as_the_vault_provider_reads_them(
    site: Site, role: str, path: str, message: str | None
) -> None:
    apply_docs(site.cp, [hand_written_class(site, role.format(role=site.role), path)])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "manual-", "namespace": site.namespace},
        "spec": {
            "serviceAccountName": "api",
            "containers": [{"name": "app", "image": "a:1"}],
            "volumes": [csi_volume()],
        },
    }
    if message is None:
        assert create(site.cp, pod)["metadata"]["name"].startswith("manual-")
        return
    assert message.format(ns=site.namespace, role=site.role) in denial(site, pod)


@pytest.mark.parametrize(("role", "message"), [("{role}", None), ("other-role", "logs in as role 'other-role'")])
def test_a_vault_pod_may_name_a_vault_class_that_reads_as_its_role(site: Site, role: str, message: str | None) -> None:
    apply_docs(site.cp, [hand_written_class(site, role.format(role=site.role))])
    pod = site.pod({K + "provider-class": "handmade"})
    if message is None:
        assert create(site.cp, pod)["metadata"]["annotations"][K + "status"] == "injected"
    else:
        assert message in denial(site, pod)


# -- Live verification: Vault itself is asked, as the pod's ServiceAccount, through the apiserver's TokenRequest --


@pytest.fixture
def live(site: Site) -> Site:
    """The site's kvinject with live verification on: the overlay's ClusterRole (TokenRequest) and the policy that
    narrows its tokens to Entra's and Vault's audiences; kvinject trusts exactly the Vault's CA."""
    overlay = site.cp.kubectl("kustomize", str(MANIFESTS / "overlays" / "live-verification")).stdout
    kinds = ("ClusterRole", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    apply_docs(site.cp, pick([d for d in yaml.safe_load_all(overlay) if d], *kinds))
    site.start(
        KVINJECT_LIVE_VERIFY="true",
        KVINJECT_LIVE_BUDGET_SECONDS="5",
        KVINJECT_HASHICORP_VAULT_CA_FILE=str(site.vault.ca_file),
    )
    return site


def test_live_a_path_vault_grants_is_admitted(live: Site) -> None:
    stored = create(live.cp, live.pod({K + "secret-db": live.ref("db", "password")}))
    assert stored["metadata"]["annotations"][K + "status"] == "injected"


def test_live_a_path_only_the_policy_grants_is_denied_by_vault(live: Site) -> None:
    message = denial(live, live.pod({K + "secret-audit": live.ref("audit", "password")}))
    assert f"Vault says role {live.role} may not read secret/{live.namespace}/audit" in message


def test_live_a_service_account_the_role_does_not_bind_is_denied_with_vaults_message(live: Site) -> None:
    # kvinject's policy lists it too (a policy out of step with the role): Vault has the last word.
    extra = access_policy(
        f"vault-intruder-{live.namespace}",
        live.role,
        [(live.namespace, "intruder")],
        {f"secret/{live.namespace}/db": ["*"]},
    )
    apply_docs(live.cp, [extra])
    try:
        message = denial(live, live.pod({K + "secret-db": live.ref("db", "password")}, account="intruder"))
    finally:
        live.cp.kubectl("delete", "secretaccesspolicy", extra["metadata"]["name"])
    assert "service account name not authorized" in message


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_live_vault_down_follows_the_fail_setting(live: Site, fail_open: bool) -> None:
    if fail_open:
        live.start(
            KVINJECT_LIVE_VERIFY="true",
            KVINJECT_LIVE_BUDGET_SECONDS="5",
            KVINJECT_HASHICORP_VAULT_CA_FILE=str(live.vault.ca_file),
            KVINJECT_LIVE_FAIL_OPEN="true",
        )
    refused = f"could not reach Vault at {live.vault.url}: connection refused"
    live.vault.stop()
    try:
        result = create(live.cp, live.pod({K + "secret-db": live.ref("db", "password")}), check=False)
    finally:
        live.vault.start()
    if fail_open:
        assert result.returncode == 0, result.stderr
        assert f"kvinject could not verify access with Vault and admitted the pod: {refused}" in result.stderr
    else:
        assert result.returncode != 0
        assert f"could not verify access with Vault: {refused}" in result.stderr


def test_a_vault_class_written_to_skip_tls_verification_is_refused(site: Site) -> None:
    doc = hand_written_class(site, site.role)
    doc["spec"]["parameters"]["vaultSkipTLSVerify"] = "true"
    refused = site.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert refused.returncode != 0
    assert 'admission webhook "validate-classes-others.kvinject.io" denied the request' in refused.stderr
    assert "vaultSkipTLSVerify" in refused.stderr


def test_a_vault_class_a_running_kvinject_pod_reads_cannot_be_turned_to_another_role(site: Site) -> None:
    apply_docs(site.cp, [hand_written_class(site, site.role)])
    create(site.cp, site.pod({K + "provider-class": "handmade"}))
    changed = hand_written_class(site, "platform-admin")
    refused = site.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(changed), check=False)
    assert refused.returncode != 0, refused.stdout
    assert "logs in as role 'platform-admin'" in refused.stderr


@pytest.mark.parametrize("others", ["enforce", "audit"])
def test_a_vault_class_a_hand_written_pod_mounts_is_judged_for_that_pod(site: Site, others: str) -> None:
    """A pod that is not kvinject's, held Pending by schedulingGates, mounts a class granted to its role; the driver
    would read the class only at the pod's first mount. Turning the class to a path the policy does not grant the
    pod's ServiceAccount is judged for that pod under KVINJECT_NOT_OPTED_IN_ENFORCEMENT: denied under enforce, a
    would-deny (event on the class) under audit."""
    site.start(KVINJECT_NOT_OPTED_IN_ENFORCEMENT=others)
    apply_docs(site.cp, [hand_written_class(site, site.role)])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "held-", "namespace": site.namespace},
        "spec": {
            "serviceAccountName": "api",
            "schedulingGates": [{"name": "example.com/hold"}],
            "containers": [{"name": "app", "image": "a:1"}],
            "volumes": [csi_volume()],
        },
    }
    name = create(site.cp, pod)["metadata"]["name"]
    changed = hand_written_class(site, site.role, "admin")
    result = site.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(changed), check=False)
    objects = get_json(site.cp, "secretproviderclass", "handmade", "-n", site.namespace)["spec"]["parameters"]
    said = f"SecretProviderClass handmade is mounted by pod {name} (ServiceAccount {site.namespace}/api)"
    refused = f"may not read secret/{site.namespace}/admin#password"
    if others == "enforce":
        assert result.returncode != 0, result.stdout
        assert 'admission webhook "validate-classes-others.kvinject.io" denied the request' in result.stderr
        assert said in result.stderr and refused in result.stderr, result.stderr
        assert f"secret/data/{site.namespace}/db" in objects["objects"]
        return
    assert result.returncode == 0, result.stderr
    assert f"secret/data/{site.namespace}/admin" in objects["objects"]

    def on_the_class() -> dict[str, Any] | None:
        found = get_json(site.cp, "events", "-n", site.namespace)["items"]
        return next(
            (
                e
                for e in found
                if e.get("reason") == EVENT_WOULD_DENY
                and e["involvedObject"]["kind"] == "SecretProviderClass"
                and e["involvedObject"]["name"] == "handmade"
            ),
            None,
        )

    event = wait_for(on_the_class, "a KvinjectWouldDeny event on the class")
    assert said in event["message"] and refused in event["message"], event["message"]
