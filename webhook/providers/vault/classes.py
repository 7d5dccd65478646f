"""Vault SecretProviderClasses, pure: the parameters kvinject generates, and what a stored class reads as whom,
judged as the Vault CSI provider reads the parameters the Secrets Store CSI driver hands it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import yaml

from webhook.contract import ALL_KEYS, InjectionRequest, ObjectRef, parse_vault_ref
from webhook.model import SecretProviderClass, auth_mount
from webhook.names import KV2_API_SEGMENTS, VAULT_KEY
from webhook.providers import strict_yaml
from webhook.providers.vault import names as vn


@dataclass(frozen=True, slots=True)
class Server:
    """The Vault server kvinject judges for (server settings)."""

    address: str
    auth_mount: str
    audience: str = ""
    csi_ca_cert_path: str = ""


def kv2_api_path(ref: ObjectRef) -> str:
    """Where KV v2 serves a secret's latest version: `<mount>/data/<path>`, the provider's secretPath."""
    return f"{ref.vault}/data/{ref.name}"


def _objects_parameter(request: InjectionRequest) -> str:
    """The provider's `objects`: a YAML list, one entry per file. Every value matched the contract's grammar,
    so double quotes are enough to keep YAML from reading any of them as another type."""
    lines = []
    for m in sorted(request.objects, key=lambda o: o.alias):
        lines.append(f'- {vn.OBJECT_NAME}: "{m.alias}"')
        lines.append(f'  {vn.SECRET_PATH}: "{kv2_api_path(m.ref)}"')
        lines.append(f'  {vn.SECRET_KEY}: "{m.ref.key}"')
    return "\n".join(lines) + "\n"


def parameters(request: InjectionRequest, role: str, server: Server) -> dict[str, str]:
    """spec.parameters of the class for a csi-mode request: the pod's role on the server's auth mount."""
    params = {
        vn.ROLE_NAME: role,
        vn.ADDRESS: server.address,
        vn.AUTH_MOUNT: server.auth_mount,
        vn.OBJECTS: _objects_parameter(request),
    }
    if server.audience:
        params[vn.AUDIENCE] = server.audience
    if server.csi_ca_cert_path:
        params[vn.CA_CERT_PATH] = server.csi_ca_cert_path
    return params


class Unjudgeable(Exception):
    """The parameters cannot be judged exactly as the provider reads them."""


def _go_bool(value: str) -> bool:
    """Go's strconv.ParseBool, which the provider applies to vaultSkipTLSVerify."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise Unjudgeable(f"{vn.SKIP_TLS_VERIFY} {value[:16]!r} is not a boolean")


def _mount(params: Mapping[str, str]) -> str | None:
    """The auth mount the provider logs in on; None: its own default (-vault-mount), which kvinject cannot see."""
    old, new = params.get(vn.AUTH_MOUNT), params.get(vn.AUTH_MOUNT_NEW)
    if old and new and auth_mount(old) != auth_mount(new):
        raise Unjudgeable(f"it sets both {vn.AUTH_MOUNT} and {vn.AUTH_MOUNT_NEW}, to different mounts")
    chosen = new or old
    return auth_mount(chosen) if chosen else None


# What kvinject reads of `objects`: Azure's caps. Depth 4 = the list, an entry, a field's value and one level
# under it: enough that a merge-key list (`<<: [{...}, {...}]`) or secretArgs is refused by name, with the fix.
MAX_OBJECTS_BYTES = strict_yaml.MAX_TEXT_BYTES
MAX_OBJECTS = strict_yaml.MAX_ENTRIES
_OBJECTS_DEPTH = 4
_STR = "tag:yaml.org,2002:str"


def _string(entry: Mapping[str, yaml.Node], field: str) -> str | None:
    """A field as the provider's Go string holds it, "" when absent; None when it is not a YAML string
    (a plain null, number, boolean...: yaml.v3 would read its text or nothing, kvinject does not guess)."""
    node = entry.get(field)
    if node is None:
        return ""
    if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
        return None
    return str(node.value)


