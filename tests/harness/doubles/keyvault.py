"""A fake Azure Key Vault (secrets only) for the e2e tier, driven by the real SDK.

Serves the Key Vault secrets REST API (api-version 7.0 … 7.6, 2025-07-01, 2026-04-01)
over HTTPS, one 127.0.0.1 port per vault: a vault named ``X`` is addressed as
``vault_url("X")`` = ``https://127.0.0.1:<its port>`` (host names such as
``X.localhost`` do not resolve on this machine, so there is no Host-header routing).

Authentication follows Key Vault's challenge protocol: a request without a bearer token
gets ``401`` with ``WWW-Authenticate: Bearer authorization="<authority>/<tenant>",
resource="https://vault.azure.net"``; the SDK then asks its credential for
``https://vault.azure.net/.default`` in that tenant and retries. Because the resource's
domain is not the vault's host, clients need ``verify_challenge_resource=False``.

Authorization (optional): with ``identity_of`` (e.g. ``FakeEntra.identity_of``), a
token must map to a client id, and the vault's access policy (:meth:`grant`) must give
that client the permission (``get``, ``list``, ``set``, ``delete``); otherwise 401/403
with Key Vault's error bodies. Without it, any bearer token is accepted (like
lowkey-vault). ``admin_token`` is always accepted with every permission (for seeding).

Implemented: set (PUT), get latest/version, list secrets, list versions, update
properties (PATCH, e.g. disable), delete (purge at once: no soft-delete).

Throttling (:meth:`throttle`): the next requests of non-admin callers get Key Vault's
``429 Throttled`` with a ``Retry-After`` header, as a vault over its service limits answers;
they are recorded like every other request.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.keyvault.secrets import SecretClient

from tests.harness.doubles.https import Double, HttpsServer, Request, Response

KEY_VAULT_RESOURCE = "https://vault.azure.net"
API_VERSION = "7.6"
SUPPORTED_API_VERSIONS = frozenset({"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"})
ALL_PERMISSIONS = frozenset({"get", "list", "set", "delete"})
_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")


# --------------------------------------------------------------------------------------
# Client-side helpers (real SDK)
# --------------------------------------------------------------------------------------


class StaticTokenCredential:
    """A credential that always returns the same bearer token (for seeding and admin reads)."""

    def __init__(self, token: str, lifetime: int = 3600) -> None:
        self._token = token
        self._lifetime = lifetime

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._lifetime)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, int(time.time()) + self._lifetime)


def secret_client(vault_url: str, credential: Any, ca_file: Path | str, **kwargs: Any) -> SecretClient:
    """A real SecretClient set up for a test-double vault on 127.0.0.1 (TLS verified against ``ca_file``)."""
    return SecretClient(
        vault_url,
        credential,
        api_version=kwargs.pop("api_version", API_VERSION),
        verify_challenge_resource=False,
        connection_verify=str(ca_file),
        **kwargs,
    )


def seed(vault_url: str, ca_file: Path | str, secrets_: dict[str, str], token: str = "seed") -> dict[str, str]:
    """Set ``secrets_`` (name -> value) through the real SDK; returns name -> version."""
    client = secret_client(vault_url, StaticTokenCredential(token), ca_file)
    try:
        versions: dict[str, str] = {}
        for name, value in secrets_.items():
            version = client.set_secret(name, value).properties.version
            assert version is not None
            versions[name] = version
        return versions
    finally:
        client.close()


# --------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------


@dataclass
class SecretVersion:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    nbf: int | None
    exp: int | None
    created: int
    updated: int


@dataclass(frozen=True)
class VaultRequestRecord:
    """One request to a vault (no token or value in it)."""

    vault: str
    method: str
    path: str
    status: int
    principal: str | None  # the client id, "admin", "anonymous", or None when unauthenticated
    at: float = field(default_factory=time.time)


@dataclass
class _Vault:
    name: str
    server: HttpsServer | None = None
    secrets: dict[str, list[SecretVersion]] = field(default_factory=dict)
    policies: dict[str, set[str]] = field(default_factory=dict)
    throttled: int = 0  # how many of the next non-admin requests get 429
    retry_after: int = 1
    throttled_secret: str | None = None  # only requests for this secret count (None: every request)
    dns_suffix: str = ""  # addressed as https://<name>.<dns_suffix> (one server for all vaults)

    @property
    def url(self) -> str:
        if self.dns_suffix:
            return f"https://{self.name}.{self.dns_suffix}"
        assert self.server is not None
        return self.server.url


def _kv_error(status: int, code: str, message: str, inner: str | None = None, **headers: str) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return Response.json(status, {"error": error}, headers)


class FakeKeyVault(Double):
    """One or more fake vaults; ``start()`` it (or use ``with``)."""

    def __init__(
        self,
        workdir: Path,
        vault_names: Iterable[str],
        *,
        tenant_id: str,
        authority: str = "https://login.microsoftonline.com",
        identity_of: Callable[[str], str | None] | None = None,
        dns_suffix: str = "",
        address: str = "",
    ) -> None:
        """``dns_suffix`` and ``address``: serve every vault on ``address``:443 as ``https://<vault>.<dns_suffix>``
        (routed by Host, as Key Vault is), with the challenge resource ``https://<dns_suffix>`` that a cloud's
        Key Vault names; without them, one loopback port per vault."""
        hostnames = [f"*.{dns_suffix}"] if dns_suffix else []
        super().__init__(workdir, "keyvault.log", hostnames=hostnames, address=address)
        self.dns_suffix = dns_suffix
        self.resource = f"https://{dns_suffix}" if dns_suffix else KEY_VAULT_RESOURCE
        self.tenant_id = tenant_id
        self.authority = authority.rstrip("/")
        self.identity_of = identity_of
        self.admin_token = secrets.token_urlsafe(32)
        self._vaults = {name: _Vault(name, dns_suffix=dns_suffix) for name in vault_names}
        if not self._vaults:
            raise ValueError("at least one vault name is needed")
        self._records: list[VaultRequestRecord] = []
        self._lock = threading.RLock()

    # -- lifecycle ----------------------------------------------------------------

    def _open(self) -> None:
        if self.dns_suffix:
            apps = {f"{v.name}.{self.dns_suffix}".lower(): self._app_for(v) for v in self._vaults.values()}

            def by_host(request: Request) -> Response:
                host = request.headers.get("host", "").lower().removesuffix(":443")
                app = apps.get(host)
                if app is None:
                    return _kv_error(404, "NotFound", f"No vault is addressed as {host[:100]}")
                return app(request)

            server = self.serve(by_host, "keyvault", hostname=f"vault.{self.dns_suffix}")
            for vault in self._vaults.values():
                vault.server = server
            return
        for vault in self._vaults.values():
            vault.server = self.serve(self._app_for(vault), f"vault:{vault.name}")

    def _stop(self) -> None:
        for vault in self._vaults.values():
            vault.server = None
        super()._stop()

    # -- addressing and configuration ----------------------------------------------

    @property
    def vault_names(self) -> list[str]:
        return list(self._vaults)

    def vault_url(self, name: str) -> str:
        return self._vaults[name].url

    @property
    def url(self) -> str:
        """The first vault's URL."""
        return next(iter(self._vaults.values())).url

    def grant(self, vault: str, client_id: str, *permissions: str) -> None:
        """Add secret permissions for ``client_id`` to ``vault``'s access policy."""
        unknown = set(permissions) - ALL_PERMISSIONS
        if unknown:
            raise ValueError(f"unknown secret permissions {sorted(unknown)}")
        with self._lock:
            self._vaults[vault].policies.setdefault(client_id, set()).update(permissions)

    def throttle(self, vault: str, count: int, retry_after: int = 1, secret: str | None = None) -> None:
        """Answer the next ``count`` requests of non-admin callers to ``vault`` (for ``secret`` only, when given:
        other tests' readers of the vault are not disturbed) with 429 and ``Retry-After``."""
        with self._lock:
            self._vaults[vault].throttled = count
            self._vaults[vault].retry_after = retry_after
            self._vaults[vault].throttled_secret = secret

    def revoke(self, vault: str, client_id: str) -> None:
        with self._lock:
            self._vaults[vault].policies.pop(client_id, None)

    @property
    def records(self) -> list[VaultRequestRecord]:
        with self._lock:
            return list(self._records)

    def reset_counts(self) -> None:
        with self._lock:
            self._records.clear()

    def seed(self, vault: str, secrets_: dict[str, str]) -> dict[str, str]:
        """Set secrets in ``vault`` through the real SDK (as admin); returns name -> version."""
        return seed(self.vault_url(vault), self.ca_file, secrets_, token=self.admin_token)

    def admin_client(self, vault: str) -> SecretClient:
        return secret_client(self.vault_url(vault), StaticTokenCredential(self.admin_token), self.ca_file)

    # -- HTTP ---------------------------------------------------------------------

    def _app_for(self, vault: _Vault) -> Callable[[Request], Response]:
        def app(request: Request) -> Response:
            principal, response = self._authenticate(request)
            if response is None:
                assert principal is not None
                response = self._throttled(vault, principal, request) or self._route(vault, principal, request)
            with self._lock:
                self._records.append(
                    VaultRequestRecord(vault.name, request.method, request.path, response.status, principal)
                )
            return response

        return app

    def _throttled(self, vault: _Vault, principal: str, request: Request) -> Response | None:
        parts = request.path.strip("/").split("/")
        with self._lock:
            if principal == "admin" or vault.throttled <= 0:
                return None
            if vault.throttled_secret is not None and parts[1:2] != [vault.throttled_secret]:
                return None
            vault.throttled -= 1
            seconds = vault.retry_after
        return _kv_error(
            429,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: A single client has"
            " exceeded the maximum allowed requests per vault.",
            **{"Retry-After": str(seconds)},
        )

    def _challenge(self) -> str:
        return f'Bearer authorization="{self.authority}/{self.tenant_id}", resource="{self.resource}"'

    def _authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, _kv_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                **{"WWW-Authenticate": self._challenge()},
            )
        if secrets.compare_digest(token, self.admin_token):
            return "admin", None
        if self.identity_of is None:
            return "anonymous", None
        client_id = self.identity_of(token)
        if client_id is None:
            return None, _kv_error(
                401,
                "Unauthorized",
                f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{self.tenant_id}/, "
                f"https://login.microsoftonline.com/{self.tenant_id}/v2.0.",
                **{"WWW-Authenticate": self._challenge()},
            )
        return client_id, None

    def _authorize(self, vault: _Vault, principal: str, permission: str) -> Response | None:
        if principal in ("admin", "anonymous"):
            return None
        with self._lock:
            allowed = permission in vault.policies.get(principal, set())
        if allowed:
            return None
        return _kv_error(
            403,
            "Forbidden",
            f"The user, group or application 'appid={principal};iss=https://sts.windows.net/{self.tenant_id}/' "
            f"does not have secrets {permission} permission on key vault '{vault.name};location=eastus'. "
            "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
            inner="AccessDenied",
        )

    def _route(self, vault: _Vault, principal: str, request: Request) -> Response:
        api_version = request.query.get("api-version")
        if not api_version:
            return _kv_error(400, "BadParameter", "The api-version query parameter is missing.")
        if api_version not in SUPPORTED_API_VERSIONS:
            return _kv_error(
                400,
                "BadParameter",
                f"The specified version ({api_version}) is not recognized. Consider using the latest supported "
                "version (7.6).",
            )
        parts = request.path.strip("/").split("/")
        method = request.method
        if parts[0] != "secrets" or len(parts) > 3:
            return _kv_error(404, "NotFound", f"Unknown path {request.path}")
        if len(parts) == 1:
            if method != "GET":
                return _kv_error(405, "MethodNotAllowed", f"{method} is not allowed on {request.path}")
            return self._authorize(vault, principal, "list") or self._list(vault)
        name = parts[1]
        if not _NAME.match(name):
            return _kv_error(400, "BadParameter", f"The request URI contains an invalid name: {name}")
        version = parts[2] if len(parts) == 3 else ""
        if method == "PUT" and not version:
            return self._authorize(vault, principal, "set") or self._set(vault, name, request)
        if method == "GET" and version == "versions":
            return self._authorize(vault, principal, "list") or self._list_versions(vault, name)
        if method == "GET":
            return self._authorize(vault, principal, "get") or self._get(vault, name, version)
        if method == "PATCH":
            return self._authorize(vault, principal, "set") or self._update(vault, name, version, request)
        if method == "DELETE" and not version:
            return self._authorize(vault, principal, "delete") or self._delete(vault, name)
        return _kv_error(405, "MethodNotAllowed", f"{method} is not allowed on {request.path}")

    # -- operations ----------------------------------------------------------------

    def _bundle(self, vault: _Vault, name: str, sv: SecretVersion, with_value: bool = True) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": sv.enabled,
            "created": sv.created,
            "updated": sv.updated,
            "recoveryLevel": "Purgeable",
            "recoverableDays": 0,
        }
        if sv.nbf is not None:
            attributes["nbf"] = sv.nbf
        if sv.exp is not None:
            attributes["exp"] = sv.exp
        body: dict[str, Any] = {"id": f"{vault.url}/secrets/{name}/{sv.version}", "attributes": attributes}
        if with_value:
            body["value"] = sv.value
        if sv.content_type is not None:
            body["contentType"] = sv.content_type
        if sv.tags is not None:
            body["tags"] = sv.tags
        return body

    def _not_found(self, name: str, version: str = "") -> Response:
        ident = f"{name}/{version}" if version else name
        return _kv_error(
            404,
            "SecretNotFound",
            f"A secret with (name/id) {ident} was not found in this key vault. If you recently deleted this secret "
            "you may be able to recover it using the correct recovery command. For help resolving this issue, "
            "please see https://go.microsoft.com/fwlink/?linkid=2125182",
        )

    def _find(self, vault: _Vault, name: str, version: str) -> SecretVersion | None:
        versions = vault.secrets.get(name)
        if not versions:
            return None
        if not version:
            return versions[-1]
        return next((v for v in versions if v.version == version), None)

    def _set(self, vault: _Vault, name: str, request: Request) -> Response:
        try:
            body = _json_body(request)
            value = body["value"]
            if not isinstance(value, str):
                raise TypeError("value")
        except (ValueError, KeyError, TypeError):
            return _kv_error(400, "BadParameter", "Property value is required and must be a string.")
        attributes = body.get("attributes") or {}
        now = int(time.time())
        sv = SecretVersion(
            version=uuid.uuid4().hex,
            value=value,
            content_type=body.get("contentType"),
            tags=body.get("tags"),
            enabled=bool(attributes.get("enabled", True)),
            nbf=attributes.get("nbf"),
            exp=attributes.get("exp"),
            created=now,
            updated=now,
        )
        with self._lock:
            vault.secrets.setdefault(name, []).append(sv)
        return Response.json(200, self._bundle(vault, name, sv))

    def _get(self, vault: _Vault, name: str, version: str) -> Response:
        with self._lock:
            sv = self._find(vault, name, version)
        if sv is None:
            return self._not_found(name, version)
        if not sv.enabled:
            return _kv_error(
                403, "Forbidden", "Operation get is not allowed on a disabled secret.", inner="SecretDisabled"
            )
        return Response.json(200, self._bundle(vault, name, sv))

    def _update(self, vault: _Vault, name: str, version: str, request: Request) -> Response:
        try:
            body = _json_body(request)
        except ValueError:
            return _kv_error(400, "BadParameter", "The request body is not valid JSON.")
        with self._lock:
            sv = self._find(vault, name, version)
            if sv is None:
                return self._not_found(name, version)
            attributes = body.get("attributes") or {}
            if "enabled" in attributes:
                sv.enabled = bool(attributes["enabled"])
            for key in ("nbf", "exp"):
                if key in attributes:
                    setattr(sv, key, attributes[key])
            if "contentType" in body:
                sv.content_type = body["contentType"]
            if "tags" in body:
                sv.tags = body["tags"]
            sv.updated = int(time.time())
            return Response.json(200, self._bundle(vault, name, sv, with_value=False))

    def _delete(self, vault: _Vault, name: str) -> Response:
        with self._lock:
            versions = vault.secrets.pop(name, None)
        if not versions:
            return self._not_found(name)
        # No recoveryId: soft-delete is off, so the SDK's delete poller finishes at once.
        return Response.json(200, self._bundle(vault, name, versions[-1], with_value=False))

    def _item(self, vault: _Vault, name: str, sv: SecretVersion, with_version: bool) -> dict[str, Any]:
        item = self._bundle(vault, name, sv, with_value=False)
        if not with_version:
            item["id"] = f"{vault.url}/secrets/{name}"
        return item

    def _list(self, vault: _Vault) -> Response:
        with self._lock:
            items = [self._item(vault, n, vs[-1], with_version=False) for n, vs in vault.secrets.items() if vs]
        return Response.json(200, {"value": items, "nextLink": None})

    def _list_versions(self, vault: _Vault, name: str) -> Response:
        with self._lock:
            versions = list(vault.secrets.get(name, []))
        if not versions:
            return self._not_found(name)
        items = [self._item(vault, name, sv, with_version=True) for sv in versions]
        return Response.json(200, {"value": items, "nextLink": None})


def _json_body(request: Request) -> dict[str, Any]:
    body = json.loads(request.body or b"{}")
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body
