"""The annotation contract for kvinject.io/store: vault: the ref grammar, the store-wide rules, all errors at once."""

from __future__ import annotations

import json

import pytest

from webhook import contract, plan, providers
from webhook.contract import ContractError, EnvVar, Mode, Mounted, ObjectRef
from webhook.names import PREFIX

K = PREFIX
VAULT = {K + "store": "vault"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("secret/payments/db#password", ObjectRef("secret", "payments/db", key="password")),
        ("kv/app#api_key", ObjectRef("kv", "app", key="api_key")),
        ("  secret/a/b/c/d#k.1  ", ObjectRef("secret", "a/b/c/d", key="k.1")),
        ("secret/data#x", ObjectRef("secret", "data", key="x")),
        ("secret/a_b-c.d#-", ObjectRef("secret", "a_b-c.d", key="-")),
    ],
    ids=["documented-example", "one-segment", "deep-trimmed", "path-named-data", "punctuation"],
)
def test_parse_vault_ref_accepts(text: str, expected: ObjectRef) -> None:
    ref, problems = contract.parse_vault_ref(text)
    assert problems == []
    assert ref == expected
    assert str(ref) == text.strip()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "secret/payments/db",
            ["'secret/payments/db' is not a Vault ref: write <mount>/<path>#<key>, e.g. secret/payments/db#password"],
        ),
        ("secret#password", ["no path in 'secret#password': write <mount>/<path>#<key>"]),
        ("secret/#password", ["no path in 'secret/#password': write <mount>/<path>#<key>"]),
        (
            "secret/data/payments/db#password",
            [
                "path 'data/payments/db' starts with KV v2's API segment data/: write the secret's path"
                " (secret/payments/db#password); kvinject adds data/ itself"
            ],
        ),
        (
            "secret/metadata/db#password",
            [
                "path 'metadata/db' starts with KV v2's API segment metadata/: write the secret's path"
                " (secret/db#password); kvinject adds metadata/ itself"
            ],
        ),
        (
            "secret/a//b#k",
            [
                "path 'a//b' must be segments of letters, digits, '.', '_' or '-' separated by single '/',"
                " none starting or ending with '.'"
            ],
        ),
        (
            "secret/../b#k",
            [
                "path '../b' must be segments of letters, digits, '.', '_' or '-' separated by single '/',"
                " none starting or ending with '.'"
            ],
        ),
        (
            "-bad/db#",
            [
                "key '' must be 1-128 letters, digits, '.', '_' or '-'",
                "mount '-bad' must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter"
                " or digit",
            ],
        ),
        ("secret/db#a b", ["key 'a b' must be 1-128 letters, digits, '.', '_' or '-'"]),
        ("secret/db#*", ["key '*' must be 1-128 letters, digits, '.', '_' or '-'"]),
        ("secret/" + "a/" * 256 + "b#k", ["path is 513 characters, more than 512"]),
    ],
    ids=[
        "no-key",
        "no-path",
        "empty-path",
        "api-data-segment",
        "api-metadata-segment",
        "double-slash",
        "dot-dot",
        "mount-and-key-at-once",
        "space-in-key",
        "all-keys-star-is-not-a-key",
        "too-long",
    ],
)
def test_parse_vault_ref_rejects(text: str, expected: list[str]) -> None:
    ref, problems = contract.parse_vault_ref(text)
    assert ref is None
    assert problems == expected


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {K + "secret-db": "secret/payments/db#password"},
            contract.InjectionRequest(
                Mode.CSI,
                "/mnt/secrets",
                (Mounted("db", ObjectRef("secret", "payments/db", key="password")),),
                store="vault",
            ),
        ),
        (
            # Vault's class names a path per object: csi mode reads several mounts through one class.
            {K + "secret-a": "secret/a#x", K + "secret-b": "kv/b#y", K + "env-B": "b"},
            contract.InjectionRequest(
                Mode.CSI,
                "/mnt/secrets",
                (Mounted("a", ObjectRef("secret", "a", key="x")), Mounted("b", ObjectRef("kv", "b", key="y"))),
                (EnvVar("B", "b"),),
                store="vault",
            ),
        ),
        (
            {K + "env-DB_USER": "secret/payments/db#username", K + "vault-role": "payments"},
            contract.InjectionRequest(
                Mode.CSI,
                "/mnt/secrets",
                (Mounted("DB_USER", ObjectRef("secret", "payments/db", key="username")),),
                (EnvVar("DB_USER", "DB_USER"),),
                store="vault",
                role="payments",
            ),
        ),
        (
            {K + "secret-db": "secret/payments/db#password", K + "mode": "init"},
            contract.InjectionRequest(
                Mode.INIT,
                "/mnt/secrets",
                (Mounted("db", ObjectRef("secret", "payments/db", key="password")),),
                store="vault",
            ),
        ),
    ],
    ids=["one-secret", "two-mounts-in-csi", "env-full-ref-and-pod-role", "init"],
)
def test_vault_store_parses(annotations: dict[str, str], expected: contract.InjectionRequest) -> None:
    # The namespace's default Key Vault is ignored for store vault, not an error: it is the namespace's, not the pod's.
    assert contract.parse_annotations(VAULT | annotations, namespace_default_vault="payments-kv") == expected


