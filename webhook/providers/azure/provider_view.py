"""What the Azure Key Vault provider reads from a volume's SecretProviderClass parameters, or a refusal.

The Secrets Store CSI driver hands the provider the class's `spec.parameters` overridden by the
pod volume's `volumeAttributes` (`effective_parameters`). `read` turns that map into a `View` of
exactly what the provider (github.com/Azure/secrets-store-csi-driver-provider-azure v1.7.0) will act
on: which identity it authenticates as, in which tenant and cloud, against which vault, and which
objects it fetches under which file names. Anything the provider would reject, and anything
kvinject cannot judge exactly, raises `Unreadable` (deny by default):

* YAML in `objects` beyond the plain subset (`webhook.providers.strict_yaml`: anchors, aliases,
  tags, merge keys, directives, document markers, duplicate keys, nesting deeper than the
  provider's shape) is refused before any node is built, so a few hundred bytes of nested aliases
  cost nothing; so are unknown keys and null array entries, which the provider silently drops;
* sizes are capped (`MAX_OBJECTS_BYTES`, `MAX_OBJECTS`, `MAX_VALUE_CHARS`);
* booleans follow Go's strconv.ParseBool after strings.TrimSpace, and everything else is trimmed
  with Go's definition of white space (`go_trim_space`);
* parameters the provider ignores but a reader could mistake for one it reads (`clientId`,
  `keyVaultName`, ...) are refused, as is any `csi.storage.k8s.io/` key: the driver passes the
  pod's service account token under such a key only when the CSIDriver requests one, otherwise a
  token written into the class would be used;
* `cloudEnvFileName` is honoured only with `cloudName: AzureStackCloud` (the provider sets it as
  a process-wide environment variable, so another mount's value could otherwise decide), and
  `AzureStackCloud` needs it.

How the provider's YAML library (gopkg.in/yaml.v3) reads a scalar into a Go string field: a
quoted or block scalar gives its text; a plain scalar gives its text as written whatever it
resolves to (`0x1F`, `true`, `1e3` stay as written); a plain null (empty, `~`, `null`, `Null`,
`NULL`) leaves the field empty, and in a list of strings drops the entry. The integer field
`objectVersionHistory` accepts only plain decimal digits here (yaml.v3 would read `010` as 8).

Pure: no I/O, no clock. Messages name the field and never echo more than `ECHO_CHARS` of a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import yaml

from webhook.providers import strict_yaml

IdentityMode = Literal["workload", "pod-identity", "vm-managed-identity", "service-principal"]

MAX_OBJECTS_BYTES = strict_yaml.MAX_TEXT_BYTES
"""The `objects` parameter, in UTF-8 bytes before trimming."""
MAX_OBJECTS = strict_yaml.MAX_ENTRIES
"""Entries of the `objects` array."""
MAX_VALUE_CHARS = 4096
"""Any other parameter the provider reads."""
ECHO_CHARS = strict_yaml.ECHO_CHARS
"""At most this much of a value appears in a message."""

# Go's unicode.IsSpace, which strings.TrimSpace trims (not U+200B, U+FEFF, nor Python's \x1c-\x1f).
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"
)

# Go's strconv.ParseBool.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# Parameter names the provider reads (pkg/provider/types).
KEYVAULT_NAME = "keyvaultName"
CLOUD_NAME = "cloudName"
USE_POD_IDENTITY = "usePodIdentity"
USE_VM_MANAGED_IDENTITY = "useVMManagedIdentity"
USER_ASSIGNED_IDENTITY_ID = "userAssignedIdentityID"
TENANT_ID = "tenantID"  # wins over the deprecated tenantId
TENANT_ID_DEPRECATED = "tenantId"
CLOUD_ENV_FILE_NAME = "cloudEnvFileName"
CLIENT_ID = "clientID"
OBJECTS = "objects"
READ_PARAMETERS = frozenset(
    {
        KEYVAULT_NAME,
        CLOUD_NAME,
        USE_POD_IDENTITY,
        USE_VM_MANAGED_IDENTITY,
        USER_ASSIGNED_IDENTITY_ID,
        TENANT_ID,
        TENANT_ID_DEPRECATED,
        CLOUD_ENV_FILE_NAME,
        CLIENT_ID,
        OBJECTS,
    }
)
_READ_LOWER = frozenset(k.lower() for k in READ_PARAMETERS)
DRIVER_PREFIX = "csi.storage.k8s.io/"

# go-autorest's azure.EnvironmentFromName (case-insensitive), by canonical Environment.Name.
AZURE_STACK_CLOUD = "AzureStackCloud"
_CLOUDS = {
    "AZURECHINACLOUD": "AzureChinaCloud",
    "AZUREGERMANCLOUD": "AzureGermanCloud",
    "AZURECLOUD": "AzurePublicCloud",
    "AZUREPUBLICCLOUD": "AzurePublicCloud",
    "AZUREUSGOVERNMENT": "AzureUSGovernmentCloud",
    "AZUREUSGOVERNMENTCLOUD": "AzureUSGovernmentCloud",
    "AZURESTACKCLOUD": AZURE_STACK_CLOUD,
}

# Fields of the provider's KeyVaultObject, by YAML key.
OBJECT_NAME = "objectName"
OBJECT_ALIAS = "objectAlias"
OBJECT_TYPE = "objectType"
OBJECT_VERSION = "objectVersion"
OBJECT_FORMAT = "objectFormat"
OBJECT_ENCODING = "objectEncoding"
OBJECT_VERSION_HISTORY = "objectVersionHistory"
FILE_PERMISSION = "filePermission"
_OBJECT_KEYS = frozenset(
    {
        OBJECT_NAME,
        OBJECT_ALIAS,
        OBJECT_TYPE,
        OBJECT_VERSION,
        OBJECT_FORMAT,
        OBJECT_ENCODING,
        OBJECT_VERSION_HISTORY,
        FILE_PERMISSION,
    }
)
OBJECT_TYPES = frozenset({"secret", "key", "cert"})
_FORMATS = frozenset({"pem", "pfx"})
_ENCODINGS = frozenset({"hex", "base64", "utf-8"})

_VAULT_NAME = re.compile(r"[-A-Za-z0-9]{3,24}")
_KV_OBJECT_NAME = re.compile(r"[-A-Za-z0-9]{1,127}")
_KV_OBJECT_VERSION = re.compile(r"[A-Za-z0-9]{0,64}")
_IDENTIFIER = re.compile(r"[\x21-\x7e]{1,512}")
_VERSION_HISTORY = re.compile(r"0|[1-9][0-9]{0,8}")
_FILE_PERMISSION = re.compile(r"0?[0-7]{3}")
# Characters refused in a value read from YAML (after escapes are decoded).
_VALUE_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")


class Unreadable(ValueError):
    """The provider would reject these parameters, or kvinject cannot tell exactly what it would do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderObject(NamedTuple):
    """One entry of `objects` as the provider holds it (every string field trimmed)."""

    object_name: str
    object_alias: str
    object_type: str
    object_version: str  # "" = the latest version
    object_format: str
    object_encoding: str
    version_history: int = 0  # objectVersionHistory; > 1 mounts that many versions under file_name/<i>
    file_permission: str = ""  # octal; "" = the driver's default

    @property
    def file_name(self) -> str:
        """The file the provider writes (relative to the mount): the alias, else the name."""
        return self.object_alias or self.object_name


