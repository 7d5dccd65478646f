"""Hypothesis strategies for Azure provider parameters: SecretProviderClass `spec.parameters` and csi
`volumeAttributes`, built from the shapes that the provider and kvinject could read differently.

Used by tests/differential/test_provider_view.py (against the provider's own parsing) and by the fuzzer's
pod volumes (tests/fuzz/strategies.py). Every strategy is a plain function of `draw`, cheap to generate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

Draw = Callable[[st.SearchStrategy[Any]], Any]

# Each pool is (values the provider reads cleanly, near misses). A draw takes a near miss now and then, so that
# about half the generated maps are complete and valid and the rest probe one edge at a time.
Pool = tuple[tuple[str, ...], tuple[str, ...]]

# Go's strconv.ParseBool accepts exactly these (after TrimSpace); the rest are near misses.
BOOLEANS: Pool = (
    ("", "true", "false", "1", "0", "t", "f", "T", "F", "TRUE", "FALSE", "True", "False"),
    ("yes", "no", "on", "off", "y", "tRUE", "FaLsE", "2", "-1", "truee", "true\u200b", "\ufefftrue"),
)
# Go's TrimSpace removes the first group; the second is not white space to Go (Python strips \x1f).
PADDING: Pool = (
    ("", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\x85", "\v"),
    ("\u200b", "\ufeff", "\x1f"),
)
# The same inside YAML text, where most other white space is a control character to yaml.v3.
YAML_PADDING: Pool = (("", " ", "  ", "\u00a0", "\u3000", "\u2009"), ("\t", "\u200b", "\x1f", "\v", "\x85"))
VAULT_NAMES: Pool = (
    ("kv1", "payments-kv", "a" * 24, "Kv-Prod", "0x1F"),
    ("ab", "a" * 25, "kv_1", "kv.1", "kv 1", "kv\u0131"),
)
TENANTS: Pool = (("72f988bf-86f1-41af-91ab-2d7cd011db47", "contoso.onmicrosoft.com", "t"), ("ten ant", "t\u00e9n", ""))
CLIENT_IDS: Pool = (("11111111-2222-3333-4444-555555555555", "c"), ("client id", "\u0441lient"))
CLOUDS: Pool = (
    ("", "AzurePublicCloud", "azurepubliccloud", "AZURECLOUD", "AzureChinaCloud", "AzureUSGovernmentCloud"),
    (
        "AzureUSGovernment",
        "AzureGermanCloud",
        "AzureStackCloud",
        "azurestackcloud",
        "AzurePub1icCloud",
        "AzurePublicCloud\u0131",
        "Azure\u017ftackCloud",  # long s: folds to s in Go's EqualFold
    ),
)
ENV_FILES: Pool = (("",), ("/etc/kubernetes/azurestackcloud.json", "relative.json", "with space.json"))
PARAMETER_KEYS = (
    "keyvaultName",
    "tenantID",
    "tenantId",
    "clientID",
    "usePodIdentity",
    "useVMManagedIdentity",
    "userAssignedIdentityID",
    "cloudName",
    "cloudEnvFileName",
    "objects",
)
LOOKALIKE_KEYS = ("clientId", "keyVaultName", "KeyvaultName", "tenantid", "TenantID", "objects ", "usepodidentity")
DRIVER_KEYS = (
    "csi.storage.k8s.io/serviceAccount.tokens",
    "csi.storage.k8s.io/pod.name",
    "csi.storage.k8s.io/pod.namespace",
)
OTHER_KEYS = ("secretProviderClass", "providerName", "filePermission", "x")

OBJECT_KEYS = (
    "objectName",
    "objectAlias",
    "objectType",
    "objectVersion",
    "objectFormat",
    "objectEncoding",
    "objectVersionHistory",
    "filePermission",
)
# Scalars that YAML readers resolve to something other than a string, or quote-worthy text.
TRICKY_SCALARS = (
    "0x1F",
    "0o17",
    "017",
    "1e3",
    "1_000",
    ".inf",
    "-.5",
    "true",
    "yes",
    "on",
    "no",
    "~",
    "null",
    "NULL",
    "",
    "2001-12-14",
    "12:30:45",
    "'quoted'",
    '"double"',
    "a: b",
    "a #b",
    "#x",
    "-",
    "- x",
    "[a]",
    "{a: b}",
    "&a x",
    "*a",
    "!!str x",
    "!!binary aGVsbG8=",
    "<<",
    "|",
    ">",
    "%x",
    "@x",
    "`x",
    "a\tb",
    " padded ",
    "\u00a0nbsp\u00a0",
    "\u3000ideographic",
    "caf\u00e9",
    "\u202egnp",
)
OBJECT_NAMES: Pool = (
    ("db-password", "api-tls", "0x1F", "1e3", "true", "017", "Secret-1", "a" * 127),
    ("a" * 128, "a_b", "a.b", "", "~"),
)
OBJECT_TYPES: Pool = (("secret", "key", "cert"), ("SECRET", "Secret", "certificate", "", "~"))
OBJECT_VERSIONS: Pool = (("", "abc123", "0123456789abcdef0123456789abcdef", "007", "1e3"), ("latest!", "v1.0", "~"))
ALIASES: Pool = (("", "db", "tls.pem", "dir/file", ".hidden", "sp ace", "caf\u00e9"), ("../escape", "/abs", "a..b"))
FORMATS: Pool = (("", "", "", "pem", "PEM"), ("pfx", "PFX", "der", "p\u0435m"))
ENCODINGS: Pool = (("", "", "", "", "", "utf-8", "hex", "base64", "HEX", "Base64"), ("utf8", "ba\u017fe64"))
HISTORIES: Pool = (("", "0", "1", "2", "5"), ("010", "0x2", "1.5", "-1", "'2'", "99999999999", "~"))
PERMISSIONS: Pool = (("", "0644", "644", "0400"), ("0o644", "999", "+644", "-1", "'0644'"))

FIELD_VALUES: dict[str, Pool] = {
    "objectName": OBJECT_NAMES,
    "objectAlias": ALIASES,
    "objectType": OBJECT_TYPES,
    "objectVersion": OBJECT_VERSIONS,
    "objectFormat": FORMATS,
    "objectEncoding": ENCODINGS,
    "objectVersionHistory": HISTORIES,
    "filePermission": PERMISSIONS,
}

# Text spliced into rendered YAML at a random place.
YAML_SPLICES = (
    " ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "!x ",
    "---\n",
    "...\n",
    "<<: ",
    "? ",
    ": ",
    "- ",
    "'",
    '"',
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    "|",
    ">",
    "%YAML 1.2\n",
    "\u00a0",
    "\u2028",
    "\x85",
    "\ufeff",
    "\x00",
    "\U0001f600",
)


def chance(draw: Draw, percent: int) -> bool:
    """True with about `percent` % probability; False shrinks to the plain case."""
    return bool(draw(st.integers(0, 99)) >= 100 - percent)


def pick(draw: Draw, values: tuple[str, ...]) -> str:
    return str(draw(st.sampled_from(values)))


def choose(draw: Draw, pool: Pool, miss: int = 4) -> str:
    """A clean value from `pool`, or with `miss` % odds a near miss."""
    good, near = pool
    return pick(draw, near) if near and chance(draw, miss) else pick(draw, good)


def padded(draw: Draw, value: str, pool: Pool = PADDING) -> str:
    """`value`, now and then between white space (Go's, or now and then not Go's)."""
    if chance(draw, 20):
        return choose(draw, pool) + value + choose(draw, pool)
    return value


def yaml_scalar(draw: Draw, value: str, *, flow: bool) -> str:
    """`value` written as a YAML scalar in a random style (plain may change or break it: on purpose)."""
    style = draw(st.integers(0, 5))
    if style == 1:
        return "'" + value.replace("'", "''") + "'"
    if style == 2:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if style == 3:  # double-quoted, escapes for everything outside printable ASCII
        out = "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\u{ord(c):04x}" for c in value)
        return '"' + out + '"'
    if style == 4 and not flow:
        return value + " # comment"
    return value  # plain, as written


def object_yaml(draw: Draw) -> str:
    """One KeyVaultObject document, block or flow, with provider-shaped or tricky fields."""
    keys = ["objectName", "objectType"] if chance(draw, 95) else ["objectName"]
    keys += [k for k in OBJECT_KEYS if k not in keys and chance(draw, 12)]
    if chance(draw, 4):
        keys.append(pick(draw, ("objectname", "ObjectName", "unknown", "<<", "~", "objectName")))
    if chance(draw, 30):
        keys = draw(st.permutations(keys))
    flow = chance(draw, 25)
    pairs = []
    for key in keys:
        pool = FIELD_VALUES.get(key, OBJECT_NAMES)
        value = pick(draw, TRICKY_SCALARS) if chance(draw, 3) else padded(draw, choose(draw, pool), YAML_PADDING)
        numeric = key in ("objectVersionHistory", "filePermission") and not chance(draw, 10)
        pairs.append((key, value if numeric else yaml_scalar(draw, value, flow=flow)))
    if flow:
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    newline = "\r\n" if chance(draw, 5) else "\n"
    return newline.join(f"{k}: {v}" for k, v in pairs) + newline


def _double_quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def objects_yaml(draw: Draw) -> str:
    """An `objects` parameter: `array:` of YAML strings, each written block, quoted or flow."""
    items = [object_yaml(draw) for _ in range(draw(st.integers(0 if chance(draw, 5) else 1, 4)))]
    style = draw(st.integers(0, 4))
    indent = pick(draw, ("  ", "    ", " ")) if chance(draw, 97) else "\t"
    if style <= 1 and items:  # the documented form: block list of literal block scalars
        lines = ["array:"]
        for item in items:
            chomp = pick(draw, ("|", "|", "|", "|", "|-", "|+", "|2", ">"))
            lines.append(f"{indent}- {chomp}")
            lines.extend(f"{indent}  {line}" if line else "" for line in item.rstrip("\n").split("\n"))
        text = "\n".join(lines) + "\n"
    elif style == 2 or not items:  # flow list of double-quoted strings
        text = "array: [" + ", ".join(_double_quoted(item) for item in items) + "]"
    elif style == 3:  # block list of double-quoted strings
        text = "array:\n" + "".join(f"{indent}- {_double_quoted(item)}\n" for item in items)
    else:  # single-quoted multi-line strings (line folding: a blank line is a newline)
        text = "array:\n" + "".join(
            f"{indent}- '" + item.replace("'", "''").replace("\n", "\n\n" + indent + "  ") + "'\n" for item in items
        )
    if chance(draw, 8):
        text = pick(draw, ("---\n", "# comment\n", "\n\n", "%YAML 1.1\n---\n")) + text
    if chance(draw, 5):
        text += pick(draw, ("---\narray: []\n", "...\n", "# end\n", "extra: 1\n"))
    if chance(draw, 8):
        text = text.replace("\n", "\r\n")
    for _ in range(draw(st.integers(1, 2)) if chance(draw, 12) else 0):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + pick(draw, YAML_SPLICES) + text[at:]
    return padded(draw, text, PADDING if chance(draw, 50) else YAML_PADDING)


def parameter_value(draw: Draw, key: str) -> str:
    """A value for parameter `key`: mostly of the right kind, sometimes a near miss."""
    if key == "objects":
        return objects_yaml(draw)
    pools: dict[str, Pool] = {
        "usePodIdentity": BOOLEANS,
        "useVMManagedIdentity": BOOLEANS,
        "keyvaultName": VAULT_NAMES,
        "tenantID": TENANTS,
        "tenantId": TENANTS,
        "clientID": CLIENT_IDS,
        "userAssignedIdentityID": CLIENT_IDS,
        "cloudName": CLOUDS,
        "cloudEnvFileName": ENV_FILES,
    }
    pool = pools.get(key, (("x", "", '{"api://AzureADTokenExchange":{"token":"t"}}'), ()))
    return padded(draw, choose(draw, pool))


@st.composite
def class_parameters(draw: Draw) -> dict[str, str]:
    """A SecretProviderClass's spec.parameters for the Azure provider: usually complete, sometimes not."""
    params: dict[str, str] = {}
    for key in ("keyvaultName", "objects"):
        if chance(draw, 97):
            params[key] = parameter_value(draw, key)
    tenants = draw(st.sampled_from((("tenantId",), ("tenantID",), ("tenantId", "tenantID"))))
    if chance(draw, 3):
        tenants = ()
    for key in tenants:
        params[key] = parameter_value(draw, key)
    if chance(draw, 70):
        params["clientID"] = parameter_value(draw, "clientID")
    for key in ("usePodIdentity", "useVMManagedIdentity", "userAssignedIdentityID", "cloudName"):
        if chance(draw, 20):
            params[key] = parameter_value(draw, key)
    if chance(draw, 4):
        params["cloudEnvFileName"] = parameter_value(draw, "cloudEnvFileName")
    if chance(draw, 5):
        params[pick(draw, LOOKALIKE_KEYS + DRIVER_KEYS + OTHER_KEYS)] = parameter_value(draw, "x")
    return params


@st.composite
def attribute_overrides(draw: Draw) -> dict[str, str]:
    """volumeAttributes beyond the class name: one or two parameters of the class overridden, or a driver key."""
    overrides: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 2))):
        key = pick(draw, PARAMETER_KEYS) if chance(draw, 90) else pick(draw, LOOKALIKE_KEYS + DRIVER_KEYS)
        overrides[key] = parameter_value(draw, key)
    return overrides


@st.composite
def volume_attributes(draw: Draw) -> dict[str, str]:
    """A csi volume's volumeAttributes: the class name, sometimes overriding parameters of the class."""
    attributes = {"secretProviderClass": pick(draw, ("kv", "payments-kv"))}
    if chance(draw, 35):
        attributes.update(draw(attribute_overrides()))
    return attributes