def test_store_defaults_to_azure() -> None:
    wanted = contract.parse_annotations({K + "secret-db": "payments-kv/db-password"})
    assert (wanted.store, wanted.role) == ("azure", None)


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {K + "store": "hashicorp", K + "secret-db": "payments-kv/db"},
            ["kvinject.io/store: 'hashicorp' must be azure or vault"],
        ),
        (
            # A pod reads one store: an Azure ref under store vault is named as such.
            VAULT | {K + "secret-db": "payments-kv/db-password", K + "secret-ok": "secret/a#b"},
            [
                "kvinject.io/secret-db: 'payments-kv/db-password' is not a Vault ref: write <mount>/<path>#<key>,"
                " e.g. secret/payments/db#password"
            ],
        ),
        (
            VAULT | {K + "vault": "payments-kv", K + "secret-db": "secret/a#b"},
            [
                "kvinject.io/vault names a default Azure Key Vault, which means nothing with kvinject.io/store:"
                " vault: remove it (every Vault ref names its mount)"
            ],
        ),
        (
            {K + "vault-role": "payments", K + "secret-db": "payments-kv/db"},
            ["kvinject.io/vault-role applies only with kvinject.io/store: vault"],
        ),
        (
            VAULT | {K + "vault-role": "-x", K + "secret-db": "secret/a#b"},
            [
                "kvinject.io/vault-role: '-x' must be 1-128 letters, digits, '.', '_' or '-', starting and ending"
                " with a letter or digit"
            ],
        ),
        (
            VAULT | {K + "env-X": "nope", K + "secret-db": "secret/a/b"},
            [
                "kvinject.io/secret-db: 'secret/a/b' is not a Vault ref: write <mount>/<path>#<key>,"
                " e.g. secret/payments/db#password",
                "kvinject.io/env-X: 'nope' is neither an alias defined by a kvinject.io/secret-<alias> annotation"
                " nor a valid reference ('nope' is not a Vault ref: write <mount>/<path>#<key>, e.g."
                " secret/payments/db#password)",
            ],
        ),
        (
            VAULT | {K + "mode": "init", K + "env-X": "secret/a#b"},
            [
                "kvinject.io/env-X: environment variables need a synced Kubernetes Secret, which only mode csi"
                " creates; read the file instead or use mode csi"
            ],
        ),
    ],
    ids=[
        "unknown-store",
        "azure-ref-in-vault-pod",
        "default-key-vault-with-vault",
        "role-without-vault",
        "bad-role",
        "all-at-once",
        "env-in-init",
    ],
)
def test_vault_store_rejects(annotations: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(ContractError) as info:
        contract.parse_annotations(annotations)
    assert info.value.problems == expected


def test_every_store_grammar_has_a_provider() -> None:
    # The contract's grammars and the provider registry name the same stores: a pod's store always has a provider.
    assert set(contract.GRAMMARS) == set(providers._REGISTERED)
    assert providers.DEFAULT == contract.DEFAULT_STORE


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {K + "secret-db": "payments-kv/db-password"},
            [{"alias": "db", "vault": "payments-kv", "name": "db-password", "type": "secret", "version": ""}],
        ),
        (
            VAULT | {K + "secret-db": "secret/payments/db#password"},
            [
                {
                    "alias": "db",
                    "vault": "secret",
                    "name": "payments/db",
                    "type": "secret",
                    "version": "",
                    "key": "password",
                }
            ],
        ),
    ],
    ids=["azure-has-no-key", "vault-names-its-key"],
)
def test_init_container_objects_carry_the_key(annotations: dict[str, str], expected: list[dict[str, str]]) -> None:
    wanted = contract.parse_annotations({K + "mode": "init"} | annotations)
    assert json.loads(plan.fetch_objects(wanted)) == expected
