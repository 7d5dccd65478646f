"""The policy decision: allow, each deny reason, globs, types, versions, several policies, tenants, modes."""

from __future__ import annotations

import pytest

from tests.harness import CLIENT_ID, TENANT_ID
from webhook.contract import ObjectRef, ObjectType, parse_ref
from webhook.identity import Identity
from webhook.model import AccessPolicy, Namespace
from webhook.policy import Enforcement, Reason, decide, enforcement_for

WHO = Identity(CLIENT_ID, TENANT_ID)
OTHER_TENANT = "00000000-0000-0000-0000-000000000001"


def policy(
    name: str,
    allow: dict[str, list[str]],
    accounts: list[tuple[str, str]] | None = None,
    client: str = CLIENT_ID,
    tenant: str = TENANT_ID,
) -> AccessPolicy:
    return AccessPolicy.from_object(
        {
            "kind": "SecretAccessPolicy",
            "metadata": {"name": name},
            "spec": {
                "identity": {"clientId": client, "tenantId": tenant},
                "federatedServiceAccounts": [{"namespace": n, "name": a} for n, a in accounts or [("payments", "api")]],
                "allow": [{"vault": v, "objects": o} for v, o in allow.items()],
            },
        }
    )


def refs(*texts: str) -> list[ObjectRef]:
    out = []
    for t in texts:
        ref, problems = parse_ref(t, None)
        assert ref is not None, problems
        out.append(ref)
    return out


PAYMENTS = policy("payments-api", {"payments-kv": ["db-password", "cert:api-tls"], "shared-kv": ["legacy-*"]})

CASES = [
    ("exact", [PAYMENTS], refs("payments-kv/db-password"), Reason.ALLOWED, ()),
    ("typed", [PAYMENTS], refs("cert:payments-kv/api-tls"), Reason.ALLOWED, ()),
    ("glob", [PAYMENTS], refs("shared-kv/legacy-token", "shared-kv/legacy-"), Reason.ALLOWED, ()),
    ("pinned-version-allowed-by-name", [PAYMENTS], refs("payments-kv/db-password@abc123"), Reason.ALLOWED, ()),
    ("case-insensitive-names", [PAYMENTS], refs("Payments-KV/DB-Password"), Reason.ALLOWED, ()),
    (
        "wrong-type",
        [PAYMENTS],
        refs("key:payments-kv/db-password"),
        Reason.OBJECT_NOT_ALLOWED,
        ("key:payments-kv/db-password",),
    ),
    (
        "untyped-pattern-means-secret",
        [PAYMENTS],
        refs("payments-kv/api-tls"),
        Reason.OBJECT_NOT_ALLOWED,
        ("payments-kv/api-tls",),
    ),
    (
        "glob-does-not-cross-vaults",
        [PAYMENTS],
        refs("payments-kv/legacy-token"),
        Reason.OBJECT_NOT_ALLOWED,
        ("payments-kv/legacy-token",),
    ),
    (
        "glob-anchored",
        [PAYMENTS],
        refs("shared-kv/old-legacy-token"),
        Reason.OBJECT_NOT_ALLOWED,
        ("shared-kv/old-legacy-token",),
    ),
    (
        "some-denied",
        [PAYMENTS],
        refs("payments-kv/db-password", "payments-kv/x", "shared-kv/y"),
        Reason.OBJECT_NOT_ALLOWED,
        ("payments-kv/x", "shared-kv/y"),
    ),
    (
        "any-type-pattern",
        [policy("p", {"kv-one": ["*:tls"]})],
        refs("cert:kv-one/tls", "key:kv-one/tls"),
        Reason.ALLOWED,
        (),
    ),
    (
        "union-of-policies",
        [PAYMENTS, policy("extra", {"payments-kv": ["x"]})],
        refs("payments-kv/db-password", "payments-kv/x"),
        Reason.ALLOWED,
        (),
    ),
    ("no-policy", [], refs("payments-kv/db-password"), Reason.NO_POLICY, ("payments-kv/db-password",)),
    (
        "tenant-mismatch",
        [policy("p", {"payments-kv": ["*"]}, tenant=OTHER_TENANT)],
        refs("payments-kv/a"),
        Reason.TENANT_MISMATCH,
        ("payments-kv/a",),
    ),
    (
        "not-federated",
        [policy("p", {"payments-kv": ["*"]}, accounts=[("payments", "worker")])],
        refs("payments-kv/a"),
        Reason.NOT_FEDERATED,
        ("payments-kv/a",),
    ),
    (
        "federated-in-other-namespace",
        [policy("p", {"payments-kv": ["*"]}, accounts=[("billing", "api")])],
        refs("payments-kv/a"),
        Reason.NOT_FEDERATED,
        ("payments-kv/a",),
    ),
    (
        "only-federated-policies-count",
        [PAYMENTS, policy("wide", {"payments-kv": ["*"]}, accounts=[("x", "y")])],
        refs("payments-kv/secret-of-x"),
        Reason.OBJECT_NOT_ALLOWED,
        ("payments-kv/secret-of-x",),
    ),
]


