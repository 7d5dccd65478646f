"""Live verification with HashiCorp Vault: prove with Vault itself that a ServiceAccount's role can read each path.

Per (namespace, ServiceAccount, role): a TokenRequest token with the role's audience, one Kubernetes-auth login
(`auth/<mount>/login`), then one `sys/capabilities-self` for every KV v2 path the pod names: `read` (or `root`)
proves access without reading a value. Capabilities are per path, so keys of one path share its answer; whether
a path exists is not checked (that would take a read). The Vault token is revoked (`auth/token/revoke-self`) right
after, off the admission's budget, and never logged. The cache, coalescing and budget: providers/verifying.py;
what Vault's answers mean: answers.py.

HTTP: aiohttp (async, already in the kvinject image as the Kubernetes client's dependency), TLS always verified,
against settings.hashicorp_vault_ca_file when set.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from webhook.cluster import Cluster
from webhook.contract import ObjectRef
from webhook.live import Finding, Result
from webhook.metrics import Metrics
from webhook.providers.reading import FailureKind, ReadError
from webhook.providers.vault import answers
from webhook.providers.verifying import CachedVerifier, Principal
from webhook.settings import Settings

log = logging.getLogger(__name__)

MAX_ANSWER = 1 << 16  # bytes of a Vault answer read: logins and capabilities are far smaller
REVOKE_SECONDS = 5.0  # what revoking a token may take, after the admission was answered


class VaultUnreachable(Exception):
    """No HTTP answer from Vault: connection refused, DNS, TLS. The text names the cause, never a token."""


class Transport(Protocol):
    """POSTs to Vault's API (`path` below /v1/), answering (status, body); raises VaultUnreachable or TimeoutError."""

    async def post(self, path: str, body: dict[str, Any], token: str | None, timeout: float) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


TransportFactory = Callable[[], Transport]


def api_path(ref: ObjectRef) -> str:
    """The KV v2 API path of a ref's secret, as ACL policies and capabilities-self name it."""
    return f"{ref.vault}/data/{ref.name}"


def secret(ref: ObjectRef) -> str:
    """A ref's secret as the user wrote it, without the key: secret/payments/db."""
    return f"{ref.vault}/{ref.name}"


class Verifier(CachedVerifier):
    store_name = "Vault"

    def __init__(
        self,
        settings: Settings,
        cluster: Cluster,
        metrics: Metrics,
        transport_factory: TransportFactory | None = None,
    ):
        super().__init__(settings, cluster, metrics)
        self.address = settings.hashicorp_vault_address.rstrip("/")
        self.transport_factory = transport_factory or _HttpTransports(self.address, settings.hashicorp_vault_ca_file)
        self._revoking: set[asyncio.Task[None]] = set()

    def audience(self) -> str:
        return self.settings.hashicorp_vault_audience

    async def check(
        self, principal: Principal, refs: tuple[ObjectRef, ...], token: str, deadline: float
    ) -> list[Finding]:
        role = principal[2]
        if not self.address:
            return _every(refs, Result.UNVERIFIED, "KVINJECT_HASHICORP_VAULT_ADDRESS is not set")
        try:
            transport = self.transport_factory()
        except VaultUnreachable as exc:
            return _every(refs, Result.UNVERIFIED, str(exc))
        vault_token: str | None = None
        try:
            vault_token = await self._login(transport, principal, token, deadline)
            paths = list(dict.fromkeys(api_path(r) for r in refs))
            found = await self._capabilities(transport, role, vault_token, paths, deadline)
            return [self._finding(r, role, found[api_path(r)]) for r in refs]
        except _ForEvery as exc:
            return _every(refs, exc.result, exc.message)
        except VaultUnreachable as exc:
            return _every(refs, Result.UNVERIFIED, str(exc))
        finally:
            self._revoke_later(transport, vault_token, role)

    async def _login(self, transport: Transport, principal: Principal, token: str, deadline: float) -> str:
        """The Vault token of a Kubernetes-auth login as the role with the ServiceAccount's token."""
        namespace, account, role, mount = principal
        status, body = await transport.post(f"auth/{mount}/login", {"role": role, "jwt": token}, None, _left(deadline))
        if 300 <= status < 400:  # an HA standby that redirects instead of forwarding: not an answer about the role
            raise _ForEvery(
                Result.UNVERIFIED,
                f"Vault at {self.address} redirected the login (HTTP {status}): set KVINJECT_HASHICORP_VAULT_ADDRESS"
                " to the address that serves requests (the active node or its load balancer)",
            )
        if status != 200:
            refused = answers.login_failure(status, body, role, mount)
            if refused.kind is not FailureKind.TOKEN:  # 429, 5xx: Vault could not answer
                raise _ForEvery(Result.UNVERIFIED, f"{refused.detail} (Vault at {self.address})")
            raise _ForEvery(
                Result.NOT_FEDERATED,
                f"{refused.detail}: the role must bind ServiceAccount {namespace}/{account}"
                f" (bound_service_account_names and _namespaces) and accept the audience {self.audience()}",
            )
        try:
            return answers.client_token(body)
        except ReadError as exc:
            raise _ForEvery(Result.UNVERIFIED, exc.detail) from None

    @staticmethod
    async def _capabilities(
        transport: Transport, role: str, vault_token: str, paths: list[str], deadline: float
    ) -> dict[str, frozenset[str]]:
        """What the role's token may do on each path, in one sys/capabilities-self call."""
        status, body = await transport.post("sys/capabilities-self", {"paths": paths}, vault_token, _left(deadline))
        if status != 200:
            said = answers.vault_errors(body) or "no error text"
            hint = "; the role's tokens need the default policy, which allows it" if status == 403 else ""
            raise _ForEvery(
                Result.UNVERIFIED,
                f"Vault answered sys/capabilities-self for role {role} with HTTP {status} ({said}){hint}",
            )
        return answers.capabilities(body, paths)

    @staticmethod
    def _finding(ref: ObjectRef, role: str, caps: frozenset[str]) -> Finding:
        if answers.can_read(caps):
            return Finding(ref, Result.ALLOWED)
        shown = ", ".join(sorted(caps)) or "none"
        return Finding(ref, Result.DENIED, f"Vault says role {role} may not read {secret(ref)} (capabilities: {shown})")

    def _revoke_later(self, transport: Transport, vault_token: str | None, role: str) -> None:
        """Revoke the login's token and close the connection in the background: the admission is not kept
        waiting, and no Vault token outlives its check (nor piles up as a lease until its TTL)."""
        task = asyncio.get_running_loop().create_task(_revoke(transport, vault_token, role))
        self._revoking.add(task)
        task.add_done_callback(self._revoking.discard)

    async def aclose(self) -> None:
        """Wait for pending revocations (server shutdown, tests)."""
        while self._revoking:
            await asyncio.gather(*self._revoking, return_exceptions=True)


