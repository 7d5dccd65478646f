"""kvinject's reading of Azure provider parameters against the provider's own (differential).

The oracle is tests/provider_view (a Go program on the provider module's exported parsing functions,
built and cached by tests/provider_view/build.sh). For every input, hand-written or generated:

* kvinject refuses (`Unreadable`), or kvinject's `View` equals the provider's view field by field and
  the provider did not fail;
* kvinject never accepts what the provider rejects.

Hand-written cases also pin what each side does (`kv` and `provider` expectations), so that the
suite cannot pass by refusing everything. Hypothesis runs derandomized, a fixed number of examples,
no deadline: nothing here depends on the machine's speed. Without the built oracle the tests skip
locally and fail under CI (CI=true), like the e2e tier.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings

from tests.differential.params import class_parameters, volume_attributes
from tests.harness import ROOT, Lifecycle, cache_dir, unavailable
from webhook.providers.azure import provider_view
from webhook.providers.azure.provider_view import Unreadable, View

pytestmark = pytest.mark.e2e  # needs the oracle built from the provider's Go module

SOURCE = ROOT / "tests" / "provider_view"
EXAMPLES = 300


def provider_version() -> str:
    for line in (SOURCE / "go.mod").read_text().splitlines():
        words = line.split()
        if "github.com/Azure/secrets-store-csi-driver-provider-azure" in words:
            return words[-1]
    raise AssertionError("go.mod requires no provider version")


def oracle_path() -> Path:
    return cache_dir() / "bin" / f"provider-view-{provider_version()}" / "provider-view"


def source_digest() -> str:
    """The digest build.sh stamps next to the binary: go.mod, go.sum and main.go concatenated."""
    return hashlib.sha256(
        b"".join((SOURCE / name).read_bytes() for name in ("go.mod", "go.sum", "main.go"))
    ).hexdigest()


class Oracle(Lifecycle):
    """One provider-view process: a JSON line in, a JSON line out; it ends when its input does."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.process: subprocess.Popen[str] | None = None

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [str(self.binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
        )

    def view(self, params: dict[str, str]) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"parameters": params}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"provider-view exited ({self.process.poll()})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _stop(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    binary = oracle_path()
    stamp = binary.with_name(binary.name + ".source-sha256")
    if not binary.is_file():
        unavailable(f"{binary} missing: run tests/provider_view/build.sh (make provider-view)")
    if not stamp.is_file() or stamp.read_text().strip() != source_digest():
        unavailable(f"{binary} was built from other sources: run tests/provider_view/build.sh")
    with Oracle(binary) as running:
        yield running


def as_provider_json(view: View) -> dict[str, Any]:
    """kvinject's View in the oracle's field names."""
    return {
        "identityMode": view.identity_mode,
        "clientID": view.client_id,
        "tenantID": view.tenant_id,
        "userAssignedIdentityID": view.user_assigned_identity_id,
        "keyvaultName": view.keyvault_name,
        "cloudName": view.cloud_name,
        "cloud": view.cloud,
        "cloudEnvFileName": view.cloud_env_file_name,
        "objects": [
            {
                "objectName": o.object_name,
                "objectAlias": o.object_alias,
                "objectType": o.object_type,
                "objectVersion": o.object_version,
                "objectFormat": o.object_format,
                "objectEncoding": o.object_encoding,
                "objectVersionHistory": o.version_history,
                "filePermission": o.file_permission,
            }
            for o in view.objects
        ],
    }


def judge(oracle: Oracle, params: dict[str, str]) -> tuple[View | Unreadable, dict[str, Any]]:
    """Both readings, with the property asserted: refused, or equal and accepted by the provider."""
    theirs = oracle.view(params)
    ours: View | Unreadable
    try:
        ours = provider_view.read(params)
    except Unreadable as refusal:
        return refusal, theirs
    assert "error" not in theirs, f"kvinject accepts what the provider rejects ({theirs['error']}): {params!r}"
    assert as_provider_json(ours) == theirs, f"kvinject and the provider read {params!r} differently"
    return ours, theirs