@pytest.mark.parametrize(("policies", "objects", "reason", "denied"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(
    policies: list[AccessPolicy], objects: list[ObjectRef], reason: Reason, denied: tuple[str, ...]
) -> None:
    decision = decide(objects, "payments", "api", WHO, policies)
    assert decision.reason is reason
    assert decision.allowed is (reason is Reason.ALLOWED)
    assert tuple(str(r) for r in decision.denied) == denied


def test_denial_message_has_everything_an_app_team_needs() -> None:
    decision = decide(
        refs("payments-kv/db-password", "payments-kv/other"),
        "payments",
        "api",
        WHO,
        [PAYMENTS, policy("second", {"payments-kv": ["queue-*"]})],
    )
    assert decision.message == (
        f"identity {CLIENT_ID} of ServiceAccount payments/api may not read payments-kv/other;"
        " it may read payments-kv: db-password, cert:api-tls, queue-*; shared-kv: legacy-*"
        " (SecretAccessPolicies considered: payments-api, second)"
    )
    assert decision.allowed_by == ("payments-api",)


def test_allowed_names_granting_policies() -> None:
    second = policy("second", {"shared-kv": ["legacy-*"]})
    decision = decide(refs("payments-kv/db-password", "shared-kv/legacy-a"), "payments", "api", WHO, [second, PAYMENTS])
    assert decision.allowed and decision.allowed_by == ("payments-api",)
    assert decision.considered == ("payments-api", "second")


def test_object_types_roundtrip_through_policy_patterns() -> None:
    for t in ObjectType:
        p = policy("p", {"kv-one": [f"{t.value}:o"]})
        assert decide([ObjectRef("kv-one", "o", t)], "payments", "api", WHO, [p]).allowed


@pytest.mark.parametrize(
    ("default", "label", "may_loosen", "expected", "warns"),
    [
        (Enforcement.ENFORCE, None, False, Enforcement.ENFORCE, False),
        (Enforcement.ENFORCE, "warn", False, Enforcement.ENFORCE, True),
        (Enforcement.ENFORCE, "audit", False, Enforcement.ENFORCE, True),
        (Enforcement.ENFORCE, "warn", True, Enforcement.WARN, False),
        (Enforcement.ENFORCE, "audit", True, Enforcement.AUDIT, False),
        (Enforcement.AUDIT, "enforce", False, Enforcement.ENFORCE, False),
        (Enforcement.AUDIT, "warn", False, Enforcement.WARN, False),
        (Enforcement.WARN, "audit", False, Enforcement.WARN, True),
        (Enforcement.WARN, "enforce", False, Enforcement.ENFORCE, False),
        (Enforcement.ENFORCE, "off", True, Enforcement.ENFORCE, True),
        (Enforcement.ENFORCE, "Audit", True, Enforcement.ENFORCE, True),
    ],
    ids=[
        "server-default",
        "warn-cannot-loosen",
        "audit-cannot-loosen",
        "warn-on-allowlist",
        "audit-on-allowlist",
        "tighten-audit-to-enforce",
        "tighten-audit-to-warn",
        "warn-to-audit-cannot-loosen",
        "tighten-warn-to-enforce",
        "bad-value-keeps-default",
        "case-matters",
    ],
)
def test_enforcement_override(
    default: Enforcement, label: str | None, may_loosen: bool, expected: Enforcement, warns: bool
) -> None:
    labels = {"kvinject.io/enforcement": label} if label else {}
    mode, warning = enforcement_for(default, Namespace("ns", labels=labels).labels, may_loosen)
    assert mode is expected and (warning is not None) is warns
