"""Who may read what: a pure decision over SecretAccessPolicies.

A request is allowed only if every requested object is allowed by some policy
whose identity is the ServiceAccount's client id (and tenant) and which lists
that ServiceAccount among its federated ServiceAccounts. The caller passes only
the policies of that client id (an index lookup), so the cost does not grow
with the number of policies in the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase

from webhook.contract import ALL_KEYS, ObjectRef
from webhook.identity import Identity
from webhook.model import AccessPolicy, Pattern, Rule, VaultRule
from webhook.names import ENFORCEMENT_LABEL


class Enforcement(StrEnum):
    ENFORCE = "enforce"  # deny
    WARN = "warn"  # allow, with warnings and audit annotations
    AUDIT = "audit"  # allow, audit annotations only


class Reason(StrEnum):
    ALLOWED = "allowed"
    NO_POLICY = "no-policy"
    TENANT_MISMATCH = "tenant-mismatch"
    NOT_FEDERATED = "not-federated"
    OBJECT_NOT_ALLOWED = "object-not-allowed"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Reason
    message: str = ""
    denied: tuple[ObjectRef, ...] = ()
    allowed_by: tuple[str, ...] = ()  # policy names that granted the objects
    considered: tuple[str, ...] = ()
    grants: str = field(default="")  # what the identity may read, for messages


def matches(pattern: Pattern, ref: ObjectRef) -> bool:
    return (pattern.type is None or pattern.type == ref.type.value) and fnmatchcase(ref.name.lower(), pattern.glob)


def key_matches(glob: str, key: str) -> bool:
    """A Vault key glob over a ref's key; a class reading every key of a secret needs the glob `*` itself."""
    return glob == ALL_KEYS if key == ALL_KEYS else fnmatchcase(key, glob)


def rule_grants(rule: Rule | VaultRule, ref: ObjectRef) -> bool:
    """Whether one allow entry covers a ref of its own store (Key Vault: vault and name; Vault: path and key)."""
    if isinstance(rule, VaultRule):
        return (
            bool(ref.key)
            and fnmatchcase(f"{ref.vault}/{ref.name}", rule.path)
            and any(key_matches(k, ref.key) for k in rule.keys)
        )
    return not ref.key and rule.vault == ref.vault.lower() and any(matches(pat, ref) for pat in rule.patterns)


def _scope(rule: Rule | VaultRule) -> tuple[str, list[str]]:
    if isinstance(rule, VaultRule):
        return rule.path, list(rule.keys)
    return rule.vault, [str(pat) for pat in rule.patterns]


def grants_of(policies: Iterable[AccessPolicy]) -> str:
    """`vault: a, cert:b; other: c-*` (Vault: `secret/payments/*: password, username`), merged over policies, in a
    stable order."""
    by_scope: dict[str, list[str]] = {}
    for p in policies:
        for rule in p.rules:
            scope, items = _scope(rule)
            names = by_scope.setdefault(scope, [])
            names.extend(item for item in items if item not in names)
    return "; ".join(f"{scope}: {', '.join(names)}" for scope, names in sorted(by_scope.items())) or "nothing"


def decide(
    objects: Sequence[ObjectRef], namespace: str, account: str, who: Identity, candidates: Iterable[AccessPolicy]
) -> Decision:
    # Policies of another store may share the index key (a Vault role named like a client id): not this identity's.
    policies = sorted((p for p in candidates if p.store == who.store), key=lambda p: p.name)
    considered = tuple(p.name for p in policies)
    sa = f"ServiceAccount {namespace}/{account}"
    named = f"{who.kind} {who.client_id}"
    if not policies:
        return Decision(
            False,
            Reason.NO_POLICY,
            f"no SecretAccessPolicy grants {named}, the {who.principal_word} of {sa}: ask the platform team"
            f" for a SecretAccessPolicy that lists {namespace}/{account} and the objects",
            denied=tuple(objects),
        )
    same_tenant = [p for p in policies if p.tenant_id == who.tenant_id]
    if not same_tenant:
        tenants = ", ".join(sorted({p.tenant_id for p in policies}))
        return Decision(
            False,
            Reason.TENANT_MISMATCH,
            f"{sa} uses {named} in {who.realm_word} {who.tenant_id}, but SecretAccessPolicies"
            f" {', '.join(considered)} bind that {who.principal_word} in {who.realm_word} {tenants}",
            denied=tuple(objects),
            considered=considered,
        )
    federated = [p for p in same_tenant if (namespace, account) in p.accounts]
    if not federated:
        return Decision(
            False,
            Reason.NOT_FEDERATED,
            f"{sa} is not among the {who.binding_word} of SecretAccessPolicies {', '.join(considered)} for {named}",
            denied=tuple(objects),
            considered=considered,
        )
    denied: list[ObjectRef] = []
    allowed_by: list[str] = []
    for ref in objects:
        granting = next((p.name for p in federated for rule in p.rules if rule_grants(rule, ref)), None)
        if granting is None:
            denied.append(ref)
        elif granting not in allowed_by:
            allowed_by.append(granting)
    grants = grants_of(federated)
    if denied:
        return Decision(
            False,
            Reason.OBJECT_NOT_ALLOWED,
            f"{named} of {sa} may not read {', '.join(str(r) for r in denied)};"
            f" it may read {grants} (SecretAccessPolicies considered: {', '.join(considered)})",
            denied=tuple(denied),
            allowed_by=tuple(allowed_by),
            considered=considered,
            grants=grants,
        )
    return Decision(True, Reason.ALLOWED, allowed_by=tuple(allowed_by), considered=considered, grants=grants)


# Strictest first: a namespace label may move down this list only where the server allows it.
STRICTNESS = (Enforcement.ENFORCE, Enforcement.WARN, Enforcement.AUDIT)


def enforcement_for(
    default: Enforcement,
    namespace_labels: dict[str, str] | None,
    may_loosen: bool = False,
) -> tuple[Enforcement, str | None]:
    """The namespace's override of the server setting.

    The label only tightens: a looser value takes effect only when `may_loosen` (the namespace is on the
    server's allowlist); otherwise, and for a bad value, the default stays, with a warning.
    """
    value = (namespace_labels or {}).get(ENFORCEMENT_LABEL)
    if value is None:
        return default, None
    try:
        wanted = Enforcement(value)
    except ValueError:
        return default, f"namespace label {ENFORCEMENT_LABEL}={value!r} is not enforce, warn or audit; using {default}"
    if STRICTNESS.index(wanted) > STRICTNESS.index(default) and not may_loosen:
        return default, (
            f"namespace label {ENFORCEMENT_LABEL}={wanted} is looser than the server's {default} and this namespace"
            " is not on the server's allowlist for that (KVINJECT_RELAXABLE_NAMESPACES); using"
            f" {default}"
        )
    return wanted, None