@dataclass(frozen=True, slots=True)
class View:
    """What the provider acts on for one volume."""

    identity_mode: IdentityMode
    """pod-identity and vm-managed-identity win over a clientID; service-principal means the
    credentials come from the volume's nodePublishSecretRef (the provider fails without one)."""
    client_id: str
    tenant_id: str
    user_assigned_identity_id: str
    keyvault_name: str
    cloud_name: str
    """As written, trimmed ("" = the provider's configured default cloud)."""
    cloud: str
    """Canonical name of the cloud environment (AzurePublicCloud, ..., AzureStackCloud), "" for the default."""
    cloud_env_file_name: str
    objects: tuple[ProviderObject, ...]


def effective_parameters(class_params: Mapping[str, str], volume_attributes: Mapping[str, str]) -> dict[str, str]:
    """The map the driver hands the provider: class parameters, then every volume attribute over them."""
    merged = dict(class_params)
    merged.update(volume_attributes)
    return merged


def go_trim_space(value: str) -> str:
    """Go's strings.TrimSpace."""
    return value.strip(GO_SPACE)


show = strict_yaml.show


def read(params: Mapping[str, str]) -> View:
    """The provider's view of the merged parameters, or Unreadable."""
    _check_keys(params)
    keyvault_name = _scalar(params, KEYVAULT_NAME)
    tenant_id = _scalar(params, TENANT_ID) or _scalar(params, TENANT_ID_DEPRECATED)
    client_id = _scalar(params, CLIENT_ID)
    user_assigned = _scalar(params, USER_ASSIGNED_IDENTITY_ID)
    use_pod_identity = _boolean(params, USE_POD_IDENTITY)
    use_vm_identity = _boolean(params, USE_VM_MANAGED_IDENTITY)

    if not keyvault_name:
        raise Unreadable(f"{KEYVAULT_NAME} is not set")
    if not _VAULT_NAME.fullmatch(keyvault_name):
        raise Unreadable(f"{KEYVAULT_NAME} {show(keyvault_name)} is not 3-24 letters, digits or '-'")
    if not tenant_id:
        raise Unreadable(f"{TENANT_ID} (or {TENANT_ID_DEPRECATED}) is not set")
    tenant_field = TENANT_ID if _scalar(params, TENANT_ID) else TENANT_ID_DEPRECATED
    _identifier(tenant_field, tenant_id)
    if client_id:
        _identifier(CLIENT_ID, client_id)
    if user_assigned:
        _identifier(USER_ASSIGNED_IDENTITY_ID, user_assigned)

    mode = _mode(use_pod_identity, use_vm_identity, client_id)

    cloud_name, cloud, cloud_env_file_name = _cloud(params)
    objects = _objects(params)
    return View(
        identity_mode=mode,
        client_id=client_id,
        tenant_id=tenant_id,
        user_assigned_identity_id=user_assigned,
        keyvault_name=keyvault_name,
        cloud_name=cloud_name,
        cloud=cloud,
        cloud_env_file_name=cloud_env_file_name,
        objects=objects,
    )


