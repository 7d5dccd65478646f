"""Azure SecretProviderClasses, pure: the parameters kvinject generates, and what a stored class reads as whom."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from webhook.contract import InjectionRequest, ObjectRef, ObjectType
from webhook.model import SecretProviderClass
from webhook.providers.azure import provider_view


def _objects_parameter(request: InjectionRequest) -> str:
    """The Azure provider's `objects` parameter: YAML with an array of YAML strings.

    Written in the block style people use by hand; every value already matched the
    contract's name grammar, so nothing needs quoting beyond the empty version.
    """
    lines = ["array:"]
    for m in sorted(request.objects, key=lambda o: o.alias):
        lines.append("  - |")
        lines.append(f"    objectName: {m.ref.name}")
        lines.append(f"    objectAlias: {m.alias}")
        lines.append(f"    objectType: {m.ref.type.value}")
        lines.append(f'    objectVersion: "{m.ref.version}"')
    return "\n".join(lines) + "\n"


def parameters(
    request: InjectionRequest, client_id: str, tenant_id: str, cloud: Mapping[str, str] | None = None
) -> dict[str, str]:
    """spec.parameters of the class for a csi-mode request (one vault, checked by the contract), naming the
    cloud (`cloudName`, `cloudEnvFileName`) unless it is the provider's default."""
    params = {
        "usePodIdentity": "false",
        "useVMManagedIdentity": "false",
        "clientID": client_id,
        "tenantID": tenant_id,
        "keyvaultName": request.objects[0].ref.vault,
        "objects": _objects_parameter(request),
    }
    params.update(cloud or {})
    return params


@lru_cache(maxsize=512)
def _view(params: tuple[tuple[str, str], ...]) -> provider_view.View | provider_view.Unreadable:
    """The provider's view of one parameter set, parsed once: every pod of a Deployment mounts the same class,
    and a class at the size limit costs a parse of 64 KiB of YAML (bounded, but not to be repeated per pod)."""
    try:
        return provider_view.read(dict(params))
    except provider_view.Unreadable as exc:
        return exc


def _identity(
    where: str, params: dict[str, str], allow_node_identity: bool, allow_pod_identity: bool
) -> tuple[provider_view.IdentityMode | None, list[str]]:
    """The identity the provider would read with, and why it is not the pod's workload identity."""
    try:
        mode = provider_view.identity_mode(params)
    except provider_view.Unreadable as exc:
        return None, [f"{where} cannot be judged as the Azure provider reads it: {exc.reason}"]
    problems: list[str] = []
    if mode == "vm-managed-identity" and not allow_node_identity:
        problems.append(f"{where} reads with the node's managed identity (useVMManagedIdentity), which is not allowed")
    elif mode == "pod-identity" and not allow_pod_identity:
        problems.append(f"{where} uses aad-pod-identity (usePodIdentity), which is not allowed")
    elif mode == "service-principal":
        problems.append(
            f"{where} sets no clientID: the provider would read with service-principal credentials from the"
            " volume's nodePublishSecretRef, not the pod's workload identity"
        )
    return mode, problems


def identity_problems(found: SecretProviderClass, allow_node_identity: bool, allow_pod_identity: bool) -> list[str]:
    """What is wrong with an Azure class on its own (before any pod): an identity other than workload identity,
    or parameters the provider would read otherwise than kvinject."""
    where = f"SecretProviderClass {found.namespace}/{found.name}"
    mode, problems = _identity(where, found.parameters, allow_node_identity, allow_pod_identity)
    if mode is None:
        return problems
    view = _view(tuple(sorted(found.parameters.items())))
    if isinstance(view, provider_view.Unreadable):
        problems.append(f"{where} cannot be judged as the Azure provider reads it: {view.reason}")
    return problems


def declared_objects(
    found: SecretProviderClass,
    client_id: str,
    allow_node_identity: bool = False,
    allow_pod_identity: bool = False,
    attributes: Mapping[str, str] | None = None,
) -> tuple[list[ObjectRef], list[str]]:
    """The objects an Azure SecretProviderClass would read, and what is wrong with how it reads them.

    Judged as the Azure provider reads the parameters the CSI driver hands it (the class's, with the
    volume's `attributes` over them): anything it cannot read exactly is a problem. It must use workload
    identity with the pod's client id: node identity, aad-pod-identity and service-principal credentials
    would read with an identity policy knows nothing about.
    """
    where = f"SecretProviderClass {found.namespace}/{found.name}"
    params = provider_view.effective_parameters(found.parameters, attributes or {})
    mode, problems = _identity(where, params, allow_node_identity, allow_pod_identity)
    if mode is None:
        return [], problems
    view = _view(tuple(sorted(params.items())))
    if isinstance(view, provider_view.Unreadable):
        return [], [*problems, f"{where} cannot be judged as the Azure provider reads it: {view.reason}"]
    if mode == "workload" and view.client_id.lower() != client_id.lower():
        problems.append(
            f"{where} reads as client id {view.client_id[:64]}, not {client_id}, the workload identity"
            " of the pod's ServiceAccount"
        )
    refs: list[ObjectRef] = []
    for entry in view.objects:
        try:
            kind = ObjectType(entry.object_type or "secret")
        except ValueError:
            problems.append(f"{where} has object {entry.object_name} of unknown type {entry.object_type[:16]!r}")
            continue
        refs.append(
            ObjectRef(vault=view.keyvault_name, name=entry.object_name, type=kind, version=entry.object_version)
        )
    return refs, problems