def _entry_ref(where: str, node: yaml.Node) -> ObjectRef:
    if not isinstance(node, yaml.MappingNode):
        raise Unjudgeable(f"{vn.OBJECTS} holds an entry that is not a map")
    # Merge keys, repeated keys (yaml.v3 refuses them: the class would not mount) and non-string keys.
    entry = dict(strict_yaml.mapping(where, node))
    unknown = sorted(set(entry) - vn.OBJECT_FIELDS)
    if unknown:
        raise Unjudgeable(f"{vn.OBJECTS} entry has unknown fields {', '.join(unknown)[:100]}")
    name = _string(entry, vn.OBJECT_NAME)
    path = _string(entry, vn.SECRET_PATH)
    key = _string(entry, vn.SECRET_KEY)
    method = _string(entry, vn.METHOD)
    if not name or not path or key is None or method is None:
        raise Unjudgeable(f"{vn.OBJECTS} entry needs {vn.OBJECT_NAME} and {vn.SECRET_PATH} written as strings")
    if method not in ("", "GET"):
        raise Unjudgeable(f"object {name[:64]!r} uses method {method[:16]!r}: kvinject judges only reads (GET)")
    if vn.SECRET_ARGS in entry:
        raise Unjudgeable(f"object {name[:64]!r} sets {vn.SECRET_ARGS}, which changes what is read")
    mount, _, rest = path.partition("/")
    segment, _, logical = rest.partition("/")
    if segment != KV2_API_SEGMENTS[0] or not logical:
        raise Unjudgeable(
            f"object {name[:64]!r} reads {path[:200]!r}, which is not a KV v2 secret (<mount>/data/<path>):"
            " kvinject judges only KV v2 reads"
        )
    if key and not VAULT_KEY.match(key):
        raise Unjudgeable(f"object {name[:64]!r} has secretKey {key[:64]!r}, which kvinject cannot name")
    ref, problems = parse_vault_ref(f"{mount}/{logical}#{key or 'x'}")
    if ref is None:
        raise Unjudgeable(f"object {name[:64]!r} reads {path[:200]!r}: {'; '.join(problems)}")
    return ObjectRef(ref.vault, ref.name, key=key or ALL_KEYS)


def _read_objects(text: str) -> tuple[ObjectRef, ...]:
    """`objects` through the plain YAML subset (webhook.providers.strict_yaml): no anchors, aliases, tags,
    merge keys, directives, document markers or repeated keys, where PyYAML and the provider's yaml.v3 could
    read different paths or keys, and nothing nested deeper than the provider's shape."""
    if not text.strip():
        raise Unjudgeable(f"{vn.OBJECTS} is not a list of objects")
    try:
        root = strict_yaml.compose(vn.OBJECTS, text, max_depth=_OBJECTS_DEPTH)
        if not isinstance(root, yaml.SequenceNode) or not root.value:
            raise Unjudgeable(f"{vn.OBJECTS} is not a list of objects")
        if len(root.value) > MAX_OBJECTS:
            raise Unjudgeable(f"{vn.OBJECTS} has more than {MAX_OBJECTS} entries")
        return tuple(_entry_ref(f"{vn.OBJECTS}[{i}]", node) for i, node in enumerate(root.value))
    except strict_yaml.Refused as exc:
        raise Unjudgeable(exc.reason) from None
    except RecursionError:  # the depth check stops nesting first; no input may reach the 500 handler
        raise Unjudgeable(f"{vn.OBJECTS} nests deeper than kvinject reads") from None


@lru_cache(maxsize=512)
def _parsed(text: str) -> tuple[ObjectRef, ...] | str:
    """`objects` read once per text (every pod of a Deployment mounts the same class; a class at the cap is
    64 KiB of YAML): the refs, or why they cannot be judged (a reason, not the exception, so a cached refusal
    carries no traceback)."""
    try:
        return _read_objects(text)
    except Unjudgeable as exc:
        return str(exc)


def _objects(params: Mapping[str, str]) -> list[ObjectRef]:
    text = params.get(vn.OBJECTS, "")
    if strict_yaml.too_large(text, MAX_OBJECTS_BYTES):  # before the cache: its keys stay at most the cap
        raise Unjudgeable(f"{vn.OBJECTS} is larger than {MAX_OBJECTS_BYTES} bytes")
    found = _parsed(text)
    if isinstance(found, str):
        raise Unjudgeable(found)
    return list(found)


