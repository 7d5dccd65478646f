"""webhook.providers.strict_yaml: the plain YAML subset kvinject reads from Azure's and Vault's `objects`.

What it admits composes to the same nodes in PyYAML and gopkg.in/yaml.v3; everything where they differ (or
which costs more than its size) is refused before a node is built. Each provider's own reading on top of it is
tested in test_provider_view.py (Azure) and test_vault_provider.py (Vault).
"""

from __future__ import annotations

import pytest
import yaml

from webhook.providers import strict_yaml
from webhook.providers.strict_yaml import Refused, compose, mapping

# (id, text, max_depth, what the refusal says after "objects ")
REFUSED = [
    ("anchor", "- &a {k: v}\n", 3, "has an anchor, which kvinject does not follow"),
    ("alias", "- {k: v}\n- *a\n", 3, "has an alias, which kvinject does not follow"),
    ("alias-flood", "- &a [x]\n" + "- *a\n" * 1000, 3, "has an anchor, which kvinject does not follow"),
    ("merge-tag", "- {!!merge '<<': [{k: v}]}\n", 3, "has a tag, which kvinject does not follow"),
    ("str-tag", "- {k: !!str v}\n", 3, "has a tag, which kvinject does not follow"),
    ("binary-tag", "- {k: !!binary c2VjcmV0}\n", 3, "has a tag, which kvinject does not follow"),
    ("local-tag", "- {k: !x v}\n", 3, "has a tag, which kvinject does not follow"),
    ("verbatim-tag", "- {k: !<tag:yaml.org,2002:str> v}\n", 3, "has a tag, which kvinject does not follow"),
    ("yaml-directive", "%YAML 1.1\n---\n- {k: v}\n", 3, "has a directive, which kvinject does not follow"),
    ("tag-directive", "%TAG ! tag:x,2000:\n---\n- v\n", 3, "has a directive, which kvinject does not follow"),
    ("document-start", "---\n- {k: v}\n", 3, "has a document marker, which kvinject does not follow"),
    ("document-end", "- {k: v}\n...\n", 3, "has a document marker, which kvinject does not follow"),
    ("two-documents", "- {k: a}\n---\n- {k: b}\n", 3, "has a document marker, which kvinject does not follow"),
    ("too-deep-flow", "[[[[x]]]]", 3, "nests deeper than the provider reads"),
    ("too-deep-block", "- a:\n    b:\n      - c\n", 2, "nests deeper than the provider reads"),
    ("deep-brackets", "[" * 5000 + "]" * 5000, 3, "nests deeper than the provider reads"),
    ("deep-maps", "{a: " * 5000 + "x" + "}" * 5000, 3, "nests deeper than the provider reads"),
    ("nul", "- {k: v\x00}\n", 3, "has a control, separator or byte-order-mark character"),
    ("next-line", "- {k: v}\x85- {k: w}\n", 3, "has a control, separator or byte-order-mark character"),
    ("line-separator", "- {k: v\u2028}\n", 3, "has a control, separator or byte-order-mark character"),
    ("byte-order-mark", "\ufeff- {k: v}\n", 3, "has a control, separator or byte-order-mark character"),
    ("lone-surrogate", "- {k: \ud800}\n", 3, "has a control, separator or byte-order-mark character"),
    ("empty", "", 3, "is empty"),
    ("comment-only", "# nothing\n", 3, "is empty"),
    ("unclosed", "- [unclosed", 3, "is not YAML kvinject reads: \"expected ',' or ']', but got '<stream end>'\""),
    ("tab-indent", "- a:\n\t- b\n", 3, "is not YAML kvinject reads: "),
]