def identity_mode(params: Mapping[str, str]) -> IdentityMode:
    """Only the identity the provider would authenticate as (what `read` would say), or Unreadable."""
    return _mode(
        _boolean(params, USE_POD_IDENTITY), _boolean(params, USE_VM_MANAGED_IDENTITY), _scalar(params, CLIENT_ID)
    )


def _mode(use_pod_identity: bool, use_vm_identity: bool, client_id: str) -> IdentityMode:
    if use_pod_identity and use_vm_identity:
        raise Unreadable(f"{USE_POD_IDENTITY} and {USE_VM_MANAGED_IDENTITY} are both true (the provider refuses both)")
    if use_pod_identity:
        return "pod-identity"
    if use_vm_identity:
        return "vm-managed-identity"
    if client_id:
        return "workload"
    return "service-principal"


# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------


def _check_keys(params: Mapping[str, str]) -> None:
    for key, value in params.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise Unreadable("a parameter name or value is not a string")
        if _has_surrogate(key) or _has_surrogate(value):
            raise Unreadable(f"parameter {show(key)} has a lone surrogate (not valid UTF-8)")
        if key in READ_PARAMETERS:
            continue
        if key.lower().startswith(DRIVER_PREFIX):
            raise Unreadable(f"parameter {show(key)}: {DRIVER_PREFIX} keys are the driver's and kubelet's to set")
        if go_trim_space(key).lower() in _READ_LOWER:
            raise Unreadable(f"parameter {show(key)} is not read by the provider, but looks like one it reads")


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _scalar(params: Mapping[str, str], key: str) -> str:
    raw = params.get(key, "")
    if len(raw) > MAX_VALUE_CHARS:
        raise Unreadable(f"{key} is longer than {MAX_VALUE_CHARS} characters")
    return go_trim_space(raw)


