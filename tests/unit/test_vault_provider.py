"""The HashiCorp Vault provider, pure parts: the role a ServiceAccount reads as, the class kvinject generates,
and hand-written provider: vault classes judged as the Vault CSI provider reads them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from webhook import contract, providers, spc
from webhook.contract import ALL_KEYS, ObjectRef
from webhook.identity import Identity
from webhook.model import SecretProviderClass, ServiceAccount
from webhook.names import PREFIX, TOKEN_DIR
from webhook.providers.vault import classes
from webhook.settings import Settings

VAULT = providers.get("vault")
SETTINGS = Settings(
    hashicorp_vault_address="https://vault.example:8200",
    hashicorp_vault_auth_mount="kubernetes",
    hashicorp_vault_csi_ca_cert_path="/vault/tls/ca.crt",
    hashicorp_vault_ca_configmap="vault-ca",
    init_image="kvinject-fetch:test",
)
WHO = Identity("payments", "kubernetes", "vault")
ADDRESS = "https://vault.example:8200"


def account(role: str | None) -> ServiceAccount:
    annotations = {"vault.kvinject.io/role": role} if role is not None else {}
    return ServiceAccount.from_object(
        {"metadata": {"namespace": "payments", "name": "api", "uid": "u1", "annotations": annotations}}
    )


@pytest.mark.parametrize(
    ("sa", "expected"),
    [
        (account("Payments"), Identity("payments", "kubernetes", "vault")),
        (
            None,
            "ServiceAccount payments/api does not exist: create it and annotate it with vault.kvinject.io/role=<the"
            " Vault Kubernetes-auth role bound to it>",
        ),
        (
            account(None),
            "ServiceAccount payments/api has no vault.kvinject.io/role annotation: run kubectl annotate"
            " serviceaccount -n payments api vault.kvinject.io/role=<the Vault Kubernetes-auth role bound to it>,"
            " or set kvinject.io/vault-role on the pod",
        ),
        (
            account("bad role"),
            "ServiceAccount payments/api annotation vault.kvinject.io/role='bad role' is not a Vault role name",
        ),
    ],
    ids=["annotated", "missing-account", "no-annotation", "bad-role"],
)
def test_resolve_identity(sa: ServiceAccount | None, expected: Identity | str) -> None:
    assert VAULT.resolve_identity("payments", "api", sa, SETTINGS) == expected


def test_pod_role_wins_over_the_service_accounts() -> None:
    from webhook.providers.vault import identity

    assert identity.resolve("payments", "api", account("payments"), "auth/k8s/", "batch") == Identity(
        "batch", "k8s", "vault"
    )


def request(annotations: dict[str, str]) -> contract.InjectionRequest:
    return contract.parse_annotations({PREFIX + "store": "vault"} | annotations)


def test_generated_class_reads_as_the_provider_documents() -> None:
    wanted = request(
        {
            PREFIX + "secret-db": "secret/payments/db#password",
            PREFIX + "env-API_KEY": "kv/shared/api#key",
        }
    )
    params = VAULT.class_parameters(wanted, WHO, SETTINGS)
    assert {k: v for k, v in params.items() if k != "objects"} == {
        "roleName": "payments",
        "vaultAddress": ADDRESS,
        "vaultKubernetesMountPath": "kubernetes",
        "audience": "vault",
        "vaultCACertPath": "/vault/tls/ca.crt",
    }
    assert yaml.safe_load(params["objects"]) == [
        {"objectName": "API_KEY", "secretPath": "kv/data/shared/api", "secretKey": "key"},
        {"objectName": "db", "secretPath": "secret/data/payments/db", "secretKey": "password"},
    ]
    generated = spc.generated(VAULT.name, params, wanted, "payments", account("payments"))
    assert generated["spec"]["provider"] == "vault"
    assert generated["spec"]["secretObjects"][0]["data"] == [{"objectName": "API_KEY", "key": "API_KEY"}]
    # What kvinject generates, the provider's reading of it gives back: the same refs, no problem.
    stored = SecretProviderClass.from_object(generated)
    assert VAULT.declared_objects(stored, WHO, SETTINGS) == (
        [m.ref for m in sorted(wanted.objects, key=lambda m: m.alias)],
        [],
    )
    assert VAULT.class_problems(stored, SETTINGS) == []


def vault_class(**params: str) -> SecretProviderClass:
    base = {
        "roleName": "payments",
        "vaultAddress": ADDRESS,
        "objects": "- objectName: db\n  secretPath: secret/data/payments/db\n  secretKey: password\n",
    }
    return SecretProviderClass.from_object(
        {
            "metadata": {"namespace": "payments", "name": "handmade"},
            "spec": {"provider": "vault", "parameters": {k: v for k, v in (base | params).items() if v != "-"}},
        }
    )


DB = ObjectRef("secret", "payments/db", key="password")
W = "SecretProviderClass payments/handmade"
UNJUDGED = f"{W} cannot be judged as the Vault CSI provider reads it: "
TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"


def driver_key(key: str) -> str:
    return (
        f"{W} sets parameter {key}: csi.storage.k8s.io/ keys are the CSI driver's to set (the pod's name,"
        " ServiceAccount and token); one set in a class can reach the provider in their place, which would then"
        " log in with a token stored in the class instead of the pod's"
    )


@pytest.mark.parametrize(
    ("found", "attributes", "expected"),
    [
        (vault_class(), {}, ([DB], [])),
        (vault_class(vaultAddress="-"), {}, ([DB], [])),
        (vault_class(vaultAuthMountPath="auth/kubernetes"), {}, ([DB], [])),
        (
            vault_class(objects="- objectName: all\n  secretPath: secret/data/payments/db\n"),
            {},
            ([ObjectRef("secret", "payments/db", key=ALL_KEYS)], []),
        ),
        (
            vault_class(roleName="admin"),
            {},
            ([DB], [f"{W} logs in as role 'admin', not payments, the role of the pod's ServiceAccount"]),
        ),
        (
            vault_class(),
            {"roleName": "admin"},
            ([DB], [f"{W} logs in as role 'admin', not payments, the role of the pod's ServiceAccount"]),
        ),
        (
            vault_class(vaultKubernetesMountPath="k8s-east"),
            {},
            ([DB], [f"{W} logs in on auth mount 'k8s-east', not kubernetes"]),
        ),
        (
            vault_class(vaultKubernetesMountPath="a", vaultAuthMountPath="b"),
            {},
            ([], [UNJUDGED + "it sets both vaultKubernetesMountPath and vaultAuthMountPath, to different mounts"]),
        ),
        (
            vault_class(vaultAddress="https://evil.example"),
            {},
            ([DB], [f"{W} reads from Vault at 'https://evil.example', not {ADDRESS}"]),
        ),
        (
            vault_class(vaultSkipTLSVerify="T"),
            {},
            ([DB], [f"{W} sets vaultSkipTLSVerify: the provider would not verify Vault's certificate"]),
        ),
        (vault_class(vaultSkipTLSVerify="false"), {}, ([DB], [])),
        (vault_class(vaultSkipTLSVerify="no"), {}, ([], [UNJUDGED + "vaultSkipTLSVerify 'no' is not a boolean"])),
        (
            vault_class(KubernetesServiceAccountPath="/other/token"),
            {},
            (
                [DB],
                [
                    f"{W} sets KubernetesServiceAccountPath: the provider would log in with the token in that file,"
                    " not the pod's"
                ],
            ),
        ),
        (
            vault_class(),
            {"csi.storage.k8s.io/serviceAccount.tokens": "{}"},
            (
                [DB],
                [
                    f"{W}: the volume attribute csi.storage.k8s.io/serviceAccount.tokens would speak for the pod to"
                    " the provider"
                ],
            ),
        ),
        (vault_class(**{TOKENS: '{"vault":{"token":"x"}}'}), {}, ([DB], [driver_key(TOKENS)])),
        (vault_class(**{"CSI.Storage.K8s.io/pod.name": "x"}), {}, ([DB], [driver_key("CSI.Storage.K8s.io/pod.name")])),
        (
            vault_class(vaultNamespace="team-a"),
            {},
            ([DB], [f"{W} sets vaultNamespace: kvinject judges only Vault's root namespace"]),
        ),
        (
            vault_class(objects="- objectName: db\n  secretPath: secret/payments/db\n  secretKey: password\n"),
            {},
            (
                [],
                [
                    UNJUDGED
                    + "object 'db' reads 'secret/payments/db', which is not a KV v2 secret (<mount>/data/<path>):"
                    " kvinject judges only KV v2 reads"
                ],
            ),
        ),
        (
            vault_class(objects="- objectName: cert\n  secretPath: pki/data/issue/web\n  method: POST\n"),
            {},
            ([], [UNJUDGED + "object 'cert' uses method 'POST': kvinject judges only reads (GET)"]),
        ),
        (
            vault_class(objects="- objectName: db\n  secretPath: secret/data/db\n  secretArgs: {version: 1}\n"),
            {},
            ([], [UNJUDGED + "object 'db' sets secretArgs, which changes what is read"]),
        ),
        (vault_class(objects="array: [x]"), {}, ([], [UNJUDGED + "objects is not a list of objects"])),
        (
            vault_class(objects="- [unclosed"),
            {},
            (
                [],
                [
                    UNJUDGED + "objects is not YAML kvinject reads: \"expected ',' or ']', but got '<stream end>'\""
                    " (line 1, column 12)"
                ],
            ),
        ),
        (
            vault_class(objects="- objectName: db\n  secretPath: secret/data/db\n  secretKey: 7\n"),
            {},
            ([], [UNJUDGED + "objects entry needs objectName and secretPath written as strings"]),
        ),
        (
            vault_class(objects="- objectName: db\n  secretPath: secret/data/db\n  secertKey: x\n"),
            {},
            ([], [UNJUDGED + "objects entry has unknown fields secertKey"]),
        ),
        (
            vault_class(),
            {"objects": "- objectName: db\n  secretPath: secret/data/payments/admin\n  secretKey: password\n"},
            ([ObjectRef("secret", "payments/admin", key="password")], []),
        ),
    ],
    ids=[
        "exact",
        "address-defaults-to-the-providers",
        "new-mount-name-auth-prefix",
        "no-secret-key-reads-every-key",
        "other-role",
        "volume-attribute-role",
        "other-mount",
        "two-different-mounts",
        "other-server",
        "skip-tls-go-bool",
        "skip-tls-false",
        "skip-tls-not-a-bool",
        "token-file",
        "driver-key-from-volume",
        "driver-key-in-the-class",
        "driver-key-in-the-class-any-case",
        "enterprise-namespace",
        "not-kv2",
        "write-method",
        "secret-args",
        "azure-shaped-objects",
        "not-yaml",
        "key-not-a-string",
        "unknown-field",
        "volume-objects-are-judged",
    ],
)
def test_declared_objects(
    found: SecretProviderClass, attributes: dict[str, str], expected: tuple[list[ObjectRef], list[str]]
) -> None:
    assert VAULT.declared_objects(found, WHO, SETTINGS, attributes) == expected


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (vault_class(roleName="admin"), []),  # the role is a pod's question, not the class's
        (
            vault_class(vaultSkipTLSVerify="true"),
            [f"{W} sets vaultSkipTLSVerify: the provider would not verify Vault's certificate"],
        ),
        (vault_class(objects=""), [UNJUDGED + "objects is not a list of objects"]),
        (vault_class(**{TOKENS: "{}"}), [driver_key(TOKENS)]),
        (
            vault_class(**{TOKENS: "{}", "csi.storage.k8s.io/pod.name": "x"}, objects=""),
            [
                driver_key("csi.storage.k8s.io/pod.name"),
                driver_key(TOKENS),
                UNJUDGED + "objects is not a list of objects",
            ],
        ),
    ],
    ids=["any-role", "skip-tls", "no-objects", "driver-key", "driver-keys-and-unjudgeable"],
)
def test_class_problems(found: SecretProviderClass, expected: list[str]) -> None:
    assert VAULT.class_problems(found, SETTINGS) == expected


@pytest.mark.parametrize(
    ("provider", "found", "who"),
    [
        pytest.param(VAULT, vault_class(roleName="admin"), Identity("cid", "tid"), id="vault-class-azure-identity"),
        pytest.param(
            providers.get("azure"),
            SecretProviderClass.from_object(
                {
                    "metadata": {"name": "handmade", "namespace": "payments"},
                    "spec": {"provider": "azure", "parameters": {}},
                }
            ),
            Identity("payments", "kubernetes", store="vault"),
            id="azure-class-vault-identity",
        ),
    ],
)
def test_a_class_is_judged_only_with_its_own_stores_identity(
    provider: Any, found: SecretProviderClass, who: Identity
) -> None:
    # The pipeline resolves each class's identity with the provider serving it; a mismatch is denied, never empty.
    refs, problems = provider.declared_objects(found, who, SETTINGS)
    assert refs == []
    assert problems == [
        f"SecretProviderClass handmade (provider: {found.provider}) cannot be judged for a {who.store} identity"
    ]


def test_init_spec_logs_in_with_the_projected_token() -> None:
    spec = VAULT.init_spec(WHO, SETTINGS)
    assert dict(spec.env) == {
        "KVINJECT_STORE": "vault",  # kvinject fetch reads with the Vault provider
        "VAULT_ADDR": ADDRESS,
        "KVINJECT_HASHICORP_VAULT_ROLE": "payments",
        "KVINJECT_HASHICORP_VAULT_AUTH_MOUNT": "kubernetes",
        "KVINJECT_HASHICORP_VAULT_TOKEN_FILE": f"{TOKEN_DIR}/azure-identity-token",
        "VAULT_CACERT": f"{TOKEN_DIR}/ca.crt",
    }
    assert (spec.token_audience, spec.token_dir) == ("vault", TOKEN_DIR)
    assert spec.token_sources == ({"configMap": {"name": "vault-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},)


def test_kv2_api_path() -> None:
    assert classes.kv2_api_path(ObjectRef("secret", "payments/db", key="password")) == "secret/data/payments/db"


def test_registered_for_its_classes() -> None:
    assert providers.for_class("vault") is VAULT
    assert VAULT.name == "vault"


# `objects` through the shared plain YAML subset (webhook.providers.strict_yaml): wherever PyYAML and the
# provider's yaml.v3 could read another path or key (merge-key lists: PyYAML's last map wins, yaml.v3's first),
# or the parse could cost more than its size, kvinject refuses rather than guess.
ENTRY = '- objectName: db\n  secretPath: "secret/data/payments/db"\n  secretKey: password\n'
TWO_PATHS = "[{secretPath: secret/data/billing/db}, {secretPath: secret/data/payments/db}]"


def many(entries: int, pad: str = "") -> str:
    return "".join(f"- {{objectName: db{i}, secretPath: secret/data/payments/db{i}{pad}}}\n" for i in range(entries))


OBJECTS_YAML = [
    ("plain", ENTRY, [DB]),
    ("flow", "[{objectName: db, secretPath: secret/data/payments/db, secretKey: password}]", [DB]),
    ("quoted-merge-lookalike-is-unknown", ENTRY + '  "<<": x\n', "objects entry has unknown fields <<"),
    ("merge-list", f"- objectName: db\n  secretKey: password\n  <<: {TWO_PATHS}\n", "objects[0] has a merge key"),
    ("merge-map", "- objectName: db\n  <<: {secretPath: secret/data/billing/db}\n", "objects[0] has a merge key"),
    ("merge-tag", f"- {{objectName: db, !!merge '<<': {TWO_PATHS}}}\n", "objects has a tag"),
    ("explicit-merge-key", "- {objectName: db, ? <<\n   : {secretPath: secret/data/billing/db}}\n", "objects[0] has"),
    ("repeated-path", ENTRY + "  secretPath: secret/data/billing/db\n", "objects[0] repeats the key 'secretPath'"),
    ("repeated-key", ENTRY + "  secretKey: api-key\n", "objects[0] repeats the key 'secretKey'"),
    ("anchor-alias", "- &a {objectName: db, secretPath: secret/data/payments/db}\n- *a\n", "objects has an anchor"),
    ("alias-in-a-field", ENTRY + "  method: *m\n", "objects has an alias"),
    ("directive", "%YAML 1.1\n---\n" + ENTRY, "objects has a directive"),
    ("two-documents", ENTRY + "---\n" + ENTRY, "objects has a document marker"),
    ("nested-brackets", "[" * 3000 + "]" * 3000, "objects nests deeper than the provider reads"),
    ("secret-args-map", ENTRY + "  secretArgs: {a: [x]}\n", "object 'db' sets secretArgs"),
    ("nested-in-a-field", ENTRY + "  secretArgs: {a: [{b: c}]}\n", "objects nests deeper than the provider reads"),
    ("null-entry", "- ~\n", "objects holds an entry that is not a map"),
    ("null-key", "- {objectName: db, secretPath: secret/data/payments/db, secretKey: ~}\n", "objects entry needs"),
    ("bool-key", "- {objectName: db, secretPath: secret/data/payments/db, secretKey: true}\n", "objects entry needs"),
    ("at-256-entries", many(256), [ObjectRef("secret", f"payments/db{i}", key=ALL_KEYS) for i in range(256)]),
    ("over-256-entries", many(257), "objects has more than 256 entries"),
    ("over-64-KiB", many(200, "x" * 400), "objects is larger than 65536 bytes"),
]


@pytest.mark.parametrize(("text", "expected"), [o[1:] for o in OBJECTS_YAML], ids=[o[0] for o in OBJECTS_YAML])
def test_objects_are_read_through_the_plain_subset(text: str, expected: list[ObjectRef] | str) -> None:
    refs, problems = VAULT.declared_objects(vault_class(objects=text), WHO, SETTINGS)
    if isinstance(expected, str):
        assert refs == []
        assert len(problems) == 1 and problems[0].startswith(UNJUDGED + expected), problems
        assert VAULT.class_problems(vault_class(objects=text), SETTINGS) == problems
    else:
        assert (refs, problems) == (expected, [])


def test_objects_are_parsed_once_per_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pod of a Deployment mounts the same class: its objects are parsed once, refused ones too."""
    calls: list[str] = []
    compose = classes.strict_yaml.compose

    def counting(where: str, text: str, *, max_depth: int) -> yaml.Node:
        calls.append(text)
        return compose(where, text, max_depth=max_depth)

    monkeypatch.setattr(classes.strict_yaml, "compose", counting)
    classes._parsed.cache_clear()
    accepted, refused = ENTRY + "  method: GET\n", ENTRY + "  secretKey: x\n"
    for _ in range(3):
        assert VAULT.declared_objects(vault_class(objects=accepted), WHO, SETTINGS) == ([DB], [])
        assert VAULT.declared_objects(vault_class(objects=refused), WHO, SETTINGS)[1] == [
            UNJUDGED + "objects[0] repeats the key 'secretKey'"
        ]
    assert calls == [accepted, refused]


def test_an_oversized_objects_is_refused_before_parsing_or_caching() -> None:
    classes._parsed.cache_clear()
    text = ENTRY + "#" * (classes.MAX_OBJECTS_BYTES + 1)
    assert VAULT.class_problems(vault_class(objects=text), SETTINGS) == [
        UNJUDGED + "objects is larger than 65536 bytes"
    ]
    assert classes._parsed.cache_info().currsize == 0
