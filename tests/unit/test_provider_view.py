"""webhook.providers.azure.provider_view without Go: what kvinject reads from Azure provider parameters, and
what it refuses.

The same judgements are checked against the provider's own parsing in tests/differential.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from webhook.providers.azure.provider_view import (
    ECHO_CHARS,
    GO_SPACE,
    MAX_OBJECTS,
    MAX_OBJECTS_BYTES,
    ProviderObject,
    Unreadable,
    View,
    effective_parameters,
    go_trim_space,
    read,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "11111111-2222-3333-4444-555555555555"


def objects(*items: str) -> str:
    out = ["array:"]
    for item in items:
        out.append("  - |")
        out.extend("    " + line for line in item.strip("\n").split("\n"))
    return "\n".join(out) + "\n"


BASE = {
    "keyvaultName": "payments-kv",
    "tenantId": TENANT,
    "clientID": CLIENT,
    "objects": objects("objectName: db-password\nobjectType: secret"),
}


def params(drop: tuple[str, ...] = (), **changes: str) -> dict[str, str]:
    return {k: v for k, v in (BASE | changes).items() if k not in drop}


def one(text: str) -> ProviderObject:
    (obj,) = read(params(objects=objects(text))).objects
    return obj


def test_reads_the_documented_shape() -> None:
    view = read(BASE)
    assert view == View(
        identity_mode="workload",
        client_id=CLIENT,
        tenant_id=TENANT,
        user_assigned_identity_id="",
        keyvault_name="payments-kv",
        cloud_name="",
        cloud="",
        cloud_env_file_name="",
        objects=(ProviderObject("db-password", "", "secret", "", "", ""),),
    )
    assert view.objects[0].file_name == "db-password"
    with pytest.raises(FrozenInstanceError):
        view.keyvault_name = "other"  # type: ignore[misc]


def test_unreadable_is_a_value_error_with_a_reason() -> None:
    with pytest.raises(ValueError) as caught:
        read(params(usePodIdentity="yes"))
    assert isinstance(caught.value, Unreadable)
    assert "usePodIdentity" in caught.value.reason


# -- effective parameters -----------------------------------------------------------------------------------------


def test_attributes_override_class_parameters() -> None:
    merged = effective_parameters({"keyvaultName": "a", "tenantId": "t"}, {"keyvaultName": "b", "x": "y"})
    assert merged == {"keyvaultName": "b", "tenantId": "t", "x": "y"}


def test_effective_parameters_leaves_its_inputs_alone() -> None:
    spc: dict[str, str] = {"keyvaultName": "a"}
    attributes: dict[str, str] = {"keyvaultName": "b"}
    effective_parameters(spc, attributes)
    assert spc == {"keyvaultName": "a"} and attributes == {"keyvaultName": "b"}


# -- identity -----------------------------------------------------------------------------------------------------

IDENTITY = [
    pytest.param({}, "workload", id="clientID-is-workload"),
    pytest.param({"usePodIdentity": "true"}, "pod-identity", id="pod-identity-wins-over-clientID"),
    pytest.param({"useVMManagedIdentity": "1"}, "vm-managed-identity", id="vm-identity-wins-over-clientID"),
    pytest.param({"usePodIdentity": "false", "useVMManagedIdentity": "F"}, "workload", id="explicit-false"),
    pytest.param({"clientID": ""}, "service-principal", id="no-clientID-service-principal"),
    pytest.param({"clientID": " \t"}, "service-principal", id="blank-clientID-service-principal"),
]


@pytest.mark.parametrize(("changes", "mode"), IDENTITY)
def test_identity_mode(changes: dict[str, str], mode: str) -> None:
    assert read(params(**changes)).identity_mode == mode


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True", " TRUE ", "\u00a0true\u3000", "\ttrue\n"])
def test_true_as_go_parses_it(value: str) -> None:
    assert read(params(usePodIdentity=value)).identity_mode == "pod-identity"


@pytest.mark.parametrize("value", ["", "0", "f", "F", "FALSE", "false", "False", "  "])
def test_false_as_go_parses_it(value: str) -> None:
    assert read(params(usePodIdentity=value)).identity_mode == "workload"


@pytest.mark.parametrize("value", ["yes", "no", "on", "y", "tRUE", "2", "true\u200b", "\x1ftrue", "\ufefftrue"])
def test_booleans_go_rejects_are_refused(value: str) -> None:
    with pytest.raises(Unreadable, match="usePodIdentity"):
        read(params(usePodIdentity=value))


def test_pod_and_vm_identity_together_are_refused() -> None:
    with pytest.raises(Unreadable, match="both"):
        read(params(usePodIdentity="true", useVMManagedIdentity="true"))


def test_user_assigned_identity_is_read() -> None:
    view = read(params(useVMManagedIdentity="true", userAssignedIdentityID=f" {CLIENT} "))
    assert view.user_assigned_identity_id == CLIENT


# -- tenant, vault, cloud -----------------------------------------------------------------------------------------

SCALARS = [
    pytest.param({"tenantID": "contoso"}, "tenant_id", "contoso", id="tenantID-wins-over-tenantId"),
    pytest.param({"tenantID": " \n"}, "tenant_id", TENANT, id="blank-tenantID-falls-back"),
    pytest.param({"tenantId": f"\u3000{TENANT}\u2029"}, "tenant_id", TENANT, id="tenant-trimmed-go-space"),
    pytest.param({"keyvaultName": "\tKv-1 "}, "keyvault_name", "Kv-1", id="vault-trimmed"),
    pytest.param({"cloudName": "azureusgovernment"}, "cloud", "AzureUSGovernmentCloud", id="cloud-case-insensitive"),
    pytest.param({"cloudName": "AzureCloud"}, "cloud", "AzurePublicCloud", id="cloud-alias"),
    pytest.param({"cloudName": " AzureChinaCloud "}, "cloud_name", "AzureChinaCloud", id="cloud-name-trimmed"),
    pytest.param(
        {"cloudName": "AzureStackCloud", "cloudEnvFileName": "/etc/kubernetes/stack.json"},
        "cloud_env_file_name",
        "/etc/kubernetes/stack.json",
        id="stack-cloud-with-file",
    ),
]


@pytest.mark.parametrize(("changes", "attribute", "expected"), SCALARS)
def test_scalar_parameters(changes: dict[str, str], attribute: str, expected: str) -> None:
    assert getattr(read(params(**changes)), attribute) == expected


REFUSED_PARAMETERS = [
    pytest.param({"drop": ("keyvaultName",)}, "keyvaultName is not set", id="vault-missing"),
    pytest.param({"keyvaultName": "ab"}, "keyvaultName", id="vault-too-short"),
    pytest.param({"keyvaultName": "a" * 25}, "keyvaultName", id="vault-too-long"),
    pytest.param({"keyvaultName": "kv_1"}, "keyvaultName", id="vault-underscore"),
    pytest.param({"keyvaultName": "kv\u0131"}, "keyvaultName", id="vault-non-ascii"),
    pytest.param({"drop": ("tenantId",)}, "tenantID", id="tenant-missing"),
    pytest.param({"tenantId": "ten ant"}, "tenantId", id="tenant-with-space"),
    pytest.param({"clientID": "\u0441lient"}, "clientID", id="clientID-cyrillic"),
    pytest.param({"cloudName": "AzurePub1icCloud"}, "cloudName", id="cloud-unknown"),
    pytest.param({"cloudName": "AzurePublicCloud\u0131"}, "cloudName", id="cloud-dotless-i"),
    pytest.param({"cloudName": "Azure\u017ftackCloud"}, "cloudName", id="cloud-long-s"),
    pytest.param({"cloudName": "AzureStackCloud"}, "cloudEnvFileName", id="stack-cloud-without-file"),
    pytest.param({"cloudEnvFileName": "/etc/x.json"}, "cloudEnvFileName", id="env-file-without-stack-cloud"),
    pytest.param({"clientId": CLIENT}, "clientId", id="lookalike-clientId"),
    pytest.param({"keyVaultName": "x"}, "keyVaultName", id="lookalike-keyVaultName"),
    pytest.param({"objects ": "x"}, "objects", id="lookalike-trailing-space"),
    pytest.param({"csi.storage.k8s.io/serviceAccount.tokens": "{}"}, "csi.storage.k8s.io/", id="planted-token"),
    pytest.param({"CSI.storage.k8s.io/pod.name": "x"}, "csi.storage.k8s.io/", id="driver-key-any-case"),
    pytest.param({"x": "\ud800"}, "surrogate", id="lone-surrogate"),
    pytest.param({"tenantId": "t" * 5000}, "longer", id="value-too-long"),
]


@pytest.mark.parametrize(("changes", "match"), REFUSED_PARAMETERS)
def test_refused_parameters(changes: dict[str, Any], match: str) -> None:
    drop = changes.pop("drop", ())
    with pytest.raises(Unreadable, match=match):
        read(params(drop=drop, **changes))


def test_parameters_the_provider_does_not_read_are_ignored() -> None:
    view = read(params(secretProviderClass="kv", providerName="azure", anything="x"))
    assert view.keyvault_name == "payments-kv"


# -- objects: values as yaml.v3 reads them into strings -----------------------------------------------------------

FIELDS = [
    pytest.param("objectName: 0x1F\nobjectType: secret", "object_name", "0x1F", id="hex-name-stays-text"),
    pytest.param("objectName: 1e3\nobjectType: secret", "object_name", "1e3", id="float-name-stays-text"),
    pytest.param("objectName: true\nobjectType: secret", "object_name", "true", id="bool-name-stays-text"),
    pytest.param("objectName: a\nobjectType: key\nobjectVersion: 007", "object_version", "007", id="octal-version"),
    pytest.param('objectName: a\nobjectType: key\nobjectVersion: ""', "object_version", "", id="quoted-empty"),
    pytest.param("objectName: a\nobjectType: key\nobjectVersion: ~", "object_version", "", id="null-version"),
    pytest.param("objectName: a\nobjectType: key\nobjectVersion: NULL", "object_version", "", id="NULL-version"),
    pytest.param("objectName: a\nobjectType: key\nobjectVersion:", "object_version", "", id="bare-version"),
    pytest.param("objectName: 'null'\nobjectType: secret", "object_name", "null", id="quoted-null-is-text"),
    pytest.param('objectName: "\\x64b"\nobjectType: secret', "object_name", "db", id="double-quoted-escape"),
    pytest.param("objectName: ' db\u3000'\nobjectType: secret", "object_name", "db", id="trimmed-go-space"),
    pytest.param("objectName: db # note\nobjectType: secret", "object_name", "db", id="comment"),
    pytest.param("objectName: a\nobjectType: cert\nobjectAlias: d/f.pem", "file_name", "d/f.pem", id="alias"),
    pytest.param("objectName: a\nobjectType: cert\nobjectFormat: PEM", "object_format", "PEM", id="format"),
    pytest.param("objectName: a\nobjectType: secret\nobjectEncoding: hex", "object_encoding", "hex", id="encoding"),
    pytest.param("objectName: a\nobjectType: secret\nobjectVersionHistory: 3", "version_history", 3, id="history"),
    pytest.param("objectName: a\nobjectType: secret\nfilePermission: 0640", "file_permission", "0640", id="mode"),
    pytest.param("{objectName: b, objectType: key}", "object_name", "b", id="flow-mapping"),
]


@pytest.mark.parametrize(("text", "attribute", "expected"), FIELDS)
def test_object_fields(text: str, attribute: str, expected: object) -> None:
    assert getattr(one(text), attribute) == expected


SHAPES = [
    pytest.param('array: ["objectName: a\\nobjectType: secret", "{objectName: b, objectType: key}"]', 2, id="flow"),
    pytest.param("array:\n- |\n  objectName: a\n  objectType: secret\n", 1, id="indentless-sequence"),
    pytest.param('"array":\n  - "objectName: a\\nobjectType: secret"\n', 1, id="quoted-key"),
    pytest.param("array: []", 0, id="empty-array"),
    pytest.param(BASE["objects"].replace("\n", "\r\n"), 1, id="crlf"),
    pytest.param("\u3000" + BASE["objects"] + "\u2029", 1, id="unicode-space-around"),
    pytest.param('array: [\'{"objectName":"a","objectType":"secret"}\']', 1, id="json-flow"),
]


@pytest.mark.parametrize(("text", "count"), SHAPES)
def test_objects_shapes(text: str, count: int) -> None:
    assert len(read(params(objects=text)).objects) == count


REFUSED_OBJECTS = [
    pytest.param("", "objects is not set", id="empty"),
    pytest.param(" \n\t", "objects is not set", id="blank"),
    pytest.param("# nothing\n", "empty", id="comment-only"),
    pytest.param("just text", "mapping", id="scalar"),
    pytest.param("- objectName: a\n", "mapping", id="top-level-list"),
    pytest.param("array:", "not a list", id="array-null"),
    pytest.param("Array: []", "Array", id="unknown-top-key"),
    pytest.param("array: []\narray: []", "repeats", id="duplicate-array"),
    pytest.param('array:\n  - &o "objectName: a"\n  - *o\n', "anchor", id="anchor"),
    pytest.param('array:\n  - !!str "objectName: a"\n', "tag", id="tag"),
    pytest.param("%YAML 1.1\n---\narray: []\n", "directive", id="directive"),
    pytest.param("---\narray: []\n", "document marker", id="document-start"),
    pytest.param("array: []\n---\narray: []\n", "document marker", id="second-document"),
    pytest.param("array: []\n...\n", "document marker", id="document-end"),
    pytest.param('array:\n  - ~\n  - "objectName: a\\nobjectType: secret"\n', "null", id="null-item"),
    pytest.param("array:\n  - objectName: a\n", "nests deeper", id="item-is-mapping"),
    pytest.param("array:\n  - [a]\n", "nests deeper", id="item-is-list"),
    pytest.param("array: [[x]]", "nests deeper", id="nested-list"),
    pytest.param("array:\n\t- a\n", "not YAML", id="tab-indent"),
    pytest.param("\ufeffarray: []", "byte-order-mark", id="bom"),
    pytest.param("array: [\x07]", "control", id="control-character"),
    pytest.param("array: ['\u2028']", "separator", id="line-separator"),
]


@pytest.mark.parametrize(("text", "match"), REFUSED_OBJECTS)
def test_refused_objects(text: str, match: str) -> None:
    with pytest.raises(Unreadable, match=match):
        read(params(objects=text))


REFUSED_OBJECT = [
    pytest.param("objectName: a", "objectType", id="type-missing"),
    pytest.param("objectName: a\nobjectType: SECRET", "objectType", id="type-uppercase"),
    pytest.param("objectName: a\nobjectType: certificate", "objectType", id="type-unknown"),
    pytest.param("objectType: secret", "objectName is not set", id="name-missing"),
    pytest.param("objectName: null\nobjectType: secret", "objectName is not set", id="name-null"),
    pytest.param("objectName: a.b\nobjectType: secret", "Key Vault name", id="name-with-dot"),
    pytest.param(f"objectName: {'a' * 128}\nobjectType: secret", "Key Vault name", id="name-too-long"),
    pytest.param("objectName: a\nobjectType: key\nobjectVersion: v1.0", "objectVersion", id="version-dot"),
    pytest.param("objectName: a\nobjectType: cert\nobjectEncoding: hex", "secret only", id="encoding-on-cert"),
    pytest.param("objectName: a\nobjectType: secret\nobjectEncoding: utf8", "objectEncoding", id="encoding-unknown"),
    pytest.param("objectName: a\nobjectType: secret\nobjectEncoding: ba\u017fe64", "objectEncoding", id="long-s"),
    pytest.param("objectName: a\nobjectType: cert\nobjectFormat: der", "objectFormat", id="format-unknown"),
    pytest.param("objectName: a\nobjectType: cert\nobjectFormat: PFX", "pfx", id="pfx-on-cert-any-case"),
    pytest.param("objectName: a\nobjectType: secret\nobjectAlias: ../x", "'..'", id="alias-escape"),
    pytest.param("objectName: a\nobjectType: secret\nobjectAlias: /etc/x", "absolute", id="alias-absolute"),
    pytest.param("objectName: a\nobjectType: secret\nobjectVersionHistory: 010", "decimal", id="history-octal"),
    pytest.param("objectName: a\nobjectType: secret\nobjectVersionHistory: '3'", "decimal", id="history-quoted"),
    pytest.param("objectName: a\nobjectType: secret\nobjectVersionHistory: 1.5", "decimal", id="history-float"),
    pytest.param("objectName: a\nobjectType: secret\nfilePermission: 999", "filePermission", id="mode-not-octal"),
    pytest.param("objectName: a\nobjectName: b\nobjectType: secret", "repeats", id="duplicate-key"),
    pytest.param("objectName: a\n'objectName': b\nobjectType: secret", "repeats", id="duplicate-quoted-key"),
    pytest.param("objectName: a\nobjectType: secret\nobjectname: b", "objectname", id="unknown-key"),
    pytest.param("objectName: a\nobjectType: secret\n<<: x", "merge key", id="merge-key"),
    pytest.param("<<: {objectName: a}\nobjectType: secret", "nests deeper", id="merge-key-with-mapping"),
    pytest.param("objectName: a\nobjectType: secret\n~: x", "does not read", id="null-key"),
    pytest.param("objectName: [a]\nobjectType: secret", "nests deeper", id="name-is-list"),
    pytest.param('objectName: a\nobjectType: secret\nobjectAlias: "x\\Ny"', "line-break", id="nel-escape"),
    pytest.param('objectName: a\nobjectType: secret\nobjectAlias: "x\\ty"', "control", id="tab-escape"),
    pytest.param("objectName: a\nobjectType: secret\nobjectAlias: x\ty", "not YAML", id="tab-in-plain"),
    pytest.param("{objectName:a, objectType: secret}", "objectName:a", id="flow-colon-without-space"),
]


@pytest.mark.parametrize(("text", "match"), REFUSED_OBJECT)
def test_refused_object(text: str, match: str) -> None:
    with pytest.raises(Unreadable, match=match):
        read(params(objects=objects(text)))


def test_folded_item_is_refused() -> None:
    with pytest.raises(Unreadable):
        read(params(objects="array:\n  - >\n    objectName: a\n    objectType: secret\n"))


# -- bounds -------------------------------------------------------------------------------------------------------


def test_objects_size_cap() -> None:
    item = "objectName: a\nobjectType: secret\nobjectAlias: " + "x" * 1000
    text = objects(*([item] * 70))
    assert len(text) > MAX_OBJECTS_BYTES
    with pytest.raises(Unreadable, match="larger than"):
        read(params(objects=text))


def test_objects_size_counts_utf8_bytes() -> None:
    text = "array: []\n# " + "\u00e9" * (MAX_OBJECTS_BYTES // 2)
    assert len(text) < MAX_OBJECTS_BYTES < len(text.encode())
    with pytest.raises(Unreadable, match="larger than"):
        read(params(objects=text))


def test_object_count_cap() -> None:
    entry = '"{objectName: a, objectType: secret, objectAlias: f%d}"'
    at_cap = "array: [" + ", ".join(entry % i for i in range(MAX_OBJECTS)) + "]"
    assert len(read(params(objects=at_cap)).objects) == MAX_OBJECTS
    over = "array: [" + ", ".join(entry % i for i in range(MAX_OBJECTS + 1)) + "]"
    with pytest.raises(Unreadable, match="more than"):
        read(params(objects=over))


def test_alias_bomb_is_refused_at_the_first_anchor() -> None:
    """Nine levels of nine aliases each: 9^9 nodes once expanded. Refused before any node is built."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    with pytest.raises(Unreadable, match="anchor"):
        read(params(objects="\n".join(levels) + "\narray: []\n"))