def _driver_parameters(where: str, class_params: Mapping[str, str]) -> list[str]:
    """Class parameters under the driver's prefix: the driver copies the class's parameters first and sets the
    pod's own values over them, but the ServiceAccount token only when the CSIDriver has tokenRequests; else the
    class's `serviceAccount.tokens` reaches the provider, which logs in with the JWT in it, not the pod's. Any
    letter case: the key belongs to the driver, not to a class (names only: the value may hold a token)."""
    return [
        f"{where} sets parameter {k[:100]}: {vn.DRIVER_PREFIX} keys are the CSI driver's to set (the pod's name,"
        " ServiceAccount and token); one set in a class can reach the provider in their place, which would then"
        " log in with a token stored in the class instead of the pod's"
        for k in sorted(class_params)
        if k.lower().startswith(vn.DRIVER_PREFIX)
    ]


def _own_problems(where: str, params: Mapping[str, str], server: Server) -> list[str]:
    """What makes a class read otherwise than as a pod's role on kvinject's Vault, whoever mounts it."""
    problems: list[str] = []
    if params.get(vn.TOKEN_PATH):
        problems.append(
            f"{where} sets {vn.TOKEN_PATH}: the provider would log in with the token in that file, not the pod's"
        )
    address = params.get(vn.ADDRESS, "")
    if address and address.rstrip("/") != server.address.rstrip("/"):
        problems.append(f"{where} reads from Vault at {address[:200]!r}, not {server.address or 'the configured one'}")
    if params.get(vn.NAMESPACE):
        problems.append(f"{where} sets {vn.NAMESPACE}: kvinject judges only Vault's root namespace")
    if vn.SKIP_TLS_VERIFY in params and _go_bool(params[vn.SKIP_TLS_VERIFY]):
        problems.append(f"{where} sets {vn.SKIP_TLS_VERIFY}: the provider would not verify Vault's certificate")
    return problems


def class_problems(found: SecretProviderClass, server: Server) -> list[str]:
    """What is wrong with a Vault class on its own, before any pod mounts it."""
    where = f"SecretProviderClass {found.namespace}/{found.name}"
    problems = _driver_parameters(where, found.parameters)
    try:
        problems += _own_problems(where, found.parameters, server)
        _mount(found.parameters)
        _objects(found.parameters)
    except Unjudgeable as exc:
        return [*problems, f"{where} cannot be judged as the Vault CSI provider reads it: {exc}"]
    return problems


def declared_objects(
    found: SecretProviderClass,
    role: str,
    mount: str,
    server: Server,
    attributes: Mapping[str, str] | None = None,
) -> tuple[list[ObjectRef], list[str]]:
    """The secrets a Vault class (with a volume's attributes over its parameters, as the driver merges them)
    would read, and what is wrong with how: another role or auth mount than the pod's, or anything inexact."""
    where = f"SecretProviderClass {found.namespace}/{found.name}"
    attributes = attributes or {}
    params = {**found.parameters, **attributes}
    problems = [
        f"{where}: the volume attribute {k[:100]} would speak for the pod to the provider"
        for k in sorted(attributes)
        if k.startswith(vn.DRIVER_PREFIX)
    ]
    problems += _driver_parameters(where, found.parameters)
    try:
        problems += _own_problems(where, params, server)
        chosen = _mount(params)
        refs = _objects(params)
    except Unjudgeable as exc:
        return [], [*problems, f"{where} cannot be judged as the Vault CSI provider reads it: {exc}"]
    class_role = params.get(vn.ROLE_NAME, "")
    if class_role.lower() != role.lower():
        problems.append(
            f"{where} logs in as role {class_role[:128]!r}, not {role}, the role of the pod's ServiceAccount"
        )
    effective = chosen or auth_mount(vn.PROVIDER_DEFAULT_AUTH_MOUNT)
    if effective != mount:
        problems.append(f"{where} logs in on auth mount {effective[:128]!r}, not {mount}")
    return refs, problems
