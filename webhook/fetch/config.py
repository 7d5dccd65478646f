"""The init container's configuration, from the environment the webhook set; every problem is listed."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook import contract, names, providers
from webhook.contract import ObjectType
from webhook.providers import Provider
from webhook.providers.reading import ObjectSpec

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 4
MAX_RETRIES = 20
_ALIAS_MAX_BYTES = 255
_READABLE_TYPES = (ObjectType.SECRET, ObjectType.CERT)  # key objects never leave Key Vault


STORES = tuple(contract.GRAMMARS)  # the stores kvinject reads (webhook.providers registers one for each)

# What `kvinject fetch --help` says about each variable it reads (the store's own come from its provider).
ENVIRONMENT = {
    names.ENV_OBJECTS: "JSON list of {alias, vault, name, type, version, key} to read (required)",
    names.ENV_STORE: f"the store to read: {' or '.join(STORES)} (default {names.DEFAULT_STORE})",
    names.ENV_OUTPUT_DIR: "directory the files are written to, the in-memory volume (required)",
    names.ENV_FS_GROUP: "group id owning the files (the pod's fsGroup): files 0440 instead of 0444",
    names.ENV_TERMINATION_LOG: f"where the failure reasons go (default {DEFAULT_TERMINATION_LOG})",
    names.ENV_TIMEOUT: f"total budget of all reads in seconds, 1-3600 (default {DEFAULT_TIMEOUT:g})",
    names.ENV_RETRIES: f"retries of a failed read, 0-{MAX_RETRIES} (default {DEFAULT_RETRIES})",
}


@dataclass(frozen=True)
class FetchConfig:
    objects: tuple[ObjectSpec, ...]
    output_dir: Path
    access: Any  # the provider's: where and as whom to read (webhook.providers.reading.Access)
    store: str = names.DEFAULT_STORE  # the provider reading: webhook.providers.get(store)
    fs_group: int | None = None
    termination_log: Path = Path(DEFAULT_TERMINATION_LOG)
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES

    def by_vault(self) -> dict[str, list[ObjectSpec]]:
        grouped: dict[str, list[ObjectSpec]] = {}
        for obj in self.objects:
            grouped.setdefault(obj.vault, []).append(obj)
        return grouped


class ConfigError(Exception):
    """The environment is unusable (exit 2); every problem is listed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _alias_problem(alias: str) -> str | None:
    if not alias:
        return "alias is empty"
    if "/" in alias or alias.startswith(".") or "\0" in alias:
        return f"alias {alias!r} is not a safe file name (no '/', no leading '.')"
    if len(alias.encode()) > _ALIAS_MAX_BYTES:
        return f"alias {alias[:32]!r}... is longer than {_ALIAS_MAX_BYTES} bytes"
    return None


def _str_field(item: Mapping[str, Any], key: str, where: str, problems: list[str], required: bool = True) -> str:
    value = item.get(key, None if required else "")
    if not isinstance(value, str):
        problems.append(f"{where}: {key!r} must be a string")
        return ""
    return value


def _key_vault_problems(obj: ObjectSpec) -> list[str]:
    problems = []
    if not names.VAULT_NAME.match(obj.vault):
        problems.append(f"vault {obj.vault!r} must be 3-24 letters, digits or '-'")
    if not names.OBJECT_NAME.match(obj.name):
        problems.append(f"name {obj.name!r} must be 1-127 letters, digits or '-'")
    if obj.type not in _READABLE_TYPES:
        problems.append(f"type {obj.type.value!r} is not supported (secret or cert)")
    if obj.version and not names.OBJECT_VERSION.match(obj.version):
        problems.append(f"version {obj.version!r} must be up to 32 letters or digits")
    if obj.key:
        problems.append(f"key {obj.key[:64]!r}: a Key Vault object has no key")
    return problems


def _hashicorp_vault_problems(obj: ObjectSpec) -> list[str]:
    """A KV v2 object as the contract's Vault grammar reads `<mount>/<path>#<key>` (vault=mount, name=path)."""
    if not obj.key:
        return [f"no key: a Vault object names the field of {obj.vault}/{obj.name} to write"]
    problems = []
    if obj.type is not ObjectType.SECRET or obj.version:
        problems.append("a Vault object has no type but secret and no version")
    ref, ref_problems = contract.parse_vault_ref(f"{obj.vault}/{obj.name}#{obj.key}")
    problems += ref_problems
    if ref is not None and (ref.vault, ref.name, ref.key) != (obj.vault, obj.name, obj.key):
        problems.append(f"mount {obj.vault[:64]!r} must be one path segment")
    return problems


# Each store's rules for one object, by store name (the stores are the contract's grammars).
_OBJECT_PROBLEMS: dict[str, Callable[[ObjectSpec], list[str]]] = {
    names.STORE_AZURE: _key_vault_problems,
    names.STORE_VAULT: _hashicorp_vault_problems,
}