def test_deep_flow_nesting_is_refused_without_recursion() -> None:
    with pytest.raises(Unreadable, match="nests deeper"):
        read(params(objects="array: " + "[" * 30_000 + "]" * 30_000))


def test_messages_cap_echoed_values() -> None:
    long_name = "x" * 5000
    with pytest.raises(Unreadable) as caught:
        read(params(keyvaultName="-" + long_name))
    assert len(caught.value.reason) < ECHO_CHARS + 200
    with pytest.raises(Unreadable) as caught:
        read(params(objects=objects(f"objectName: {long_name}\nobjectType: secret")))
    assert len(caught.value.reason) < ECHO_CHARS + 200


# -- Go's TrimSpace -----------------------------------------------------------------------------------------------


def test_go_trim_space_matches_go() -> None:
    assert go_trim_space("\t\n\v\f\r \x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000x\u3000") == "x"
    # Not white space to Go, though Python's str.strip removes the first four.
    for ch in ("\x1c", "\x1d", "\x1e", "\x1f", "\u200b", "\ufeff", "\u180e"):
        assert go_trim_space(ch + "x" + ch) == ch + "x" + ch
    assert len(GO_SPACE) == 25


def test_reading_is_pure_and_repeatable() -> None:
    snapshot = dict(BASE)
    assert read(BASE) == read(BASE)
    assert snapshot == BASE


def test_refusals_in_the_token_pass_build_no_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anchors, aliases, tags and deep nesting are refused while scanning: nothing is composed."""

    def no_compose(*args: object, **kwargs: object) -> None:
        raise AssertionError("composed")

    monkeypatch.setattr("webhook.providers.azure.provider_view.yaml.compose", no_compose)
    for text in (
        "a: &a [" + ", ".join(["x"] * 5000) + "]\narray: []",
        "array: [*a]",
        "array: [!!str x]",
        "array: [[[x]]]",
    ):
        with pytest.raises(Unreadable):
            read(params(objects=text))
