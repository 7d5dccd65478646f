"""The only module importing `azure.*`: Key Vault reads for `kvinject fetch` and live verification.

`KeyVaultReader` makes ONE attempt per `read`; the retry loop and the overall budget live in the caller. So the
SDK's own retries are off everywhere (`retry_total=0` on the SecretClients and on the credential: azure-identity
would otherwise retry token POSTs on 5xx/429 by itself), and every attempt carries explicit socket timeouts.

Errors are translated into `ReadError`s carrying only names, codes and the services' own messages (which hold
no values); the SDK exception is never chained, so its request/response objects go nowhere.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import ClientAssertionCredential, WorkloadIdentityCredential
from azure.keyvault.secrets import KeyVaultSecret, SecretClient

from webhook.contract import ObjectType
from webhook.providers.azure.access import VaultAccess
from webhook.providers.reading import ATTEMPT_TIMEOUT_CAP, FailureKind, ObjectSpec, ReadError, Versioned

API_VERSION = "7.6"  # pinned: a newer SDK must not silently change the wire protocol
PKCS12_CONTENT_TYPE = "application/x-pkcs12"
CONNECT_TIMEOUT_CAP = 5.0
SUMMARY_LIMIT = 300  # characters of a service message kept in a reason (Key Vault 403s run to ~250)
NO_SDK_RETRIES: dict[str, Any] = {"retry_total": 0}  # the caller owns retries and the time budget

_AADSTS = re.compile(r"(AADSTS\d+)\s*:?\s*(.*)", re.DOTALL)
# requests' and urllib3's timeout exceptions, matched by name: those packages are azure-core's to import
_TIMEOUT_CLASSES = frozenset(
    {"TimeoutError", "ConnectTimeout", "ReadTimeout", "ConnectTimeoutError", "ReadTimeoutError"}
)


class _TokenFailure(Exception):
    """Marks an exception as the credential's, so a read can tell Entra's errors from Key Vault's."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class _SharedCredential:
    """One token exchange for all vault threads (the first waits, the others reuse the cached token), with the
    credential's errors marked as such."""

    def __init__(self, inner: WorkloadIdentityCredential | ClientAssertionCredential) -> None:
        self._inner = inner
        self._lock = threading.Lock()

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        with self._lock:
            try:
                return self._inner.get_token(
                    *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
                )
            except Exception as exc:
                raise _TokenFailure(exc) from None

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        with self._lock:
            try:
                return self._inner.get_token_info(*scopes, options=options)
            except Exception as exc:
                raise _TokenFailure(exc) from None

    def close(self) -> None:
        self._inner.close()


def quiet_sdk_logging() -> None:
    """For `kvinject fetch`'s process: azure-identity logs failed token requests at WARNING, which Python prints
    to stderr even without any logging configuration; fetch reports every failure itself, once."""
    logging.getLogger("azure").addHandler(logging.NullHandler())
    logging.getLogger("azure").propagate = False


class KeyVaultReader:
    """The read seam's Reader backed by azure-identity (workload identity) and azure-keyvault-secrets."""

    def __init__(self, access: VaultAccess, timeout: float, assertion: Callable[[], str] | None = None) -> None:
        """`timeout`: the whole budget (no single attempt gets more); `assertion`: the ServiceAccount token in
        memory (live verification) instead of the token file."""
        self._access = access
        identity = access.credentials
        timeouts: dict[str, Any] = {
            "connection_timeout": min(CONNECT_TIMEOUT_CAP, timeout),
            "read_timeout": min(ATTEMPT_TIMEOUT_CAP, timeout),
        }
        credential: WorkloadIdentityCredential | ClientAssertionCredential
        if assertion is None:
            if identity.token_file is None:
                raise ValueError("no token file and no assertion")
            credential = WorkloadIdentityCredential(
                tenant_id=identity.tenant_id,
                client_id=identity.client_id,
                token_file_path=str(identity.token_file),
                authority=identity.authority,
                **timeouts,
                **NO_SDK_RETRIES,
            )
        else:
            credential = ClientAssertionCredential(
                identity.tenant_id,
                identity.client_id,
                assertion,
                authority=identity.authority,
                **timeouts,
                **NO_SDK_RETRIES,
            )
        self._credential = _SharedCredential(credential)
        self._clients: dict[str, SecretClient] = {}
        self._lock = threading.Lock()

    def _client(self, vault: str) -> SecretClient:
        with self._lock:
            if vault not in self._clients:
                self._clients[vault] = SecretClient(
                    self._access.vault_url(vault),
                    self._credential,
                    api_version=API_VERSION,
                    # An overridden URL (127.0.0.1, a private endpoint) is not under the challenge's resource.
                    verify_challenge_resource=not self._access.is_overridden(vault),
                    **NO_SDK_RETRIES,
                )
            return self._clients[vault]

    def read(self, obj: ObjectSpec, timeout: float) -> bytes:
        return self.read_versioned(obj, timeout).content

    def read_versioned(self, obj: ObjectSpec, timeout: float) -> Versioned:
        """One GET: Key Vault returns the value with its version's id, in one transaction."""
        try:
            secret = self._client(obj.vault).get_secret(
                obj.name,
                obj.version or None,
                connection_timeout=min(CONNECT_TIMEOUT_CAP, timeout),
                read_timeout=timeout,
            )
        except _TokenFailure as exc:
            raise token_error(exc.cause) from None
        except AzureError as exc:
            raise vault_error(exc) from None
        return Versioned(content_of(obj, secret), secret.properties.version or "")

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._credential.close()