@pytest.mark.parametrize(("text", "depth", "what"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_compose_refuses(text: str, depth: int, what: str) -> None:
    with pytest.raises(Refused) as refused:
        compose("objects", text, max_depth=depth)
    assert refused.value.where == "objects"
    assert refused.value.what.startswith(what), refused.value.what
    assert refused.value.reason == f"objects {refused.value.what}" == str(refused.value)


def test_refusals_in_the_token_pass_build_no_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compose(*args: object, **kwargs: object) -> None:
        raise AssertionError("composed")

    monkeypatch.setattr(yaml, "compose", no_compose)
    for _, text, depth, what in REFUSED:
        if "is not YAML" in what or "is empty" in what:
            continue
        with pytest.raises(Refused):
            compose("objects", text, max_depth=depth)


def test_recursion_is_a_refusal_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The depth check stops nesting first; should composing still recurse too deep, that is a refusal."""

    def recurse(*args: object, **kwargs: object) -> None:
        raise RecursionError

    monkeypatch.setattr(yaml, "compose", recurse)
    with pytest.raises(Refused, match="nests deeper"):
        compose("objects", "- {k: v}\n", max_depth=3)


# (id, text, max_depth, the composed node's kind)
ADMITTED = [
    ("block-list-of-maps", "- objectName: db\n  secretPath: secret/data/db\n", 2, yaml.SequenceNode),
    ("flow-list-of-maps", '[{objectName: db, secretPath: "secret/data/db"}]', 2, yaml.SequenceNode),
    ("map-under-an-entry", "- {a: {b: c}}\n", 3, yaml.SequenceNode),
    ("literal-block-strings", "array:\n  - |\n    objectName: a\n", 2, yaml.MappingNode),
    ("quoted-merge-lookalike", "{'<<': x}", 1, yaml.MappingNode),
    ("comments", "# a class\n- {k: v}  # one\n", 2, yaml.SequenceNode),
    ("one-scalar", "plain", 1, yaml.ScalarNode),
]


@pytest.mark.parametrize(("text", "depth", "kind"), [a[1:] for a in ADMITTED], ids=[a[0] for a in ADMITTED])
def test_compose_admits_the_plain_subset(text: str, depth: int, kind: type[yaml.Node]) -> None:
    assert isinstance(compose("objects", text, max_depth=depth), kind)


def entries(text: str, keys: frozenset[str] | None = None) -> list[tuple[str, str]]:
    node = compose("entry", text, max_depth=3)
    return [(k, v.value) for k, v in mapping("entry", node, keys)]


# (id, text, keys, what the refusal says after "entry ")
MAPPING_REFUSED = [
    ("not-a-map", "[a]", None, "is not a mapping"),
    ("scalar", "a", None, "is not a mapping"),
    ("list-key", "{[a]: b}", None, "has a key that is not a string"),
    ("map-key", "? {a: b}\n: c\n", None, "has a key that is not a string"),
    ("merge-key", "{<<: {secretPath: x}}", None, "has a merge key, which kvinject does not follow"),
    ("merge-list", "{k: v, <<: [{a: 1}, {a: 2}]}", None, "has a merge key, which kvinject does not follow"),
    ("explicit-merge-key", "? <<\n: {a: b}\n", None, "has a merge key, which kvinject does not follow"),
    ("repeated-key", "a: 1\nb: 2\na: 3\n", None, "repeats the key 'a'"),
    ("repeated-quoted-key", "a: 1\n'a': 3\n", None, "repeats the key 'a'"),
    ("unknown-key", "a: 1\nz: 2\n", frozenset({"a"}), "has the key 'z', which the provider does not read"),
    ("null-key", "~: 1\n", frozenset({"~"}), "has the key '~', which the provider does not read"),
]


@pytest.mark.parametrize(
    ("text", "keys", "what"), [m[1:] for m in MAPPING_REFUSED], ids=[m[0] for m in MAPPING_REFUSED]
)
def test_mapping_refuses(text: str, keys: frozenset[str] | None, what: str) -> None:
    with pytest.raises(Refused) as refused:
        entries(text, keys)
    assert refused.value.reason == f"entry {what}"


# (id, text, keys, entries in order)
MAPPING_READ = [
    ("any-keys", "b: 1\na: x\n", None, [("b", "1"), ("a", "x")]),
    ("known-keys", "a: x\n", frozenset({"a", "b"}), [("a", "x")]),
    ("quoted-key", '"a": x\n', frozenset({"a"}), [("a", "x")]),
    ("plain-scalars-as-written", "a: 0x1F\nb: true\nc: 1e3\n", None, [("a", "0x1F"), ("b", "true"), ("c", "1e3")]),
]


@pytest.mark.parametrize(("text", "keys", "expected"), [m[1:] for m in MAPPING_READ], ids=[m[0] for m in MAPPING_READ])
def test_mapping_reads(text: str, keys: frozenset[str] | None, expected: list[tuple[str, str]]) -> None:
    assert entries(text, keys) == expected


@pytest.mark.parametrize(
    ("text", "null"),
    [("~", True), ("null", True), ("Null", True), ("NULL", True), ("", True), ("'~'", False), ('""', False)],
    ids=["tilde", "null", "Null", "NULL", "empty", "quoted-tilde", "quoted-empty"],
)
def test_is_null_only_for_plain_nulls(text: str, null: bool) -> None:
    node = compose("v", f"k: {text}\n", max_depth=1)
    ((_, value),) = mapping("v", node)
    assert isinstance(value, yaml.ScalarNode)
    assert strict_yaml.is_null(value) is null


@pytest.mark.parametrize(
    ("text", "large"),
    [
        ("a" * strict_yaml.MAX_TEXT_BYTES, False),
        ("a" * (strict_yaml.MAX_TEXT_BYTES + 1), True),
        ("é" * (strict_yaml.MAX_TEXT_BYTES // 2), False),
        ("é" * (strict_yaml.MAX_TEXT_BYTES // 2) + "a", True),
        ("\ud800", False),
    ],
    ids=["at-cap", "over-cap", "two-byte-at-cap", "two-byte-over-cap", "surrogate-counted-not-raised"],
)
def test_too_large_counts_utf8_bytes(text: str, large: bool) -> None:
    assert strict_yaml.too_large(text) is large


def test_show_echoes_at_most_echo_chars() -> None:
    assert strict_yaml.show("abc") == "'abc'"
    long = "x" * (strict_yaml.ECHO_CHARS + 50)
    assert strict_yaml.show(long) == repr("x" * strict_yaml.ECHO_CHARS) + f"... ({len(long)} characters)"
