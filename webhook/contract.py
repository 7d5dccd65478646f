"""The user-facing annotation contract: keys, defaults, grammar, and a pure parser.

`parse()` turns a pod's metadata (plus its namespace's defaults) into an
`InjectionRequest`, or into the complete list of problems found, so that one
denial can name every mistake at once.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from webhook.names import (
    CONTAINERS,
    DEFAULT_MOUNT_PATH,
    DEFAULT_STORE,
    ENV_PREFIX,
    INIT_FIRST,
    INJECT_LABEL,
    INJECTED_CONTAINERS,
    KV2_API_SEGMENTS,
    MAX_VAULT_PATH,
    MODE,
    MOUNT_PATH,
    OBJECT_NAME,
    OBJECT_VERSION,
    PREFIX,
    PROVIDER_CLASS,
    REFRESH,
    RESTART_ON_CHANGE,
    SECRET_PREFIX,
    STATUS,
    STATUS_INJECTED,
    STORE,
    STORE_AZURE,
    STORE_VAULT,
    VAULT,
    VAULT_KEY,
    VAULT_MOUNT,
    VAULT_NAME,
    VAULT_PATH_SEGMENT,
    VAULT_ROLE,
    VAULT_ROLE_NAME,
)

# Keys kvinject writes itself; a user may not set them but re-admission must accept them.
OUTPUT_KEYS = frozenset({STATUS, INJECTED_CONTAINERS})
SINGLE_KEYS = frozenset(
    {VAULT, MODE, CONTAINERS, MOUNT_PATH, PROVIDER_CLASS, INIT_FIRST, STORE, VAULT_ROLE, REFRESH, RESTART_ON_CHANGE}
)

# Bounds that keep one pod's admission cheap (Kubernetes caps all annotations at 256 KiB anyway).
MAX_OBJECTS = 256
MAX_ENV = 256
MAX_VALUE = 1024
_CACHEABLE_CHARS = 16 * 1024

# A file name that is also a valid annotation-key suffix: no separators, no leading dot.
_ALIAS_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,54}[A-Za-z0-9])?$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS1123_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,251}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*$")
_CONTAINER_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")

# kvinject.io/refresh: hours, minutes and seconds in that order, e.g. 90s, 5m, 1h30m (docs/rotation.md).
_DURATION_RE = re.compile(r"^(?:(\d{1,5})h)?(?:(\d{1,5})m)?(?:(\d{1,6})s)?$")
REFRESH_MIN = 60  # the default floor; a server setting may raise it (or a test lower it)
REFRESH_MAX = 24 * 3600


class Mode(StrEnum):
    CSI = "csi"
    INIT = "init"


class ObjectType(StrEnum):
    SECRET = "secret"
    KEY = "key"
    CERT = "cert"


# A Vault ref whose class reads every key of the secret (a hand-written class without secretKey).
ALL_KEYS = "*"


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """One object of a store, with its location resolved.

    Azure Key Vault: `[<type>:][<vault>/]<object>[@<version>]`; `key` is empty.
    HashiCorp Vault KV v2: `<mount>/<path>#<key>` as vault=mount, name=path (the logical path, without
    KV v2's `data/`), key=the field of the secret (`ALL_KEYS`: all of them).
    """

    vault: str
    name: str
    type: ObjectType = ObjectType.SECRET
    version: str = ""
    key: str = ""

    def __str__(self) -> str:
        if self.key:
            return f"{self.vault}/{self.name}#{self.key}"
        text = f"{self.vault}/{self.name}"
        if self.type is not ObjectType.SECRET:
            text = f"{self.type.value}:{text}"
        return f"{text}@{self.version}" if self.version else text


@dataclass(frozen=True, slots=True)
class Mounted:
    alias: str
    ref: ObjectRef


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    alias: str


@dataclass(frozen=True, slots=True)
class InjectionRequest:
    """What the pod asked for, validated and with defaults applied."""

    mode: Mode
    mount_path: str
    objects: tuple[Mounted, ...] = ()
    env: tuple[EnvVar, ...] = ()
    containers: tuple[str, ...] | None = None  # None: the default targets (see webhook.targets)
    recorded: tuple[str, ...] | None = None  # kvinject's record of its first injection; None: not injected yet
    provider_class: str | None = None
    init_first: bool = True
    warnings: tuple[str, ...] = field(default=())
    store: str = DEFAULT_STORE  # the provider every ref names (webhook.providers.get)
    role: str | None = None  # store vault: the pod's kvinject.io/vault-role, over its ServiceAccount's
    refresh: int | None = None  # mode init: seconds between re-reads by the refresh sidecar; None: no sidecar
    restart_on_change: bool = False  # csi: roll the owning workload when a mounted version changes

    @property
    def vaults(self) -> tuple[str, ...]:
        return tuple(sorted({m.ref.vault for m in self.objects}))


class ContractError(Exception):
    """Every problem found in a pod's annotations, reported together."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def is_opted_in(labels: Mapping[str, str] | None) -> bool:
    return bool(labels) and (labels or {}).get(INJECT_LABEL) == "true"


def parse_ref(text: str, default_vault: str | None) -> tuple[ObjectRef | None, list[str]]:
    """Parse one reference; returns the ref or the problems with it."""
    problems: list[str] = []
    rest = text.strip()
    obj_type = ObjectType.SECRET
    if ":" in rest:
        type_text, rest = rest.split(":", 1)
        try:
            obj_type = ObjectType(type_text)
        except ValueError:
            problems.append(f"unknown object type {type_text!r} (use secret, key or cert)")
    version = ""
    if "@" in rest:
        rest, version = rest.rsplit("@", 1)
        if not OBJECT_VERSION.match(version):
            problems.append(f"version {version!r} must be 1-32 letters or digits")
    vault = default_vault
    if "/" in rest:
        vault, rest = rest.split("/", 1)
        if not VAULT_NAME.match(vault):
            problems.append(
                f"vault name {vault!r} must be 3-24 characters of letters, digits and single hyphens,"
                " starting with a letter and ending with a letter or digit"
            )
    if not OBJECT_NAME.match(rest):
        problems.append(f"object name {rest!r} must be 1-127 letters, digits or hyphens")
    if vault is None:
        problems.append(f"no vault for {text!r}: write <vault>/{rest} or set the {VAULT} annotation")
    if problems:
        return None, problems
    assert vault is not None
    return ObjectRef(vault=vault, name=rest, type=obj_type, version=version), []


def parse_vault_ref(text: str, default_vault: str | None = None) -> tuple[ObjectRef | None, list[str]]:
    """Parse one HashiCorp Vault ref `<mount>/<path>#<key>` on a KV v2 engine; returns the ref or its problems.

    The mount is the first segment (nested mounts are not supported); the path is KV v2's logical path, so a
    ref never starts with the engine's API segments `data/` or `metadata/`. `default_vault` is ignored: the
    Key Vault default means nothing to Vault.
    """
    rest = text.strip()
    where, sep, key = rest.partition("#")
    if not sep:
        return None, [
            f"{rest[:200]!r} is not a Vault ref: write <mount>/<path>#<key>, e.g. secret/payments/db#password"
        ]
    problems: list[str] = []
    if not VAULT_KEY.match(key):
        problems.append(f"key {key[:200]!r} must be 1-128 letters, digits, '.', '_' or '-'")
    mount, slash, path = where.partition("/")
    if not VAULT_MOUNT.match(mount):
        problems.append(
            f"mount {mount[:200]!r} must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a"
            " letter or digit"
        )
    segments = path.split("/") if slash else []
    if not segments or not path:
        problems.append(f"no path in {rest[:200]!r}: write <mount>/<path>#<key>")
    elif len(path) > MAX_VAULT_PATH:
        problems.append(f"path is {len(path)} characters, more than {MAX_VAULT_PATH}")
    elif not all(VAULT_PATH_SEGMENT.match(s) for s in segments):
        problems.append(
            f"path {path[:200]!r} must be segments of letters, digits, '.', '_' or '-' separated by single '/',"
            " none starting or ending with '.'"
        )
    elif segments[0] in KV2_API_SEGMENTS and len(segments) > 1:
        problems.append(
            f"path {path[:200]!r} starts with KV v2's API segment {segments[0]}/: write the secret's path"
            f" ({mount}/{'/'.join(segments[1:])}#{key}); kvinject adds {segments[0]}/ itself"
        )
    if problems:
        return None, problems
    return ObjectRef(vault=mount, name=path, key=key), []


@dataclass(frozen=True, slots=True)
class Grammar:
    """How one store's refs are written, and the contract rules that follow from the store."""

    parse: Callable[[str, str | None], tuple[ObjectRef | None, list[str]]]
    one_location_per_class: bool  # Azure's class names one vault; Vault's objects each name their path
    default_location: bool  # kvinject.io/vault (and the namespace's) apply
    role_annotation: bool  # kvinject.io/vault-role applies


# The grammars by store name; webhook.providers registers a provider for each (a unit test holds them equal).
GRAMMARS: dict[str, Grammar] = {
    STORE_AZURE: Grammar(parse_ref, one_location_per_class=True, default_location=True, role_annotation=False),
    STORE_VAULT: Grammar(parse_vault_ref, one_location_per_class=False, default_location=False, role_annotation=True),
}


def _parse_store(annotations: Mapping[str, str], problems: list[str]) -> str | None:
    store = annotations.get(STORE, DEFAULT_STORE)
    if store not in GRAMMARS:
        problems.append(f"{STORE}: {store[:64]!r} must be {' or '.join(sorted(GRAMMARS))}")
        return None
    return store


def _parse_bool(key: str, value: str, problems: list[str]) -> bool:
    if value in ("true", "false"):
        return value == "true"
    problems.append(f'{key}: {value!r} must be "true" or "false"')
    return True


def parse_duration(text: str) -> int | None:
    """Seconds in a duration such as `90s`, `5m` or `1h30m`; None when it is not one (or is zero)."""
    match = _DURATION_RE.match(text.strip())
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return (hours * 60 + minutes) * 60 + seconds or None


def format_duration(seconds: int) -> str:
    """The shortest duration text for `seconds` that `parse_duration` reads back (`300` -> `5m`)."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"


def _parse_refresh(value: str, floor: int, problems: list[str]) -> int | None:
    seconds = parse_duration(value)
    if seconds is None or not floor <= seconds <= REFRESH_MAX:
        problems.append(
            f"{REFRESH}: {value[:64]!r} must be a duration from {format_duration(floor)} to"
            f" {format_duration(REFRESH_MAX)}, written in hours, minutes and seconds (e.g. 5m, 1h, 1h30m)"
        )
        return None
    return seconds


def _parse_mount_path(value: str, problems: list[str]) -> str:
    normalized = posixpath.normpath(value) if value else ""
    if not value.startswith("/") or ".." in value.split("/") or normalized == "/" or ":" in value:
        problems.append(f"{MOUNT_PATH}: {value!r} must be an absolute path other than / without '..' or ':'")
    return normalized


def _parse_containers(value: str, problems: list[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not names:
        problems.append(f"{CONTAINERS}: list at least one container name, or remove the annotation")
    for name in names:
        if not _CONTAINER_RE.match(name):
            problems.append(f"{CONTAINERS}: {name!r} is not a valid container name")
    return names


def _parse_recorded(annotations: Mapping[str, str], problems: list[str]) -> tuple[str, ...] | None:
    """kvinject's own record, trusted only beside its status annotation: on a pod kvinject has not injected
    yet it was written by someone else, and kvinject refuses rather than silently replacing it."""
    value = annotations.get(INJECTED_CONTAINERS)
    if value is None:
        return None
    if annotations.get(STATUS) != STATUS_INJECTED:
        problems.append(
            f"{INJECTED_CONTAINERS} is kvinject's record of the containers it injected, written by kvinject"
            f" itself: remove it (name the containers to inject into with {CONTAINERS})"
        )
        return None
    if len(value) > MAX_VALUE:
        problems.append(f"{INJECTED_CONTAINERS}: value is {len(value)} characters, more than {MAX_VALUE}")
        return None
    names = tuple(n.strip() for n in value.split(",")) if value.strip() else ()
    bad = [n for n in names if not _CONTAINER_RE.match(n)]
    if bad or len(set(names)) != len(names):
        problems.append(f"{INJECTED_CONTAINERS}: {value[:200]!r} is not a list of distinct container names")
        return None
    return names


def parse_annotations(
    annotations: Mapping[str, str] | None,
    namespace_default_vault: str | None = None,
    refresh_floor: int = REFRESH_MIN,
) -> InjectionRequest:
    """Parse a pod's kvinject annotations; raises ContractError listing every problem. `refresh_floor`: the
    shortest kvinject.io/refresh allowed (the server's setting)."""
    # Replicas of one workload carry identical annotations: parse each distinct set once. Only small
    # sets are cached, so the cache's memory stays bounded whatever pods are sent.
    ours = tuple(sorted((k, v) for k, v in (annotations or {}).items() if k.startswith(PREFIX) and isinstance(v, str)))
    if sum(len(k) + len(v) for k, v in ours) > _CACHEABLE_CHARS:
        return _parse(dict(ours), namespace_default_vault, refresh_floor)
    return _parse_cached(ours, namespace_default_vault, refresh_floor)


@lru_cache(maxsize=1024)
def _parse_cached(
    items: tuple[tuple[str, str], ...], namespace_default_vault: str | None, refresh_floor: int
) -> InjectionRequest:
    return _parse(dict(items), namespace_default_vault, refresh_floor)


def _parse(annotations: Mapping[str, str], namespace_default_vault: str | None, refresh_floor: int) -> InjectionRequest:
    problems: list[str] = []
    secrets: dict[str, str] = {}
    envs: dict[str, str] = {}
    for key, value in annotations.items():
        if not key.startswith(PREFIX) or key in OUTPUT_KEYS:
            continue
        if len(value) > MAX_VALUE:
            problems.append(f"{key}: value is {len(value)} characters, more than {MAX_VALUE}")
            continue
        if key in SINGLE_KEYS:
            continue
        if key.startswith(SECRET_PREFIX):
            secrets[key[len(SECRET_PREFIX) :]] = value
        elif key.startswith(ENV_PREFIX):
            envs[key[len(ENV_PREFIX) :]] = value
        else:
            problems.append(
                f"unknown annotation {key!r} (known: vault, secret-<alias>, env-<VAR>, mode,"
                " containers, mount-path, provider-class, init-first, store, vault-role, refresh, restart-on-change)"
            )

    if len(secrets) > MAX_OBJECTS:
        problems.append(f"{len(secrets)} {SECRET_PREFIX}* annotations, more than {MAX_OBJECTS}")
        secrets = {}
    if len(envs) > MAX_ENV:
        problems.append(f"{len(envs)} {ENV_PREFIX}* annotations, more than {MAX_ENV}")
        envs = {}
    mode = Mode.CSI
    if MODE in annotations:
        try:
            mode = Mode(annotations[MODE])
        except ValueError:
            problems.append(f"{MODE}: {annotations[MODE]!r} must be csi or init")

    store = _parse_store(annotations, problems)
    grammar = GRAMMARS[store or DEFAULT_STORE]
    default_vault = annotations.get(VAULT) or namespace_default_vault
    if not grammar.default_location:
        default_vault = None
        if VAULT in annotations:
            problems.append(
                f"{VAULT} names a default Azure Key Vault, which means nothing with {STORE}: {store}:"
                " remove it (every Vault ref names its mount)"
            )
    elif VAULT in annotations and not VAULT_NAME.match(annotations[VAULT]):
        problems.append(f"{VAULT}: {annotations[VAULT]!r} is not a valid Key Vault name")
        default_vault = None
    role = annotations.get(VAULT_ROLE)
    if role is not None:
        if not grammar.role_annotation:
            problems.append(f"{VAULT_ROLE} applies only with {STORE}: {STORE_VAULT}")
        elif not VAULT_ROLE_NAME.match(role):
            problems.append(
                f"{VAULT_ROLE}: {role[:128]!r} must be 1-128 letters, digits, '.', '_' or '-', starting and"
                " ending with a letter or digit"
            )

    mount_path = DEFAULT_MOUNT_PATH
    if MOUNT_PATH in annotations:
        mount_path = _parse_mount_path(annotations[MOUNT_PATH], problems)
    containers = _parse_containers(annotations[CONTAINERS], problems) if CONTAINERS in annotations else None
    recorded = _parse_recorded(annotations, problems)
    init_first = _parse_bool(INIT_FIRST, annotations[INIT_FIRST], problems) if INIT_FIRST in annotations else True
    restart_on_change = False
    if RESTART_ON_CHANGE in annotations:
        restart_on_change = _parse_bool(RESTART_ON_CHANGE, annotations[RESTART_ON_CHANGE], problems)
        if annotations[RESTART_ON_CHANGE] == "true" and mode is Mode.INIT:
            # Only the CSI driver reports the versions a pod mounts; a silent no-op would promise restarts.
            problems.append(
                f"{RESTART_ON_CHANGE} works only in mode csi (the Secrets Store CSI driver reports the versions a"
                " pod mounts): remove it, or use mode csi"
            )

    provider_class = annotations.get(PROVIDER_CLASS)
    if provider_class is not None:
        if not _DNS1123_RE.match(provider_class):
            problems.append(f"{PROVIDER_CLASS}: {provider_class!r} is not a valid object name")
        if secrets:
            problems.append(
                f"{PROVIDER_CLASS} mounts an existing SecretProviderClass: remove the"
                f" {SECRET_PREFIX}* annotations or the {PROVIDER_CLASS} annotation"
            )
        if mode is Mode.INIT:
            problems.append(f"{PROVIDER_CLASS} works only in mode csi")

    objects: list[Mounted] = []
    for alias, value in sorted(secrets.items()):
        if not _ALIAS_RE.match(alias):
            problems.append(
                f"{SECRET_PREFIX}{alias}: alias {alias!r} must be a safe file name"
                " (letters, digits, '.', '_', '-'; not starting with '.')"
            )
            continue
        ref, ref_problems = grammar.parse(value, default_vault)
        problems.extend(f"{SECRET_PREFIX}{alias}: {p}" for p in ref_problems)
        if ref is not None:
            objects.append(Mounted(alias, ref))

    aliases = {m.alias: m for m in objects}
    by_ref = {m.ref: m for m in objects}
    env: list[EnvVar] = []
    for var, value in sorted(envs.items()):
        key = f"{ENV_PREFIX}{var}"
        if not _ENV_RE.match(var):
            problems.append(f"{key}: {var!r} is not a valid environment variable name")
            continue
        if mode is Mode.INIT:
            problems.append(
                f"{key}: environment variables need a synced Kubernetes Secret, which only mode csi"
                " creates; read the file instead or use mode csi"
            )
            continue
        if value in aliases or provider_class is not None:
            env.append(EnvVar(var, value))
            continue
        # A full reference: the object is also mounted, as a file named after the variable.
        ref, ref_problems = grammar.parse(value, default_vault)
        if ref is None:
            problems.append(
                f"{key}: {value!r} is neither an alias defined by a {SECRET_PREFIX}<alias>"
                f" annotation nor a valid reference ({'; '.join(ref_problems)})"
            )
            continue
        same = by_ref.get(ref)
        if same is not None:
            env.append(EnvVar(var, same.alias))
        elif var in aliases:
            problems.append(f"{key}: alias {var!r} is already used for a different object")
        else:
            mounted = Mounted(var, ref)
            objects.append(mounted)
            aliases[var] = mounted
            by_ref[ref] = mounted
            env.append(EnvVar(var, var))

    if mode is Mode.INIT:
        problems.extend(
            f"{SECRET_PREFIX}{m.alias}: key objects never leave Key Vault, so mode init cannot write them;"
            " use mode csi (which mounts the public key)"
            for m in objects
            if m.ref.type is ObjectType.KEY
        )
    vaults = sorted({m.ref.vault for m in objects})
    if mode is Mode.CSI and grammar.one_location_per_class and len(vaults) > 1:
        problems.append(
            f"mode csi mounts one SecretProviderClass, which holds one vault, but this pod names"
            f" {len(vaults)} ({', '.join(vaults)}): set {MODE}: init to read several vaults"
        )
    refresh = _parse_refresh(annotations[REFRESH], refresh_floor, problems) if REFRESH in annotations else None
    if REFRESH in annotations and mode is Mode.CSI:
        problems.append(
            f"{REFRESH} works only in mode init: in mode csi the Secrets Store CSI driver re-reads the mounted"
            " objects itself (its rotation, --enable-secret-rotation and --rotation-poll-interval), and"
            " kvinject.io/restart-on-change rolls the workload when a version changes"
        )
        refresh = None
    elif refresh is not None and objects and all(m.ref.version for m in objects):
        problems.append(
            f"{REFRESH}: every object is pinned to a version, so re-reading can never change a file:"
            f" remove {REFRESH} or unpin an object"
        )
    warnings: list[str] = []
    if mode is Mode.CSI and INIT_FIRST in annotations:
        warnings.append(f"{INIT_FIRST} is ignored in mode csi")
    if not objects and provider_class is None and not problems:
        problems.append(
            f"pod is labelled {INJECT_LABEL}=true but requests nothing: add"
            f" {SECRET_PREFIX}<alias> annotations or {PROVIDER_CLASS}"
        )
    if problems:
        raise ContractError(problems)
    return InjectionRequest(
        mode=mode,
        mount_path=mount_path,
        objects=tuple(objects),
        env=tuple(env),
        containers=containers,
        recorded=recorded,
        provider_class=provider_class,
        init_first=init_first,
        warnings=tuple(warnings),
        store=store or DEFAULT_STORE,
        role=role if grammar.role_annotation else None,
        refresh=refresh,
        restart_on_change=restart_on_change,
    )
