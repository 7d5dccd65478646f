"""The SecretProviderClass kvinject generates for csi mode, and how a stored one may differ from it.

The name is a hash of everything that goes into the object (including the owning ServiceAccount's uid), so
the object is immutable, shared by identical pods, and a changed request always gets a new name. What goes
into spec.parameters is the provider's (`Provider.class_parameters`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from webhook.contract import InjectionRequest
from webhook.model import SecretProviderClass, ServiceAccount
from webhook.names import CLASS_API_VERSION, CLASS_KIND, CLASS_NAME_PREFIX, MANAGED_BY


def generated(
    provider: str, parameters: dict[str, str], request: InjectionRequest, namespace: str, account: ServiceAccount
) -> dict[str, Any]:
    """The class for a csi-mode request, syncing the objects env vars read into a Secret of the class's name."""
    spec: dict[str, Any] = {"provider": provider, "parameters": parameters}
    env_aliases = sorted({e.alias for e in request.env})
    content = {"namespace": namespace, "owner": [account.name, account.uid], "spec": spec}
    digest = hashlib.sha256(orjson.dumps(content | {"env": env_aliases}, option=orjson.OPT_SORT_KEYS))
    name = CLASS_NAME_PREFIX + digest.hexdigest()[:16]
    if env_aliases:
        spec["secretObjects"] = [
            {
                "secretName": name,
                "type": "Opaque",
                "labels": dict(MANAGED_BY),
                "data": [{"objectName": alias, "key": alias} for alias in env_aliases],
            }
        ]
    return {
        "apiVersion": CLASS_API_VERSION,
        "kind": CLASS_KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ServiceAccount", "name": account.name, "uid": account.uid}
            ],
        },
        "spec": spec,
    }


def differences(stored: SecretProviderClass, expected: dict[str, Any]) -> list[str]:
    """The fields in which a stored class differs from the one kvinject generates (names only, never values).

    What the CSI driver and the provider read is the stored object: a class of a generated name that someone
    else wrote first, or edited later, must not be taken for kvinject's.
    """
    spec = expected["spec"]
    found: list[str] = []
    if stored.provider != spec["provider"]:
        found.append("spec.provider")
    wanted: dict[str, str] = spec["parameters"]
    for key in sorted(set(wanted) | set(stored.parameters)):
        if stored.parameters.get(key) != wanted.get(key):
            found.append(f"spec.parameters.{key}")
    if stored.secret_objects != spec.get("secretObjects", []):
        found.append("spec.secretObjects")
    for key, value in MANAGED_BY.items():
        if stored.labels.get(key) != value:
            found.append(f"metadata.labels[{key}]")
    return found