def _parse_object(item: Any, where: str, store: str) -> tuple[ObjectSpec | None, list[str]]:
    if not isinstance(item, dict):
        return None, [f"{where}: must be a JSON object"]
    problems: list[str] = []
    alias = _str_field(item, "alias", where, problems)
    vault = _str_field(item, "vault", where, problems)
    name = _str_field(item, "name", where, problems)
    kind = _str_field(item, "type", where, problems, required=False) or ObjectType.SECRET.value
    version = _str_field(item, "version", where, problems, required=False)
    key = _str_field(item, "key", where, problems, required=False)
    if problems:
        return None, problems
    alias_problem = _alias_problem(alias)
    if alias_problem:
        problems.append(f"{where}: {alias_problem}")
    if kind not in {t.value for t in ObjectType}:
        problems.append(f"{where}: type {kind!r} is not supported (secret or cert)")
        return None, problems
    obj = ObjectSpec(alias, vault, name, ObjectType(kind), version, key)
    problems += [f"{where}: {problem}" for problem in _OBJECT_PROBLEMS[store](obj)]
    return (None, problems) if problems else (obj, [])


def _parse_objects(raw: str | None, store: str) -> tuple[tuple[ObjectSpec, ...], list[str]]:
    if not raw:
        return (), [f"{names.ENV_OBJECTS} is not set"]
    try:
        items = json.loads(raw)
    except ValueError as exc:
        return (), [f"{names.ENV_OBJECTS} is not valid JSON ({exc})"]
    if not isinstance(items, list) or not items:
        return (), [f"{names.ENV_OBJECTS} must be a non-empty JSON list of objects"]
    objects: list[ObjectSpec] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        obj, item_problems = _parse_object(item, f"{names.ENV_OBJECTS}[{index}]", store)
        problems.extend(item_problems)
        if obj is not None:
            objects.append(obj)
    seen: set[str] = set()
    for obj in objects:
        if obj.alias in seen:
            problems.append(f"{names.ENV_OBJECTS}: alias {obj.alias!r} is used twice")
        seen.add(obj.alias)
    return tuple(objects), problems


def store_from_env(env: Mapping[str, str]) -> tuple[str, list[str]]:
    """The store to read, from KVINJECT_STORE (the Vault provider's init_spec sets it; Azure's sets nothing, so
    an init container injected before stores existed still reads Key Vault)."""
    store = env.get(names.ENV_STORE, "").strip() or names.DEFAULT_STORE
    if store not in contract.GRAMMARS:
        return names.DEFAULT_STORE, [f"{names.ENV_STORE} {store[:64]!r} must be {' or '.join(STORES)}"]
    return store, []


def _parse_number(env: Mapping[str, str], key: str, default: float, low: float, high: float) -> tuple[float, list[str]]:
    raw = env.get(key, "").strip()
    if not raw:
        return default, []
    try:
        value = float(raw)
    except ValueError:
        return default, [f"{key} must be a number, not {raw!r}"]
    if not math.isfinite(value) or not low <= value <= high:
        return default, [f"{key} must be between {low:g} and {high:g}, not {raw!r}"]
    return value, []


def _parse_int(env: Mapping[str, str], key: str, low: int, high: int) -> tuple[int | None, list[str]]:
    raw = env.get(key, "").strip()
    if not raw:
        return None, []
    if not re.fullmatch(r"\d+", raw) or not low <= int(raw) <= high:
        return None, [f"{key} must be an integer between {low} and {high}, not {raw!r}"]
    return int(raw), []


def _parse_output_dir(env: Mapping[str, str]) -> tuple[Path, list[str]]:
    raw = env.get(names.ENV_OUTPUT_DIR, "")
    if not raw:
        return Path(), [f"{names.ENV_OUTPUT_DIR} is not set"]
    if not Path(raw).is_dir():
        return Path(raw), [f"{names.ENV_OUTPUT_DIR} {raw} is not a directory (is the volume mounted?)"]
    return Path(raw), []


def load_config(env: Mapping[str, str], provider: Provider | None = None) -> FetchConfig:
    """The fetch configuration from the environment; raises ConfigError listing every problem. The store (and so
    the provider, unless one is given) is KVINJECT_STORE's."""
    store, problems = store_from_env(env)
    if problems:
        raise ConfigError(problems)
    provider = provider or providers.get(store)
    objects, problems = _parse_objects(env.get(names.ENV_OBJECTS), store)
    output_dir, more = _parse_output_dir(env)
    problems += more
    access, identity_problems, endpoint_problems = provider.access_from_env(env)
    problems += identity_problems
    fs_group, more = _parse_int(env, names.ENV_FS_GROUP, 0, 2**32 - 2)
    problems += more
    retries, more = _parse_int(env, names.ENV_RETRIES, 0, MAX_RETRIES)
    problems += more
    timeout, more = _parse_number(env, names.ENV_TIMEOUT, DEFAULT_TIMEOUT, 1, 3600)
    problems += more + endpoint_problems
    if problems or access is None:
        raise ConfigError(problems)
    return FetchConfig(
        store=store,
        objects=objects,
        output_dir=output_dir,
        access=access,
        fs_group=fs_group,
        termination_log=termination_log_path(env),
        timeout=timeout,
        retries=DEFAULT_RETRIES if retries is None else retries,
    )


def termination_log_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(names.ENV_TERMINATION_LOG) or DEFAULT_TERMINATION_LOG)
