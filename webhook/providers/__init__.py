"""The provider seam: what a secret store must tell the provider-neutral admission pipeline.

The pipeline (review → contract → lookups → identity → policy → plan → response) never names a store. It asks
the provider registered for a name (`get`), or the one serving a SecretProviderClass's `spec.provider`
(`for_class`), and `default()` for pods, whose annotations name no store. Providers load lazily, so the init
container imports only the one it reads with.

Adding a store: a sibling package `webhook/providers/<name>/` exposing `INSTANCE`, and one line in `_REGISTERED`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from webhook.cluster import Cluster
    from webhook.contract import InjectionRequest, ObjectRef
    from webhook.identity import Identity
    from webhook.live import Finding
    from webhook.metrics import Metrics
    from webhook.model import SecretProviderClass, ServiceAccount
    from webhook.plan import InitSpec
    from webhook.providers.reading import Reader
    from webhook.settings import Settings


class LiveVerifier(Protocol):
    async def verify(self, namespace: str, account: str, who: Identity, refs: Sequence[ObjectRef]) -> list[Finding]: ...


class Provider(Protocol):
    """One secret store. Every method is pure but `live_verifier` (Azure itself) and `reader` (the store)."""

    name: str  # spec.provider of the SecretProviderClasses it serves
    store_name: str  # how messages name the store's side ("Azure")
    objects_name: str  # how messages name what a class reads ("Key Vault" objects)
    identity_environment: tuple[str, ...]  # the init container's variables naming the identity
    endpoint_environment: tuple[str, ...]  # ... and where the store is
    environment_help: dict[str, str]  # every variable `kvinject fetch` reads for this store -> what it means

    def resolve_identity(
        self,
        namespace: str,
        name: str,
        account: ServiceAccount | None,
        settings: Settings,
        requested_role: str | None = None,
    ) -> Identity | str:
        """The identity a ServiceAccount reads as (`requested_role`: the pod's own choice, for stores that let a
        pod name one), or the sentence telling how to fix it."""

    def class_parameters(self, wanted: InjectionRequest, who: Identity, settings: Settings) -> dict[str, str]:
        """spec.parameters of the class kvinject generates for a csi-mode request."""

    def declared_objects(
        self,
        found: SecretProviderClass,
        who: Identity,
        settings: Settings,
        attributes: Mapping[str, str] | None = None,
    ) -> tuple[list[ObjectRef], list[str]]:
        """What a class (with a volume's attributes over it) reads as the store's provider reads it, and what is
        wrong with how it reads: an identity other than `who`, or anything that cannot be judged exactly."""

    def class_problems(self, found: SecretProviderClass, settings: Settings) -> list[str]:
        """What is wrong with a class on its own, before any pod mounts it."""

    def init_spec(self, who: Identity, settings: Settings) -> InitSpec:
        """The init container's image, credentials and endpoints for `who`."""

    def verifiable(self, refs: Sequence[ObjectRef]) -> list[ObjectRef]:
        """The objects live verification can prove access to."""

    def live_verifier(self, settings: Settings, cluster: Cluster, metrics: Metrics) -> LiveVerifier:
        """Proves with the store itself that a ServiceAccount can read objects."""

    def access_from_env(self, env: Mapping[str, str]) -> tuple[Any, list[str], list[str]]:
        """The init container's access from its environment: (access or None, identity problems, endpoint
        problems)."""

    def reader(self, access: Any, timeout: float, assertion: Any = None) -> Reader:
        """A reader for `access`; `assertion` returns a token held in memory instead of the token file."""


# The registration lines: provider name → module exposing INSTANCE.
_REGISTERED = {
    "azure": "webhook.providers.azure",
    "vault": "webhook.providers.vault",
}
DEFAULT = "azure"  # pods name no store: every annotation refers to Azure Key Vault
_loaded: dict[str, Provider] = {}


def get(name: str) -> Provider:
    if name not in _loaded:
        module = importlib.import_module(_REGISTERED[name])
        _loaded[name] = module.INSTANCE
    return _loaded[name]


def for_class(provider: str) -> Provider | None:
    """The provider serving classes of this spec.provider; None for stores kvinject does not judge."""
    return get(provider) if provider in _REGISTERED else None


def default() -> Provider:
    return get(DEFAULT)