# --------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------


def content_of(obj: ObjectSpec, secret: KeyVaultSecret) -> bytes:
    """The file content: a secret's value as UTF-8; a certificate's backing secret decoded when it is PKCS#12
    (Key Vault stores that base64-encoded), else its PEM text."""
    if secret.value is None:
        raise ReadError(FailureKind.INVALID, "Key Vault returned no value")
    if obj.type is ObjectType.CERT and secret.properties.content_type == PKCS12_CONTENT_TYPE:
        try:
            return base64.b64decode(secret.value, validate=True)
        except (binascii.Error, ValueError):
            raise ReadError(FailureKind.INVALID, "the certificate's PKCS#12 secret is not valid base64") from None
    return secret.value.encode("utf-8")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def first_sentence(text: str, limit: int = SUMMARY_LIMIT) -> str:
    text = " ".join(text.split())
    match = re.search(r"\.(\s|$)", text)
    sentence = text[: match.start() + 1] if match else text
    return sentence if len(sentence) <= limit else sentence[: limit - 3].rstrip() + "..."


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (azure-core's inner_exception, urllib3's reason, causes, contexts)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [getattr(current, "inner_exception", None), getattr(current, "reason", None)]
        linked += [current.__cause__, current.__context__, *current.args]
        todo.extend(e for e in linked if isinstance(e, BaseException))


def _tls_failure(exc: BaseException) -> bool:
    return any(
        isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e) for e in _chain(exc)
    )


def connection_detail(exc: BaseException) -> str:
    """`ServiceRequestError (connection refused)`: the SDK's class and the socket-level reason, when known."""
    if "Timeout" in type(exc).__name__:  # ServiceRequestTimeoutError, ServiceResponseTimeoutError say it all
        return type(exc).__name__
    for cause in _chain(exc):
        if type(cause).__name__ in _TIMEOUT_CLASSES:
            return f"{type(exc).__name__} (timed out)"
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            return f"{type(exc).__name__} ({cause.strerror.lower()})"
    return type(exc).__name__


def retry_after(response: Any) -> float | None:
    """Seconds from x-ms-retry-after-ms or Retry-After (delta or HTTP date); None when absent or unreadable."""
    headers = getattr(response, "headers", None) or {}
    millis = headers.get("x-ms-retry-after-ms") or headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = headers.get("Retry-After")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _kv_code(exc: HttpResponseError) -> str:
    """Key Vault's innermost error code (`AccessDenied` says more than its outer `Forbidden`)."""
    error = exc.error
    if error is None:
        return exc.reason or ""
    inner = error.innererror.get("code") if isinstance(error.innererror, dict) else None
    return str(inner or error.code or "")


def _kv_summary(exc: HttpResponseError) -> str:
    """Key Vault's innermost error code and the first sentence of its message."""
    if exc.error is None:
        return f"HTTP {exc.status_code} {exc.reason or ''}".strip()
    return f"{_kv_code(exc)} {first_sentence(exc.error.message or '')}".strip()


def vault_error(exc: AzureError) -> ReadError:
    """A failed Key Vault call as a ReadError; 429, 5xx and connection trouble are transient."""
    if isinstance(exc, ResourceNotFoundError) or getattr(exc, "status_code", None) == 404:
        return ReadError(FailureKind.NOT_FOUND, "not found")
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        if status == 403:
            return ReadError(FailureKind.DENIED, _kv_summary(exc))
        if status == 429 or status >= 500:
            detail = f"HTTP {status} {_kv_code(exc)}".strip()
            return ReadError(FailureKind.UNAVAILABLE, detail, transient=True, retry_after=retry_after(exc.response))
        return ReadError(FailureKind.REJECTED, f"HTTP {status} {_kv_summary(exc)}")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        if _tls_failure(exc):
            return ReadError(FailureKind.TLS, "TLS certificate verification failed")
        return ReadError(FailureKind.UNREACHABLE, connection_detail(exc), transient=True)
    return ReadError(FailureKind.REJECTED, type(exc).__name__)


def aadsts_summary(message: str) -> str:
    """`AADSTS70021: <first sentence>` from an azure-identity error message (the sentence only when short)."""
    match = _AADSTS.search(message)
    if match is None:
        return first_sentence(message)
    sentence = first_sentence(match.group(2))
    return f"{match.group(1)}: {sentence}" if sentence and not sentence.endswith("...") else match.group(1)


def token_error(exc: BaseException) -> ReadError:
    """A credential failure as a ReadError: Entra's refusals by their AADSTS code; Entra down or throttling,
    or the network, as transient."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        if _tls_failure(exc):
            return ReadError(FailureKind.TOKEN, "TLS certificate verification of Microsoft Entra ID failed")
        return ReadError(FailureKind.TOKEN_UNREACHABLE, connection_detail(exc), transient=True)
    response = getattr(exc, "response", None)  # also on errors decoding a proxy's HTML 502
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and (status == 429 or status >= 500):
        return ReadError(
            FailureKind.TOKEN_UNREACHABLE, f"HTTP {status}", transient=True, retry_after=retry_after(response)
        )
    if isinstance(exc, ClientAuthenticationError):
        return ReadError(FailureKind.TOKEN, aadsts_summary(exc.message or ""))
    if isinstance(exc, OSError):  # the service-account token file
        return ReadError(
            FailureKind.TOKEN, f"cannot read the service account token: {exc.strerror or type(exc).__name__}"
        )
    return ReadError(FailureKind.TOKEN, type(exc).__name__)