# -- hand-written corpus ------------------------------------------------------------------------------------------

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "11111111-2222-3333-4444-555555555555"


def objects(*items: str) -> str:
    """The documented form: a block list of literal block scalars."""
    out = ["array:"]
    for item in items:
        out.append("  - |")
        out.extend("    " + line for line in item.strip("\n").split("\n"))
    return "\n".join(out) + "\n"


SECRET = objects("objectName: db-password\nobjectType: secret")
BASE = {"keyvaultName": "payments-kv", "tenantId": TENANT, "clientID": CLIENT, "objects": SECRET}


@dataclass(frozen=True)
class Case:
    id: str
    params: dict[str, str]
    kv: Literal["accept", "refuse"]
    provider: Literal["accept", "reject"]
    attributes: dict[str, str] = field(default_factory=dict)


def case(
    id: str,
    kv: Literal["accept", "refuse"],
    provider: Literal["accept", "reject"],
    attributes: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    **params: str,
) -> Case:
    merged = {k: v for k, v in (BASE | params).items() if k not in drop}
    return Case(id, merged, kv, provider, attributes or {})


def obj(text: str) -> str:
    return objects(text)


CORPUS = [
    case("baseline", "accept", "accept"),
    case("kvinject-generated-shape", "accept", "accept", usePodIdentity="false", useVMManagedIdentity="false"),
    # booleans: Go's strconv.ParseBool after TrimSpace
    case("bool-padded-TRUE-pod-identity", "accept", "accept", usePodIdentity=" TRUE "),
    case("bool-1", "accept", "accept", usePodIdentity="1"),
    case("bool-t", "accept", "accept", useVMManagedIdentity="t"),
    case("bool-False", "accept", "accept", usePodIdentity="False"),
    case("bool-yes-invalid", "refuse", "reject", usePodIdentity="yes"),
    case("bool-on-invalid", "refuse", "reject", useVMManagedIdentity="on"),
    case("bool-mixed-case-invalid", "refuse", "reject", usePodIdentity="tRUE"),
    case("bool-nbsp-trimmed", "accept", "accept", usePodIdentity="\u00a0true\u3000"),
    case("bool-zero-width-not-space", "refuse", "reject", usePodIdentity="true\u200b"),
    case("bool-unit-separator-not-go-space", "refuse", "reject", usePodIdentity="\x1ftrue"),
    case("both-pod-and-vm-identity", "refuse", "reject", usePodIdentity="true", useVMManagedIdentity="true"),
    case(
        "vm-identity-wins-over-clientID", "accept", "accept", useVMManagedIdentity="true", userAssignedIdentityID=CLIENT
    ),
    case("no-identity-service-principal", "accept", "accept", drop=("clientID",)),
    # tenant
    case("tenantID-wins-over-tenantId", "accept", "accept", tenantID="contoso.onmicrosoft.com"),
    case("tenantID-blank-falls-back", "accept", "accept", tenantID="  "),
    case("tenant-missing", "refuse", "reject", drop=("tenantId",)),
    case("tenant-with-space", "refuse", "accept", tenantId="ten ant"),
    # names the provider ignores, driver keys
    case("clientId-lookalike", "refuse", "accept", drop=("clientID",), clientId=CLIENT),
    case("keyVaultName-lookalike", "refuse", "accept", keyVaultName="other-kv"),
    case("planted-token", "refuse", "accept", **{"csi.storage.k8s.io/serviceAccount.tokens": "{}"}),
    case("attribute-overrides-vault", "accept", "accept", attributes={"keyvaultName": "other-kv"}),
    case("attribute-overrides-clientID", "accept", "accept", attributes={"clientID": "c"}),
    case("attribute-bad-bool", "refuse", "reject", attributes={"usePodIdentity": "yes"}),
    case("attribute-secretProviderClass", "accept", "accept", attributes={"secretProviderClass": "x"}),
    # vault name
    case("vault-too-short", "refuse", "reject", keyvaultName="ab"),
    case("vault-underscore", "refuse", "reject", keyvaultName="kv_1"),
    case("vault-padded", "accept", "accept", keyvaultName="\t payments-kv \n"),
    case("vault-missing", "refuse", "reject", drop=("keyvaultName",)),
    # clouds
    case("cloud-case-insensitive", "accept", "accept", cloudName="azureusgovernment"),
    case("cloud-AzureCloud-alias", "accept", "accept", cloudName="AzureCloud"),
    case("cloud-unknown", "refuse", "reject", cloudName="AzurePub1icCloud"),
    case("cloud-dotless-i", "refuse", "reject", cloudName="AzurePublicCloud\u0131"),
    case("cloud-stack-with-file", "accept", "accept", cloudName="AzureStackCloud", cloudEnvFileName="/etc/s.json"),
    case("cloud-stack-without-file", "refuse", "accept", cloudName="AzureStackCloud"),
    case("env-file-without-stack", "refuse", "accept", cloudEnvFileName="/etc/s.json"),
    # objects: scalars as yaml.v3 reads them into strings
    case("name-hex-0x1F-stays", "accept", "accept", objects=obj("objectName: 0x1F\nobjectType: secret")),
    case("name-1e3-stays", "accept", "accept", objects=obj("objectName: 1e3\nobjectType: secret")),
    case("name-true-stays", "accept", "accept", objects=obj("objectName: true\nobjectType: secret")),
    case("version-unquoted-007", "accept", "accept", objects=obj("objectName: a\nobjectType: key\nobjectVersion: 007")),
    case("version-quoted-empty", "accept", "accept", objects=obj('objectName: a\nobjectType: key\nobjectVersion: ""')),
    case("version-null-is-empty", "accept", "accept", objects=obj("objectName: a\nobjectType: key\nobjectVersion: ~")),
    case("version-bare-empty", "accept", "accept", objects=obj("objectName: a\nobjectType: key\nobjectVersion:")),
    case("name-null", "refuse", "reject", objects=obj("objectName: null\nobjectType: secret")),
    case("double-quoted-escape", "accept", "accept", objects=obj('objectName: "\\x64b"\nobjectType: secret')),
    case("single-quoted", "accept", "accept", objects=obj("objectName: 'db'\nobjectType: 'cert'")),
    case("padded-field-trimmed", "accept", "accept", objects=obj("objectName: ' db\u3000'\nobjectType: secret")),
    case("comment-after-value", "accept", "accept", objects=obj("objectName: db # the db\nobjectType: secret")),
    case(
        "history-decimal", "accept", "accept", objects=obj("objectName: a\nobjectType: secret\nobjectVersionHistory: 3")
    ),
    case(
        "history-octal-looking",
        "refuse",
        "accept",
        objects=obj("objectName: a\nobjectType: secret\nobjectVersionHistory: 010"),
    ),
    case(
        "history-quoted",
        "refuse",
        "reject",
        objects=obj("objectName: a\nobjectType: secret\nobjectVersionHistory: '3'"),
    ),
    case("file-permission", "accept", "accept", objects=obj("objectName: a\nobjectType: secret\nfilePermission: 0640")),
    # objects: object types, formats, encodings, file names
    case("objectType-missing", "refuse", "reject", objects=obj("objectName: a")),
    case("objectType-uppercase", "refuse", "reject", objects=obj("objectName: a\nobjectType: SECRET")),
    case("encoding-on-cert", "refuse", "reject", objects=obj("objectName: a\nobjectType: cert\nobjectEncoding: hex")),
    case("format-PEM", "accept", "accept", objects=obj("objectName: a\nobjectType: cert\nobjectFormat: PEM")),
    case(
        "format-PFX-cert-provider-misses",
        "refuse",
        "accept",
        objects=obj("objectName: a\nobjectType: cert\nobjectFormat: PFX"),
    ),
    case(
        "encoding-long-s",
        "refuse",
        "accept",
        objects=obj("objectName: a\nobjectType: secret\nobjectEncoding: ba\u017fe64"),
    ),
    case("alias-escape", "refuse", "reject", objects=obj("objectName: a\nobjectType: secret\nobjectAlias: ../x")),
    case("alias-absolute", "refuse", "reject", objects=obj("objectName: a\nobjectType: secret\nobjectAlias: /etc/x")),
    case("alias-subdir", "accept", "accept", objects=obj("objectName: a\nobjectType: secret\nobjectAlias: d/f.pem")),
    case("name-with-dot", "refuse", "accept", objects=obj("objectName: a.b\nobjectType: secret")),
    # objects: YAML shapes
    case(
        "flow-items",
        "accept",
        "accept",
        objects='array: ["objectName: a\\nobjectType: secret", "{objectName: b, objectType: key}"]',
    ),
    case("indentless-sequence", "accept", "accept", objects="array:\n- |\n  objectName: a\n  objectType: secret\n"),
    case("quoted-array-key", "accept", "accept", objects='"array":\n  - "objectName: a\\nobjectType: secret"\n'),
    case("empty-array", "accept", "accept", objects="array: []"),
    case("array-null", "refuse", "accept", objects="array:"),
    case(
        "null-item-dropped-by-provider",
        "refuse",
        "accept",
        objects='array:\n  - ~\n  - "objectName: a\\nobjectType: secret"\n',
    ),
    case("crlf", "accept", "accept", objects=SECRET.replace("\n", "\r\n")),
    case("tab-indent", "refuse", "reject", objects="array:\n\t- |\n\t  objectName: a\n"),
    case(
        "tab-in-plain-value-pyyaml-refuses",
        "refuse",
        "accept",
        objects=obj("objectName: a\nobjectType: secret\nobjectAlias: x\ty"),
    ),
    case("unicode-space-around-objects", "accept", "accept", objects="\u3000\u00a0" + SECRET + "\u2029"),
    case("bom-skipped-by-yaml-v3", "refuse", "accept", objects="\ufeff" + SECRET),
    case("anchor-alias", "refuse", "accept", objects='array:\n  - &o "objectName: a\\nobjectType: secret"\n  - *o\n'),
    case(
        "nested-aliases-elsewhere",
        "refuse",
        "accept",
        objects="a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\narray: []",
    ),
    case("tag-str", "refuse", "accept", objects='array:\n  - !!str "objectName: a\\nobjectType: secret"\n'),
    case(
        "tag-binary", "refuse", "accept", objects="array:\n  - !!binary b2JqZWN0TmFtZTogYQpvYmplY3RUeXBlOiBzZWNyZXQ=\n"
    ),
    case("merge-key", "refuse", "accept", objects=obj("<<: {objectName: a}\nobjectType: secret")),
    case("duplicate-key", "refuse", "reject", objects=obj("objectName: a\nobjectName: b\nobjectType: secret")),
    case("duplicate-array", "refuse", "reject", objects="array: []\narray: []"),
    case("multi-document", "refuse", "accept", objects=SECRET + "---\narray: []\n"),
    case("document-start", "refuse", "accept", objects="---\n" + SECRET),
    case("directive", "refuse", "accept", objects="%YAML 1.1\n---\n" + SECRET),
    case("unknown-object-key", "refuse", "accept", objects=obj("objectName: a\nobjectType: secret\nobjectname: b")),
    case("unknown-top-key", "refuse", "accept", objects="Array: []\n"),
    case("top-level-list", "refuse", "reject", objects="- objectName: a\n"),
    case("item-is-mapping", "refuse", "reject", objects="array:\n  - objectName: a\n    objectType: secret\n"),
    case(
        "folded-item-joins-lines",
        "refuse",
        "reject",
        objects="array:\n  - >\n    objectName: a\n    objectType: secret\n",
    ),
    case("json-flow-object", "accept", "accept", objects='array: [\'{"objectName":"a","objectType":"secret"}\']'),
    case(
        "flow-colon-without-space-is-one-key",
        "refuse",
        "reject",
        objects="array: ['{objectName:a, objectType: secret}']",
    ),
    case("control-char", "refuse", "reject", objects=obj("objectName: a\x07\nobjectType: secret")),
    case(
        "nel-escape-in-value",
        "refuse",
        "accept",
        objects=obj('objectName: a\nobjectType: secret\nobjectAlias: "x\\Ny"'),
    ),
    case(
        "multi-line-flow-sequence",
        "accept",
        "accept",
        objects='array: [\n  "objectName: a\\nobjectType: secret",\n  "objectName: b\\nobjectType: key"\n]',
    ),
    case("keep-chomping", "accept", "accept", objects="array:\n  - |+\n    objectName: a\n    objectType: cert\n\n\n"),
    case("strip-chomping", "accept", "accept", objects="array:\n  - |-\n    objectName: a\n    objectType: cert\n"),
    case("hash-inside-plain", "accept", "accept", objects=obj("objectName: a\nobjectType: secret\nobjectAlias: a#b")),
    case("escaped-key", "accept", "accept", objects=obj('"objectN\\x61me": a\nobjectType: secret')),
    case("explicit-key", "accept", "accept", objects='? array\n: ["objectName: a\\nobjectType: secret"]'),
    case(
        "plain-continuation-line",
        "accept",
        "accept",
        objects=obj("objectName: a\nobjectType: secret\nobjectAlias: x\n  y"),
    ),
    case("attribute-overrides-objects", "accept", "accept", attributes={"objects": "array: []"}),
    case("attribute-breaks-objects", "refuse", "reject", attributes={"objects": "array: [x"}),
    case("objects-missing", "refuse", "reject", drop=("objects",)),
    case("objects-blank", "refuse", "reject", objects=" \n\t "),
    case("objects-comment-only", "refuse", "accept", objects="# nothing\n"),
    case("objects-scalar", "refuse", "reject", objects="just text"),
]


