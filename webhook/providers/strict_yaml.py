"""The plain YAML subset kvinject reads from a provider's YAML parameter (Azure's and Vault's `objects`).

Two YAML libraries read such a parameter: PyYAML here, gopkg.in/yaml.v3 in the provider. They disagree
exactly where YAML is rich: merge keys (`<<: [a, b]`: PyYAML lets the last map win, yaml.v3 the first),
anchors and aliases (and the cost of expanding them), tags, directives, several documents, duplicate keys
(yaml.v3 refuses them). So a token pass refuses all of these, and nesting deeper than the caller's shape,
before any node is built: a refused text costs one scan, however it is nested. What remains composes to
the same nodes in both libraries; the caller reads those nodes as its provider's fields.

Every refusal is `Refused(where, what)`, whose text is `"<where> <what>"` (e.g. `objects has an alias,
which kvinject does not follow`). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import yaml

MAX_TEXT_BYTES = 64 * 1024
"""What kvinject reads of one YAML parameter, in UTF-8 bytes."""
MAX_ENTRIES = 256
"""Entries of the list such a parameter holds."""
ECHO_CHARS = 100
"""At most this much of a value appears in a message."""

NULLS = frozenset({"", "~", "null", "Null", "NULL"})
"""Plain scalars both libraries read as null."""

# Characters refused anywhere in YAML text: C0 controls but tab and line breaks, DEL, C1 controls
# (NEL is a line break to one YAML reader and not another), line/paragraph separators, BOM,
# lone surrogates, non-characters.
_REFUSED_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")

_REFUSED_TOKENS: dict[type[yaml.Token], str] = {
    yaml.AnchorToken: "an anchor",
    yaml.AliasToken: "an alias",
    yaml.TagToken: "a tag",
    yaml.DirectiveToken: "a directive",
    yaml.DocumentStartToken: "a document marker",
    yaml.DocumentEndToken: "a document marker",
}
_OPENING = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSING = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


class Refused(ValueError):
    """The text is outside the subset, or not YAML: kvinject cannot tell exactly what the provider reads."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where} {what}")
        self.where = where
        self.what = what
        self.reason = f"{where} {what}"


def show(value: str) -> str:
    """A value for a message: quoted, at most ECHO_CHARS characters of it."""
    if len(value) > ECHO_CHARS:
        return repr(value[:ECHO_CHARS]) + f"... ({len(value)} characters)"
    return repr(value)


def too_large(text: str, max_bytes: int = MAX_TEXT_BYTES) -> bool:
    """More than `max_bytes` UTF-8 bytes (checked on characters first, so a huge text is not encoded)."""
    return len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes


def compose(where: str, text: str, *, max_depth: int) -> yaml.Node:
    """One YAML document as nodes, after a token pass that refuses what could cost or confuse.

    `max_depth` counts collections (block or flow) open at once: 1 = a flat list or map."""
    if _REFUSED_CHARACTERS.search(text):
        raise Refused(where, "has a control, separator or byte-order-mark character")
    depth = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            refused = _REFUSED_TOKENS.get(type(token))
            if refused is not None:
                raise Refused(where, f"has {refused}, which kvinject does not follow")
            if isinstance(token, _OPENING):
                depth += 1
                if depth > max_depth:
                    raise Refused(where, "nests deeper than the provider reads")
            elif isinstance(token, _CLOSING):
                depth -= 1
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise Refused(where, f"is not YAML kvinject reads: {show(str(problem))}{at}") from None
    except RecursionError:
        # Not reachable past the depth check; kept so no input can turn into a 500.
        raise Refused(where, "nests deeper than the provider reads") from None
    if node is None:
        raise Refused(where, "is empty")
    return node


def mapping(where: str, node: yaml.Node, keys: frozenset[str] | None = None) -> Iterator[tuple[str, yaml.Node]]:
    """The entries of a map, refusing keys that are not strings, merge keys and repeated keys, and (when
    `keys` is given) any key not in `keys`, including a plain null key."""
    if not isinstance(node, yaml.MappingNode):
        raise Refused(where, "is not a mapping")
    seen: set[str] = set()
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise Refused(where, "has a key that is not a string")
        key = key_node.value
        if key == "<<" and key_node.style is None:
            raise Refused(where, "has a merge key, which kvinject does not follow")
        if key in seen:
            raise Refused(where, f"repeats the key {show(key)}")
        seen.add(key)
        if keys is not None and (key not in keys or is_null(key_node)):
            raise Refused(where, f"has the key {show(key)}, which the provider does not read")
        yield key, value_node


def is_null(node: yaml.ScalarNode) -> bool:
    """A plain null: a Go string field stays empty, an entry of a list of strings is dropped."""
    return node.style is None and node.value in NULLS
