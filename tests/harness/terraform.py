"""The Terraform example (examples/terraform) as `terraform apply` would create it, without Azure.

The .tf files are parsed with python-hcl2; every resource is evaluated with the values Azure would assign at
apply time (ids, client and principal ids), derived from the resource's own arguments, so that a test can read
the Kubernetes manifests and the Azure resources and check that they describe the same access. Only the
expressions the example uses are evaluated (references, interpolation, `toset`, `for_each`); anything else is an
error, so the example cannot grow past what the tests check.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

from tests.harness.builders import ROOT, TENANT_ID

EXAMPLE = ROOT / "examples" / "terraform"
SUBSCRIPTION = "00000000-0000-0000-0000-00000000cafe"
# Values for the example's variables without a default, as a platform team passes them.
VARIABLES = {
    "resource_group_name": "payments-rg",
    "key_vault_resource_group_name": "payments-rg",
    "oidc_issuer_url": "https://oidc.example.test/issuer/0000",
}

_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
_TOSET = re.compile(r"^toset\((.+)\)$")
_REFERENCE = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*$")


class Unsupported(ValueError):
    """An expression this evaluator does not evaluate (keep the example simple, or teach it here)."""


@dataclass
class Applied:
    """Every resource instance as applied: `resources["type.name"]` is one dict per instance (for_each key)."""

    variables: dict[str, Any]
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [i for key, instances in self.resources.items() if key.split(".")[-2] == kind for i in instances]

    def manifests(self, kind: str) -> list[dict[str, Any]]:
        return [r["manifest"] for r in self.of_type("kubernetes_manifest") if r["manifest"].get("kind") == kind]


def parse(source: str) -> dict[str, Any]:
    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    parsed: dict[str, Any] = hcl2.loads(source, serialization_options=options)
    return parsed


def load(directory: Path = EXAMPLE) -> dict[str, Any]:
    """All .tf files of a module, merged block list by block list as Terraform reads a directory."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for block, items in parse(path.read_text()).items():
            merged.setdefault(block, []).extend(items)
    return merged


def _blocks(config: dict[str, Any], block: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of every `block "type" "name" {}` in the config."""
    return [(t, n, body) for item in config.get(block, []) for t, named in item.items() for n, body in named.items()]


def _azure_attributes(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """What Azure assigns when the resource is created: deterministic stand-ins derived from its arguments."""
    name, group = body.get("name", ""), body.get("resource_group_name", "")
    prefix = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers"
    if kind == "azurerm_user_assigned_identity":
        return {
            "id": f"{prefix}/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            "client_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"client:{group}/{name}")),
            "principal_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"principal:{group}/{name}")),
            "tenant_id": TENANT_ID,
        }
    if kind == "azurerm_key_vault":
        return {"id": f"{prefix}/Microsoft.KeyVault/vaults/{name}", "vault_uri": f"https://{name}.vault.azure.net/"}
    return {"id": f"{prefix}/{kind}/{name}"}


class _Evaluator:
    def __init__(self, config: dict[str, Any], variables: dict[str, Any]) -> None:
        self.config = config
        self.variables = {
            name: variables.get(name, body.get("default")) for _, name, body in _named(config, "variable")
        }
        missing = [name for name, value in self.variables.items() if value is None]
        if missing:
            raise Unsupported(f"variables without a value: {missing}")
        self.locals: dict[str, Any] = {}
        for item in config.get("locals", []):
            self.locals.update(item)
        self.objects: dict[str, dict[str, Any]] = {}  # "type.name" / "data.type.name" -> attributes

    def reference(self, ref: str, each: Any) -> Any:
        head, *rest = ref.split(".")
        if head == "var":
            return self.variables[rest[0]]
        if head == "local":
            return self.value(self.locals[rest[0]], each)
        if head == "each":
            if each is None:
                raise Unsupported(f"{ref} outside a for_each")
            return each
        key, attribute = ".".join([head, *rest[:-1]]), rest[-1]
        try:
            return self.objects[key][attribute]
        except KeyError:
            raise Unsupported(f"unknown reference {ref}") from None

    def expression(self, text: str, each: Any) -> Any:
        text = text.strip()
        if match := _TOSET.match(text):
            return sorted(set(self.expression(match.group(1), each)))
        if _REFERENCE.match(text):
            return self.reference(text, each)
        raise Unsupported(f"expression ${{{text}}}")

    def value(self, raw: Any, each: Any = None) -> Any:
        if isinstance(raw, dict):
            return {k: self.value(v, each) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v, each) for v in raw]
        if not isinstance(raw, str):
            return raw
        whole = _INTERPOLATION.fullmatch(raw)
        if whole:
            return self.expression(whole.group(1), each)
        return _INTERPOLATION.sub(lambda m: str(self.expression(m.group(1), each)), raw)

    def instances(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        if "for_each" not in body:
            return [self.value(body)]
        keys = self.value(body["for_each"])
        rest = {k: v for k, v in body.items() if k != "for_each"}
        return [self.value(rest, each=key) for key in keys]


def _named(config: dict[str, Any], block: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [("", name, body) for item in config.get(block, []) for name, body in item.items()]


def apply(config: dict[str, Any], variables: dict[str, Any] | None = None) -> Applied:
    """Evaluate every data source and resource, in file order (the example references only earlier ones)."""
    ev = _Evaluator(config, VARIABLES if variables is None else variables)
    applied = Applied(ev.variables)
    for kind, name, body in _blocks(config, "data"):
        arguments = ev.value(body)
        ev.objects[f"data.{kind}.{name}"] = {**arguments, **_azure_attributes(kind, arguments)}
        applied.resources[f"data.{kind}.{name}"] = [ev.objects[f"data.{kind}.{name}"]]
    for kind, name, body in _blocks(config, "resource"):
        instances = [{**i, **_azure_attributes(kind, i)} for i in ev.instances(body)]
        applied.resources[f"{kind}.{name}"] = instances
        ev.objects[f"{kind}.{name}"] = instances[0] if len(instances) == 1 else {}
    return applied
