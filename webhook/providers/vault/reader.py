"""HashiCorp Vault reads for `kvinject fetch`: a Kubernetes-auth login, then KV v2 reads, over the standard
library's HTTPS (no SDK: three calls whose answers `answers` already reads from a status and a body).

`VaultReader` logs in once (the ServiceAccount token is read from its file at that moment), reads each distinct
KV v2 path once and keeps the answer in memory for the other keys of that path, and revokes its Vault token on
close(). Like every reader it makes ONE attempt per `read`; retries and the budget are the caller's. Certificates
are always verified (against VAULT_CACERT when set). Neither the ServiceAccount token, the Vault token nor any
value appears in a message, a repr or an exception.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from webhook.providers.reading import ATTEMPT_TIMEOUT_CAP, FailureKind, ObjectSpec, ReadError
from webhook.providers.vault import answers
from webhook.providers.vault.access import VaultAccess

REVOKE_TIMEOUT = 5.0  # close() does not hold the init container longer than this
RETRY_AFTER_HEADER = "Retry-After"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of Vault; the body may hold a token or values, so it is never in a repr."""

    status: int
    body: bytes = field(repr=False)
    retry_after: float | None = None


class Transport(Protocol):
    """One HTTP call to Vault's API (`path` under /v1/); raises ReadError when no answer came (UNREACHABLE, TLS)."""

    def __call__(
        self, method: str, path: str, *, token: str | None, payload: dict[str, Any] | None, timeout: float
    ) -> Answer: ...