def _boolean(params: Mapping[str, str], key: str) -> bool:
    value = _scalar(params, key)
    if value == "" or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise Unreadable(f"{key} {show(value)} is not a boolean the provider reads (1, t, T, TRUE, true, True, 0, f, ...)")


def _identifier(field: str, value: str) -> None:
    if not _IDENTIFIER.fullmatch(value):
        raise Unreadable(f"{field} {show(value)} is not printable ASCII without spaces (at most 512)")


def _cloud(params: Mapping[str, str]) -> tuple[str, str, str]:
    name = _scalar(params, CLOUD_NAME)
    env_file = _scalar(params, CLOUD_ENV_FILE_NAME)
    cloud = ""
    if name:
        if not name.isascii():
            raise Unreadable(f"{CLOUD_NAME} {show(name)} is not ASCII")
        found = _CLOUDS.get(name.upper())
        if found is None:
            raise Unreadable(f"{CLOUD_NAME} {show(name)} is not a cloud the provider knows")
        cloud = found
    if cloud == AZURE_STACK_CLOUD and not env_file:
        raise Unreadable(
            f"{CLOUD_NAME} {AZURE_STACK_CLOUD} without {CLOUD_ENV_FILE_NAME} reads whatever file another mount set"
        )
    if env_file:
        if cloud != AZURE_STACK_CLOUD:
            raise Unreadable(
                f"{CLOUD_ENV_FILE_NAME} without {CLOUD_NAME} {AZURE_STACK_CLOUD}: the provider would set it for "
                "every later mount"
            )
        _identifier(CLOUD_ENV_FILE_NAME, env_file)
    return name, cloud, env_file


# ------------------------------------------------------------------------------------------------
# The objects parameter: YAML with an `array` of YAML strings, each a KeyVaultObject
# ------------------------------------------------------------------------------------------------


def _objects(params: Mapping[str, str]) -> tuple[ProviderObject, ...]:
    raw = params.get(OBJECTS, "")
    if len(raw) > MAX_OBJECTS_BYTES or len(raw.encode("utf-8")) > MAX_OBJECTS_BYTES:
        raise Unreadable(f"{OBJECTS} is larger than {MAX_OBJECTS_BYTES} bytes")
    text = go_trim_space(raw)
    if not text:
        raise Unreadable(f"{OBJECTS} is not set")
    root = _compose(OBJECTS, text, max_depth=2)
    array: yaml.Node | None = None
    for _key, value in _mapping(OBJECTS, root, frozenset({"array"})):
        array = value
    if array is None:
        raise Unreadable(f"{OBJECTS} has no array")
    if not isinstance(array, yaml.SequenceNode):
        raise Unreadable(f"{OBJECTS}.array is not a list")
    if len(array.value) > MAX_OBJECTS:
        raise Unreadable(f"{OBJECTS}.array has more than {MAX_OBJECTS} entries")
    objects = []
    for index, item in enumerate(array.value):
        where = f"{OBJECTS}.array[{index}]"
        if not isinstance(item, yaml.ScalarNode):
            raise Unreadable(f"{where} is not a string")
        if _is_null(item):
            raise Unreadable(f"{where} is null (the provider would skip it silently)")
        objects.append(_object(where, item.value))
    return tuple(objects)


