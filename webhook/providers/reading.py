"""The read seam every secret store implements: one attempt at one object, or a `ReadError` saying why not.

`kvinject fetch` (the init container) retries and writes through it; a provider's live verification reads
through it and drops the value. Values are bytes and never appear in any message, repr or exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from webhook.contract import ObjectType

ATTEMPT_TIMEOUT_CAP = 15.0  # one attempt at a read never gets more seconds than this


@dataclass(frozen=True)
class ObjectSpec:
    """One object to read: `alias` is the output file name. `key` is the field of a HashiCorp Vault secret (its
    `vault` is the KV v2 mount, its `name` the path); Key Vault objects have none."""

    alias: str
    vault: str
    name: str
    type: ObjectType = ObjectType.SECRET
    version: str = ""
    key: str = ""

    @property
    def label(self) -> str:
        ref = f"{self.vault}/{self.name}" + (f"@{self.version}" if self.version else "")
        ref += f"#{self.key}" if self.key else ""
        return f"{self.alias} ({ref})"


class FailureKind(enum.Enum):
    DENIED = "denied"  # the store refused this identity (Key Vault 403)
    NOT_FOUND = "not found"  # Key Vault 404
    TOKEN = "token"  # the identity provider refused the exchange (or the credential could not try)
    TOKEN_UNREACHABLE = "token unreachable"  # the identity provider unreachable, or answering 429 or 5xx
    UNREACHABLE = "unreachable"  # no connection to the vault, or no answer in time
    UNAVAILABLE = "unavailable"  # the vault answered 429 or 5xx
    TLS = "tls"  # certificate verification failed: retrying cannot help
    REJECTED = "rejected"  # any other refusal by the store (400, 401, ...)
    INVALID = "invalid"  # the object was read but cannot be written as asked


class ReadError(Exception):
    """One failed read attempt. `detail` is safe to show: names, codes and service messages, never a value."""

    def __init__(
        self, kind: FailureKind, detail: str, *, transient: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail
        self.transient = transient
        self.retry_after = retry_after


# A failure of one of these kinds applies to every object of the vault: the rest are not tried.
VAULT_WIDE = frozenset({FailureKind.TOKEN, FailureKind.TOKEN_UNREACHABLE, FailureKind.UNREACHABLE, FailureKind.TLS})


class Reader(Protocol):
    """Reads one object's file content with a single attempt bounded by `timeout` seconds; raises ReadError."""

    def read(self, obj: ObjectSpec, timeout: float) -> bytes: ...

    def close(self) -> None: ...


class Access(Protocol):
    """Where and as whom a provider's reader reads (the provider's own type); `principal` names the identity."""

    @property
    def principal(self) -> str: ...


@runtime_checkable
class WordsFailures(Protocol):
    """An Access whose store words its own failure reasons (Key Vault's wording is `kvinject fetch`'s default)."""

    def failure_reason(self, obj: ObjectSpec, error: ReadError, tried: str) -> str:
        """The reason after `alias (ref): `; `tried` is " after N attempts" (and the budget note) or ""."""