async def _revoke(transport: Transport, vault_token: str | None, role: str) -> None:
    try:
        if vault_token is not None:
            status, body = await transport.post("auth/token/revoke-self", {}, vault_token, REVOKE_SECONDS)
            if status not in (200, 204):
                said = answers.vault_errors(body) or f"HTTP {status}"
                log.warning("could not revoke the Vault token of a live verification as role %s: %s", role, said)
    except (VaultUnreachable, TimeoutError) as exc:
        log.warning("could not revoke the Vault token of a live verification as role %s: %s", role, exc or "timeout")
    finally:
        await transport.close()


class _ForEvery(Exception):
    """One answer for every object of a check: a refused login, an unusable answer."""

    def __init__(self, result: Result, message: str):
        super().__init__(message)
        self.result = result
        self.message = message


def _every(refs: tuple[ObjectRef, ...], result: Result, message: str) -> list[Finding]:
    return [Finding(r, result, message) for r in refs]


def _left(deadline: float) -> float:
    """The seconds of the budget left for one request (the budget's own bound cancels the check at zero)."""
    return max(0.05, deadline - time.monotonic())


class _HttpTransports:
    """A new aiohttp session per check (checks are cache misses, rare), over one TLS context per CA file version."""

    def __init__(self, address: str, ca_file: Path | None):
        self.address = address
        self.ca_file = ca_file
        self._context: tuple[int | None, ssl.SSLContext] | None = None

    def __call__(self) -> Transport:
        return _HttpTransport(self.address, self._ssl())

    def _ssl(self) -> ssl.SSLContext:
        """Verified TLS against the CA file when set (re-read when it changes: a rotated ConfigMap), else the
        system's roots."""
        try:
            version = self.ca_file.stat().st_mtime_ns if self.ca_file else None
            if self._context is None or self._context[0] != version:
                cafile = str(self.ca_file) if self.ca_file else None
                self._context = (version, ssl.create_default_context(cafile=cafile))
        except (OSError, ssl.SSLError) as exc:
            raise VaultUnreachable(f"cannot use the Vault CA file {self.ca_file}: {exc}") from None
        return self._context[1]


class _HttpTransport:
    def __init__(self, address: str, context: ssl.SSLContext):
        import aiohttp  # the server's extra: loaded only when Vault live verification runs

        self._aiohttp = aiohttp
        self.address = address
        # trust_env: HTTPS_PROXY / NO_PROXY apply as they do to the Azure SDK's requests.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), trust_env=True, raise_for_status=False
        )

    async def post(self, path: str, body: dict[str, Any], token: str | None, timeout: float) -> tuple[int, bytes]:
        aiohttp = self._aiohttp
        headers = {"X-Vault-Request": "true"}
        if token is not None:
            headers["X-Vault-Token"] = token
        try:
            async with self._session.post(
                f"{self.address}/v1/{path}",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as resp:
                return resp.status, await resp.content.read(MAX_ANSWER)
        except aiohttp.ClientConnectorCertificateError as exc:
            why = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
            raise VaultUnreachable(
                f"Vault at {self.address} presented a certificate kvinject does not trust ({why}):"
                " set KVINJECT_HASHICORP_VAULT_CA_FILE to the CA that issued it"
            ) from None
        except TimeoutError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            cause = getattr(exc, "os_error", None) or exc
            raise VaultUnreachable(f"could not reach Vault at {self.address}: {_reason(cause)}") from None

    async def close(self) -> None:
        await self._session.close()


def _reason(exc: BaseException) -> str:
    """A connection error's cause in a few words, never a header."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"  # asyncio's strerror would say "Connect call failed (host, port)"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)[:200]