def _retry_after(value: str | None) -> float | None:
    """Vault's rate-limit quotas send Retry-After in seconds."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class HttpsTransport:
    """A fresh verified TLS connection per call, no proxies, no redirects followed."""

    def __init__(self, address: str, context: ssl.SSLContext) -> None:
        parts = urlsplit(address)
        self._host = parts.hostname or ""
        self._port = parts.port or 443
        self._context = context

    def __call__(
        self, method: str, path: str, *, token: str | None, payload: dict[str, Any] | None, timeout: float
    ) -> Answer:
        headers = {"X-Vault-Request": "true", "Accept": "application/json"}
        if token is not None:
            headers["X-Vault-Token"] = token
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._context)
        try:
            connection.request(method, f"/v1/{path}", body=body, headers=headers)
            response = connection.getresponse()
            return Answer(response.status, response.read(), _retry_after(response.getheader(RETRY_AFTER_HEADER)))
        except ssl.SSLCertVerificationError as exc:
            detail = f"TLS certificate verification failed ({exc.verify_message or 'untrusted certificate'})"
            raise ReadError(FailureKind.TLS, detail) from None
        except TimeoutError:
            raise ReadError(FailureKind.UNREACHABLE, "timed out", transient=True) from None
        except ssl.SSLError as exc:  # a handshake cut short, e.g. by a restarting server
            detail = f"TLS: {exc.reason or type(exc).__name__}"
            raise ReadError(FailureKind.UNREACHABLE, detail, transient=True) from None
        except OSError as exc:
            detail = (exc.strerror or type(exc).__name__).lower()
            raise ReadError(FailureKind.UNREACHABLE, detail, transient=True) from None
        except http.client.HTTPException as exc:  # e.g. RemoteDisconnected: the server went away mid-answer
            raise ReadError(FailureKind.UNREACHABLE, type(exc).__name__, transient=True) from None
        finally:
            connection.close()


def _with_retry_after(error: ReadError, answer: Answer) -> ReadError:
    if error.transient and answer.retry_after is not None:
        error.retry_after = answer.retry_after
    return error


class VaultReader:
    """The read seam's Reader for one role of one Vault server."""

    def __init__(
        self,
        access: VaultAccess,
        timeout: float,
        assertion: Callable[[], str] | None = None,
        transport: Transport | None = None,
    ) -> None:
        """`timeout`: the whole budget (no single call gets more); `assertion`: the ServiceAccount token in memory
        instead of the token file; `transport`: the HTTP (tests give their own)."""
        if assertion is None and access.token_file is None:
            raise ValueError("no token file and no assertion")
        self._access = access
        self._timeout = min(ATTEMPT_TIMEOUT_CAP, timeout)
        self._assertion = assertion
        if transport is None:
            try:
                transport = HttpsTransport(access.address, access.tls_context())
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"cannot load the CA bundle {access.ca_file}: {type(exc).__name__}") from None
        self._transport = transport
        self._login_lock = threading.Lock()
        self._token: str | None = None
        self._refused: ReadError | None = None  # a refused login is final: every read reports it, none retries it
        self._paths_lock = threading.Lock()
        self._paths: dict[str, Answer | ReadError] = {}  # <mount>/<path> -> its 200 answer or its final failure

    def __repr__(self) -> str:
        return f"VaultReader({self._access.address}, role={self._access.role})"

    # -- login --------------------------------------------------------------------------------------

    def _jwt(self) -> str:
        if self._assertion is not None:
            return self._assertion()
        path = self._access.token_file
        try:
            jwt = path.read_text().strip() if path is not None else ""
        except OSError as exc:
            detail = exc.strerror or type(exc).__name__
            raise ReadError(FailureKind.TOKEN, f"cannot read the ServiceAccount token {path}: {detail}") from None
        if not jwt:
            raise ReadError(FailureKind.TOKEN, f"the ServiceAccount token file {path} is empty")
        return jwt

    def _login(self, timeout: float) -> str:
        """The Vault token, logging in on first use; the vault threads share one login."""
        with self._login_lock:
            if self._token is not None:
                return self._token
            if self._refused is not None:
                raise self._refused
            access = self._access
            try:
                payload = {"role": access.role, "jwt": self._jwt()}
                answer = self._transport(
                    "POST", f"auth/{access.auth_mount}/login", token=None, payload=payload, timeout=timeout
                )
                if answer.status != 200:
                    error = answers.login_failure(answer.status, answer.body, access.role, access.auth_mount)
                    raise _with_retry_after(error, answer)
                self._token = answers.client_token(answer.body)
            except ReadError as error:
                if not error.transient and error.kind is not FailureKind.TLS:
                    self._refused = error
                raise
            return self._token

    # -- reads --------------------------------------------------------------------------------------

    def _secret(self, obj: ObjectSpec, timeout: float) -> Answer:
        """The KV v2 answer for the object's path: read once, then from memory (also a final failure)."""
        secret = f"{obj.vault}/{obj.name}"
        with self._paths_lock:
            known = self._paths.get(secret)
        if isinstance(known, ReadError):
            raise known
        if known is not None:
            return known
        token = self._login(timeout)
        api_path = f"{quote(obj.vault, safe='')}/data/{quote(obj.name, safe='/')}"
        answer = self._transport("GET", api_path, token=token, payload=None, timeout=timeout)
        if answer.status == 200:
            with self._paths_lock:
                self._paths[secret] = answer
            return answer
        error = answers.read_failure(answer.status, answer.body, self._access.role, secret)
        if not error.transient:
            with self._paths_lock:
                self._paths[secret] = error
        raise _with_retry_after(error, answer)

    def read(self, obj: ObjectSpec, timeout: float) -> bytes:
        if not obj.key:
            raise ReadError(FailureKind.INVALID, f"no key named for {obj.vault}/{obj.name}")
        answer = self._secret(obj, min(self._timeout, timeout))
        return answers.secret_value(answer.body, obj.key, f"{obj.vault}/{obj.name}")

    def close(self) -> None:
        """Forget every answer, and revoke the Vault token (it would otherwise live out its TTL)."""
        with self._paths_lock:
            self._paths.clear()
        with self._login_lock:
            token, self._token = self._token, None
        if token is not None:
            with contextlib.suppress(ReadError):
                self._transport("POST", "auth/token/revoke-self", token=token, payload=None, timeout=REVOKE_TIMEOUT)