@pytest.mark.parametrize("c", CORPUS, ids=[c.id for c in CORPUS])
def test_corpus(oracle: Oracle, c: Case) -> None:
    params = provider_view.effective_parameters(c.params, c.attributes)
    ours, theirs = judge(oracle, params)
    assert ("error" not in theirs) == (c.provider == "accept"), theirs
    assert isinstance(ours, View) == (c.kv == "accept"), ours


def test_corpus_ids_are_unique() -> None:
    assert len({c.id for c in CORPUS}) == len(CORPUS)


def test_alias_bomb_is_refused_before_expansion(oracle: Oracle) -> None:
    """The 427-byte shape that once took PyYAML 10 s: refused at the first anchor, whatever its size."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    params = BASE | {"objects": "\n".join(levels) + "\narray: []\n"}
    ours, _ = judge(oracle, params)
    assert isinstance(ours, Unreadable) and "anchor" in ours.reason


# -- generated ----------------------------------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(class_params=class_parameters(), attributes=volume_attributes())
def test_generated(oracle: Oracle, class_params: dict[str, str], attributes: dict[str, str]) -> None:
    judge(oracle, provider_view.effective_parameters(class_params, attributes))


def test_generated_inputs_reach_both_outcomes(oracle: Oracle) -> None:
    """The generator is not degenerate: many of its maps are accepted by both sides, many refused."""
    accepted = refused = 0

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None)
    @given(class_params=class_parameters(), attributes=volume_attributes())
    def count(class_params: dict[str, str], attributes: dict[str, str]) -> None:
        nonlocal accepted, refused
        ours, _ = judge(oracle, provider_view.effective_parameters(class_params, attributes))
        if isinstance(ours, View):
            accepted += 1
        else:
            refused += 1

    count()
    assert accepted >= EXAMPLES // 10 and refused >= EXAMPLES // 10, (accepted, refused)