def _object(where: str, text: str) -> ProviderObject:
    root = _compose(where, text, max_depth=1)
    fields: dict[str, str] = {}
    for key, value in _mapping(where, root, _OBJECT_KEYS):
        if not isinstance(value, yaml.ScalarNode):
            raise Unreadable(f"{where}.{key} is not a scalar")
        if key == OBJECT_VERSION_HISTORY:
            if _is_null(value):
                continue
            if value.style is not None or not _VERSION_HISTORY.fullmatch(value.value):
                raise Unreadable(f"{where}.{key} {show(value.value)} is not a plain decimal number")
            fields[key] = value.value
            continue
        text_value = "" if _is_null(value) else value.value
        if _VALUE_REFUSED.search(text_value):
            raise Unreadable(f"{where}.{key} has a control or line-break character")
        fields[key] = go_trim_space(text_value)

    obj = ProviderObject(
        object_name=fields.get(OBJECT_NAME, ""),
        object_alias=fields.get(OBJECT_ALIAS, ""),
        object_type=fields.get(OBJECT_TYPE, ""),
        object_version=fields.get(OBJECT_VERSION, ""),
        object_format=fields.get(OBJECT_FORMAT, ""),
        object_encoding=fields.get(OBJECT_ENCODING, ""),
        version_history=int(fields.get(OBJECT_VERSION_HISTORY, "0")),
        file_permission=fields.get(FILE_PERMISSION, ""),
    )
    _check_object(where, obj)
    return obj


def _check_object(where: str, obj: ProviderObject) -> None:
    if not obj.object_name:
        raise Unreadable(f"{where}.{OBJECT_NAME} is not set")
    if not _KV_OBJECT_NAME.fullmatch(obj.object_name):
        raise Unreadable(
            f"{where}.{OBJECT_NAME} {show(obj.object_name)} is not a Key Vault name (letters, digits, '-')"
        )
    if obj.object_type not in OBJECT_TYPES:
        raise Unreadable(f"{where}.{OBJECT_TYPE} {show(obj.object_type)} is not secret, key or cert")
    if not _KV_OBJECT_VERSION.fullmatch(obj.object_version):
        raise Unreadable(f"{where}.{OBJECT_VERSION} {show(obj.object_version)} is not letters and digits")
    if obj.object_format:
        if not obj.object_format.isascii() or obj.object_format.lower() not in _FORMATS:
            raise Unreadable(f"{where}.{OBJECT_FORMAT} {show(obj.object_format)} is not pem or pfx")
        if obj.object_format.lower() == "pfx" and obj.object_type != "secret":
            raise Unreadable(f"{where}.{OBJECT_FORMAT} pfx is for objectType secret only")
    if obj.object_encoding:
        if obj.object_type != "secret":
            raise Unreadable(f"{where}.{OBJECT_ENCODING} is for objectType secret only")
        if not obj.object_encoding.isascii() or obj.object_encoding.lower() not in _ENCODINGS:
            raise Unreadable(f"{where}.{OBJECT_ENCODING} {show(obj.object_encoding)} is not hex, base64 or utf-8")
    if obj.file_permission and not _FILE_PERMISSION.fullmatch(obj.file_permission):
        raise Unreadable(f"{where}.{FILE_PERMISSION} {show(obj.file_permission)} is not an octal mode")
    name = obj.file_name
    if name.startswith("/") or ".." in name:
        raise Unreadable(f"{where}: file name {show(name)} is absolute or contains '..'")


# ------------------------------------------------------------------------------------------------
# Bounded YAML: the shared subset (webhook.providers.strict_yaml), its refusals as Unreadable
# ------------------------------------------------------------------------------------------------


def _compose(where: str, text: str, *, max_depth: int) -> yaml.Node:
    try:
        return strict_yaml.compose(where, text, max_depth=max_depth)
    except strict_yaml.Refused as exc:
        raise Unreadable(exc.reason) from None


def _mapping(where: str, node: yaml.Node, keys: frozenset[str]) -> Iterator[tuple[str, yaml.Node]]:
    try:
        yield from strict_yaml.mapping(where, node, keys)
    except strict_yaml.Refused as exc:
        raise Unreadable(exc.reason) from None


_is_null = strict_yaml.is_null
