"""The policy decision for store vault: a Kubernetes-auth role on an auth mount, allow entries by path glob and key."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.contract import ALL_KEYS, ObjectRef, parse_vault_ref
from webhook.identity import Identity
from webhook.model import AccessPolicy, VaultRule
from webhook.policy import Reason, decide

WHO = Identity("payments", "kubernetes", "vault")


def policy(
    name: str,
    allow: list[dict[str, Any]],
    accounts: list[tuple[str, str]] | None = None,
    role: str = "payments",
    mount: str = "kubernetes",
) -> AccessPolicy:
    return AccessPolicy.from_object(
        {
            "kind": "SecretAccessPolicy",
            "metadata": {"name": name},
            "spec": {
                "identity": {"vault": {"authMount": mount, "role": role}},
                "federatedServiceAccounts": [{"namespace": n, "name": a} for n, a in accounts or [("payments", "api")]],
                "allow": allow,
            },
        }
    )


def refs(*texts: str) -> list[ObjectRef]:
    out = []
    for t in texts:
        ref, problems = parse_vault_ref(t)
        assert ref is not None, problems
        out.append(ref)
    return out


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"identity": {"vault": {"authMount": "auth/kubernetes/", "role": "Payments"}}, "allow": [{"path": "kv/*"}]},
            ("payments", "kubernetes", (VaultRule("kv/*", ("*",)),)),
        ),
        (
            {
                "identity": {"vault": {"authMount": "k8s-east", "role": "api"}},
                "allow": [{"path": "secret/payments/*", "keys": ["password", "user*"]}],
            },
            ("api", "k8s-east", (VaultRule("secret/payments/*", ("password", "user*")),)),
        ),
    ],
    ids=["mount-normalized-role-lowered-keys-default-all", "keys-listed"],
)
def test_vault_policy_from_object(spec: dict[str, Any], expected: tuple[str, str, tuple[VaultRule, ...]]) -> None:
    found = AccessPolicy.from_object({"metadata": {"name": "p"}, "spec": spec | {"federatedServiceAccounts": []}})
    assert (found.client_id, found.tenant_id, found.rules, found.store) == (*expected, "vault")


ALLOW_DB = [{"path": "secret/payments/*", "keys": ["password", "username"]}]


@pytest.mark.parametrize(
    ("wanted", "policies", "reason", "message"),
    [
        (refs("secret/payments/db#password"), [policy("p", ALLOW_DB)], Reason.ALLOWED, ""),
        (refs("secret/payments/eu/db#username"), [policy("p", ALLOW_DB)], Reason.ALLOWED, ""),
        (refs("secret/payments/db#password"), [policy("p", [{"path": "secret/payments/db"}])], Reason.ALLOWED, ""),
        (
            refs("secret/payments/db#password", "secret/payments/db#api-key"),
            [policy("p", ALLOW_DB)],
            Reason.OBJECT_NOT_ALLOWED,
            "role payments of ServiceAccount payments/api may not read secret/payments/db#api-key; it may read"
            " secret/payments/*: password, username (SecretAccessPolicies considered: p)",
        ),
        (
            refs("secret/billing/db#password", "kv/payments/db#password"),
            [policy("p", ALLOW_DB), policy("q", [{"path": "secret/payments/db", "keys": ["*"]}])],
            Reason.OBJECT_NOT_ALLOWED,
            "role payments of ServiceAccount payments/api may not read secret/billing/db#password,"
            " kv/payments/db#password; it may read secret/payments/*: password, username; secret/payments/db: *"
            " (SecretAccessPolicies considered: p, q)",
        ),
        (
            # Vault paths are case-sensitive, unlike Key Vault names.
            refs("secret/Payments/db#password"),
            [policy("p", ALLOW_DB)],
            Reason.OBJECT_NOT_ALLOWED,
            "role payments of ServiceAccount payments/api may not read secret/Payments/db#password; it may read"
            " secret/payments/*: password, username (SecretAccessPolicies considered: p)",
        ),
        (
            refs("secret/payments/db#password"),
            [],
            Reason.NO_POLICY,
            "no SecretAccessPolicy grants role payments, the role of ServiceAccount payments/api: ask the platform"
            " team for a SecretAccessPolicy that lists payments/api and the objects",
        ),
        (
            refs("secret/payments/db#password"),
            [policy("p", ALLOW_DB, mount="k8s-east")],
            Reason.TENANT_MISMATCH,
            "ServiceAccount payments/api uses role payments in auth mount kubernetes, but SecretAccessPolicies p"
            " bind that role in auth mount k8s-east",
        ),
        (
            refs("secret/payments/db#password"),
            [policy("p", ALLOW_DB, accounts=[("payments", "worker")])],
            Reason.NOT_FEDERATED,
            "ServiceAccount payments/api is not among the federatedServiceAccounts (the role's bound"
            " ServiceAccounts) of SecretAccessPolicies p for role payments",
        ),
    ],
    ids=[
        "allowed",
        "glob-crosses-segments",
        "keys-default-to-all",
        "one-key-not-granted",
        "paths-not-granted-merged-grants",
        "case-sensitive-path",
        "no-policy",
        "other-auth-mount",
        "not-bound",
    ],
)
def test_decide_vault(wanted: list[ObjectRef], policies: list[AccessPolicy], reason: Reason, message: str) -> None:
    decision = decide(wanted, "payments", "api", WHO, policies)
    assert (decision.reason, decision.message) == (reason, message)
    assert decision.allowed is (reason is Reason.ALLOWED)


@pytest.mark.parametrize(
    ("keys", "allowed"),
    [(["*"], True), (["?"], False), (["pass*"], False)],
    ids=["star-grants-all-keys", "question-mark-does-not", "prefix-does-not"],
)
def test_reading_every_key_needs_the_star(keys: list[str], allowed: bool) -> None:
    # A hand-written class without secretKey reads the whole secret: only a policy granting every key allows it.
    whole = ObjectRef("secret", "payments/db", key=ALL_KEYS)
    decision = decide([whole], "payments", "api", WHO, [policy("p", [{"path": "secret/payments/db", "keys": keys}])])
    assert decision.allowed is allowed


def test_policies_of_the_other_store_are_not_this_identitys() -> None:
    # An Azure policy and a Vault policy may share the index key; each binds only its own store's identity.
    azure = AccessPolicy.from_object(
        {
            "metadata": {"name": "azure"},
            "spec": {
                "identity": {"clientId": "payments", "tenantId": "kubernetes"},
                "federatedServiceAccounts": [{"namespace": "payments", "name": "api"}],
                "allow": [{"vault": "secret", "objects": ["*"]}],
            },
        }
    )
    decision = decide(refs("secret/payments/db#password"), "payments", "api", WHO, [azure])
    assert decision.reason is Reason.NO_POLICY
    assert (
        decide(
            refs("secret/payments/db#password"),
            "payments",
            "api",
            Identity("payments", "kubernetes"),
            [policy("v", ALLOW_DB)],
        ).reason
        is Reason.NO_POLICY
    )
