"""Live verification's vocabulary: what a store said when asked to prove access, and where it is on.

The proof itself is the provider's (`Provider.live_verifier`); the pipeline only reads these results.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from webhook.contract import ObjectRef
from webhook.model import Namespace
from webhook.names import LIVE_VERIFY_LABEL
from webhook.settings import Settings


class Result(StrEnum):
    ALLOWED = "allowed"
    NOT_FEDERATED = "not-federated"
    DENIED = "denied"
    NOT_FOUND = "not-found"
    UNVERIFIED = "unverified"  # the store unreachable, throttled, or out of time: never cached


@dataclass(frozen=True, slots=True)
class Finding:
    ref: ObjectRef
    result: Result
    message: str = ""


def enabled(settings: Settings, namespace: Namespace | None) -> bool:
    """The server setting, overridden per namespace by the label kvinject.io/live-verify=true|false.

    The label may always turn verification on; off only in namespaces on the server's allowlist.
    """
    value = (namespace.labels if namespace else {}).get(LIVE_VERIFY_LABEL)
    if value == "true":
        return True
    if value == "false" and namespace is not None and namespace.name in settings.relaxable_namespaces:
        return False
    return settings.live_verify
