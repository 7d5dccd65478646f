"""A fake Microsoft Entra ID token endpoint for workload identity federation.

Implements ``POST /{tenant}/oauth2/v2.0/token`` with the client-credentials grant and a
JWT client assertion, as azure-identity's WorkloadIdentityCredential (a
ClientAssertionCredential reading a Kubernetes service-account token file) sends it:
form fields ``client_assertion``, ``client_assertion_type``
(urn:ietf:params:oauth:client-assertion-type:jwt-bearer), ``client_id``,
``grant_type=client_credentials``, ``scope`` and possibly ``claims`` (ignored).

The assertion is checked the way Entra checks a federated credential: the issuer must be
one a federated identity credential of that application names, the signature must verify
against that issuer's JWKS (RS256/RS384/RS512, ES256/ES384), ``exp``/``nbf`` must hold
(with clock skew), and the (issuer, subject, audience) triple must match a credential
exactly (case-sensitive). Failures answer with Entra's error body and AADSTS codes.

Successful requests get an opaque random access token; :meth:`FakeEntra.identity_of`
maps it back to the application (client) id, so a Key Vault double can authorize it.

Usage with the real SDK (the endpoint's CA must be trusted: ``connection_verify``)::

    with FakeEntra(workdir, [FederatedCredential(TENANT, CLIENT, issuer, subject)],
                   issuers={issuer: JwksSource(jwks=jwks)}) as entra:
        cred = WorkloadIdentityCredential(tenant_id=TENANT, client_id=CLIENT, token_file_path=path,
                                          authority=entra.url, connection_verify=str(entra.ca_file))

Neither the assertion nor any token is ever logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import ssl
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from tests.harness.doubles.https import Double, Request, Response
from webhook.providers.azure.names import TOKEN_AUDIENCE

if TYPE_CHECKING:
    from tests.harness.controlplane import ControlPlane

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OIDC_SCOPES = frozenset({"openid", "offline_access", "profile"})
TOKEN_EXCHANGE_AUDIENCE = TOKEN_AUDIENCE  # what Entra ID accepts in a federated token exchange
WIF_DOCS = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
DEFAULT_CLOCK_SKEW = 300.0

# --------------------------------------------------------------------------------------
# JWT / JWKS with `cryptography`
# --------------------------------------------------------------------------------------

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
    "ES256": hashes.SHA256,
    "ES384": hashes.SHA384,
}
_CURVES: dict[str, tuple[str, ec.EllipticCurve, int]] = {
    "ES256": ("P-256", ec.SECP256R1(), 32),
    "ES384": ("P-384", ec.SECP384R1(), 48),
}
_CURVE_BY_CRV: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}


class JwtError(ValueError):
    """The assertion is not a well-formed compact JWS with a JSON header and payload."""


def b64url_decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_int(data: str) -> int:
    return int.from_bytes(b64url_decode(data), "big")


def _int_b64(value: int, length: int | None = None) -> str:
    length = length or max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(length, "big"))


@dataclass(frozen=True)
class ParsedJwt:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse_jwt(token: str) -> ParsedJwt:
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise JwtError(str(exc)) from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("header and payload must be JSON objects")
    return ParsedJwt(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def _verify_with_jwk(jwk: dict[str, Any], alg: str, signing_input: bytes, signature: bytes) -> bool:
    hash_cls = _HASHES[alg]
    try:
        if alg.startswith("RS"):
            if jwk.get("kty") != "RSA":
                return False
            rsa_key = rsa.RSAPublicNumbers(_b64_int(jwk["e"]), _b64_int(jwk["n"])).public_key()
            rsa_key.verify(signature, signing_input, padding.PKCS1v15(), hash_cls())
            return True
        crv, curve, size = _CURVES[alg]
        if jwk.get("kty") != "EC" or jwk.get("crv") != crv or len(signature) != 2 * size:
            return False
        ec_key = ec.EllipticCurvePublicNumbers(_b64_int(jwk["x"]), _b64_int(jwk["y"]), curve).public_key()
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        ec_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hash_cls()))
        return True
    except (InvalidSignature, KeyError, ValueError):
        return False


def public_jwk(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, kid: str) -> dict[str, Any]:
    """The JWK (as a Kubernetes apiserver publishes it) of an RSA or EC public key."""
    if isinstance(public_key, rsa.RSAPublicKey):
        rn = public_key.public_numbers()
        return {"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": _int_b64(rn.n), "e": _int_b64(rn.e)}
    en = public_key.public_numbers()
    crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[public_key.curve.name]
    size = (public_key.curve.key_size + 7) // 8
    alg = {"P-256": "ES256", "P-384": "ES384"}[crv]
    return {
        "use": "sig",
        "kty": "EC",
        "kid": kid,
        "alg": alg,
        "crv": crv,
        "x": _int_b64(en.x, size),
        "y": _int_b64(en.y, size),
    }


def sign_jwt(
    claims: dict[str, Any],
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    kid: str,
    alg: str | None = None,
) -> str:
    """A compact JWS over ``claims`` (test helper: mints service-account-like tokens)."""
    if alg is None:
        alg = "RS256" if isinstance(private_key, rsa.RSAPrivateKey) else "ES256"
    header = {"alg": alg, "kid": kid}
    signing_input = f"{b64url_encode(json.dumps(header).encode())}.{b64url_encode(json.dumps(claims).encode())}"
    hash_cls = _HASHES[alg]
    if isinstance(private_key, rsa.RSAPrivateKey):
        signature = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hash_cls())
    else:
        size = _CURVES[alg][2]
        r, s = decode_dss_signature(private_key.sign(signing_input.encode(), ec.ECDSA(hash_cls())))
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return f"{signing_input}.{b64url_encode(signature)}"


def service_account_claims(
    issuer: str,
    namespace: str,
    service_account: str,
    audience: str = TOKEN_EXCHANGE_AUDIENCE,
    lifetime: float = 3600,
    now: float | None = None,
) -> dict[str, Any]:
    """Claims shaped like a projected Kubernetes service-account token."""
    now = time.time() if now is None else now
    return {
        "aud": [audience],
        "exp": int(now + lifetime),
        "iat": int(now),
        "nbf": int(now),
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": str(uuid.uuid4())},
        },
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
    }


class JwksUnavailable(RuntimeError):
    """The issuer's keys could not be fetched."""


class JwksSource:
    """Where an issuer's signing keys come from.

    Either a JWKS dict given directly, or fetched over HTTPS from ``url`` (e.g. a
    kube-apiserver's ``/openid/v1/jwks``), or — with neither — discovered from
    ``{issuer}/.well-known/openid-configuration``'s ``jwks_uri`` as Entra does.
    ``ssl_context`` (CA and optional client certificate) and ``bearer_token`` are used
    for fetching. Fetched keys are cached; an unknown ``kid`` triggers at most one
    refetch per ``min_refresh_interval`` seconds (key rotation).
    """

    def __init__(
        self,
        jwks: dict[str, Any] | None = None,
        url: str | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        bearer_token: str | None = None,
        min_refresh_interval: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        self._static = jwks
        self.url = url
        self.ssl_context = ssl_context
        self.bearer_token = bearer_token
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self._cached: list[dict[str, Any]] | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()
        self.fetch_count = 0

    def keys(self, issuer: str, refresh: bool = False) -> list[dict[str, Any]]:
        if self._static is not None:
            return list(self._static.get("keys", []))
        with self._lock:
            stale = refresh and time.monotonic() - self._fetched_at >= self.min_refresh_interval
            if self._cached is None or stale:
                self._cached = list(self._fetch(issuer).get("keys", []))
                self._fetched_at = time.monotonic()
            return list(self._cached)

    def _get_json(self, url: str) -> Any:
        # kube-apiserver serves its JWKS as application/jwk-set+json and answers 406 to a plain application/json.
        headers = {"Accept": "application/jwk-set+json, application/json"}
        if self.bearer_token:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise JwksUnavailable(f"GET {url}: {exc}") from exc

    def _fetch(self, issuer: str) -> dict[str, Any]:
        self.fetch_count += 1
        url = self.url
        if url is None:
            config = self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
            url = config.get("jwks_uri") if isinstance(config, dict) else None
            if not isinstance(url, str):
                raise JwksUnavailable(f"{issuer}: OpenID configuration has no jwks_uri")
        jwks = self._get_json(url)
        if not isinstance(jwks, dict):
            raise JwksUnavailable(f"{url}: not a JWKS")
        return jwks


# --------------------------------------------------------------------------------------
# The endpoint
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential on an application (client id) in a tenant."""

    tenant_id: str
    client_id: str
    issuer: str
    subject: str
    audience: str = TOKEN_EXCHANGE_AUDIENCE


@dataclass(frozen=True)
class IssuedToken:
    client_id: str
    tenant_id: str
    scope: str
    expires_on: float
    issuer: str
    subject: str

    @property
    def resource(self) -> str:
        """The scope without its ``/.default`` suffix (the access token's audience)."""
        return self.scope.removesuffix("/.default")


@dataclass(frozen=True)
class TokenRequestRecord:
    """One token request, as counted for cache/coalescing assertions (no secrets in it)."""

    tenant_id: str
    client_id: str
    scope: str
    status: int
    error_code: int | None
    at: float = field(default_factory=time.time)


class EntraError(Exception):
    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.status = status
        self.error = error
        self.code = code
        self.description = description


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


class FakeEntra(Double):
    """The token endpoint double. ``start()`` it (or use ``with``); ``url`` is the authority host."""

    def __init__(
        self,
        workdir: Path,
        federated_credentials: Iterable[FederatedCredential] = (),
        issuers: dict[str, JwksSource] | None = None,
        *,
        expires_in: int = 3600,
        clock_skew: float = DEFAULT_CLOCK_SKEW,
        hostnames: Sequence[str] = (),
        address: str = "",
    ) -> None:
        """``hostnames``/``address``: serve on ``address``:443 as those instances (the first is ``url``), as a
        sovereign or private cloud's Entra ID is reached by name; see ``Double``."""
        super().__init__(workdir, "entra.log", hostnames=hostnames, address=address)
        self.federated_credentials: list[FederatedCredential] = list(federated_credentials)
        self.issuers: dict[str, JwksSource] = dict(issuers or {})
        self.expires_in = expires_in
        self.clock_skew = clock_skew
        self.response_delay = 0.0  # seconds to sleep before answering a token request
        self.url = ""
        self._tokens: dict[str, IssuedToken] = {}
        self._records: list[TokenRequestRecord] = []
        self._lock = threading.Lock()

    # -- configuration ------------------------------------------------------------

    def add_federated_credential(self, credential: FederatedCredential) -> None:
        with self._lock:
            self.federated_credentials.append(credential)

    def trust_issuer(self, issuer: str, source: JwksSource) -> None:
        with self._lock:
            self.issuers[issuer] = source

    def trust_apiserver(self, cp: ControlPlane, *, discovery: bool = False) -> JwksSource:
        """Trust the ServiceAccount tokens of `cp`: its JWKS, fetched as admin from /openid/v1/jwks (or the URL its
        OpenID discovery document names)."""
        url = None if discovery else f"{cp.url}/openid/v1/jwks"
        source = JwksSource(url=url, ssl_context=cp.admin_ssl_context())
        self.trust_issuer(cp.issuer, source)
        return source

    # -- lifecycle ----------------------------------------------------------------

    def _open(self) -> None:
        self.url = self.serve(self._handle, "entra").url

    @property
    def authority(self) -> str:
        """What to pass as azure-identity's ``authority`` / AZURE_AUTHORITY_HOST."""
        return self.url

    def mint(self, client_id: str, scope: str, tenant_id: str = "") -> tuple[str, IssuedToken]:
        """An access token for `client_id` issued without an assertion: what Azure's instance metadata service hands
        a VM's (a node's) managed identity, which no federation governs."""
        issued = IssuedToken(client_id, tenant_id, scope, time.time() + self.expires_in, "managed-identity", client_id)
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = issued
        return token, issued

    # -- queries for tests and for a Key Vault double --------------------------------

    def token_info(self, access_token: str) -> IssuedToken | None:
        """The record of an access token this endpoint issued and that has not expired."""
        with self._lock:
            info = self._tokens.get(access_token)
        if info is None or info.expires_on <= time.time():
            return None
        return info

    def identity_of(self, access_token: str, resource: str | None = None) -> str | None:
        """The client id a live access token was issued to (optionally: only for ``resource``)."""
        info = self.token_info(access_token)
        if info is None or (resource is not None and info.resource.rstrip("/") != resource.rstrip("/")):
            return None
        return info.client_id

    @property
    def records(self) -> list[TokenRequestRecord]:
        with self._lock:
            return list(self._records)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._records)

    def requests_for(self, client_id: str, *, succeeded: bool | None = None) -> int:
        return sum(
            1
            for r in self.records
            if r.client_id == client_id and (succeeded is None or (r.status == 200) == succeeded)
        )

    def reset_counts(self) -> None:
        with self._lock:
            self._records.clear()

    # -- HTTP ---------------------------------------------------------------------

    def _instance(self, host: str) -> bool:
        """Whether ``host`` is one of the instances this double is (its names, or its loopback address)."""
        return host.lower() in {h.lower() for h in self.hostnames} or f"https://{host}" == self.url

    def _discovery(self, request: Request) -> Response:
        """MSAL's instance discovery: which tenant discovery document an authorization endpoint's instance has
        (MSAL for Go asks login.microsoftonline.com for every host it does not trust itself)."""
        endpoint = urlsplit(request.query.get("authorization_endpoint", ""))
        parts = endpoint.path.strip("/").split("/")
        if endpoint.scheme != "https" or not self._instance(endpoint.netloc) or len(parts) < 1 or not parts[0]:
            correlation = request.headers.get("client-request-id") or str(uuid.uuid4())
            exc = EntraError(400, "invalid_instance", 50049, "Unknown or invalid instance.")
            return self._error(exc, correlation)
        host, tenant = endpoint.netloc, parts[0]
        return Response.json(
            200,
            {
                "tenant_discovery_endpoint": f"https://{host}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            },
        )

    def _openid_configuration(self, host: str, tenant: str) -> Response:
        base = f"https://{host}/{tenant}"
        return Response.json(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"https://{host}/{tenant}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "NA",
                "cloud_instance_name": host,
            },
        )

    def _handle(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and parts == ["common", "discovery", "instance"]:
            return self._discovery(request)
        if request.method == "GET" and len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            host = request.headers.get("host", "")
            if self._instance(host):
                return self._openid_configuration(host, parts[0])
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            return Response.json(404, {"error": "not_found", "error_description": f"no route {request.path}"})
        tenant = parts[0]
        correlation = request.headers.get("client-request-id") or str(uuid.uuid4())
        if request.method != "POST":
            exc = EntraError(400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
            return self._error(exc, correlation)
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        client_id = form.get("client_id", "")
        scope = form.get("scope", "")
        if self.response_delay:
            time.sleep(self.response_delay)
        try:
            issued = self._exchange(tenant, form)
        except EntraError as exc:
            self._record(TokenRequestRecord(tenant, client_id, scope, exc.status, exc.code))
            return self._error(exc, correlation)
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = issued
        self._record(TokenRequestRecord(tenant, client_id, scope, 200, None))
        body = {
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "access_token": token,
        }
        return Response.json(200, body, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def _record(self, record: TokenRequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _error(self, exc: EntraError, correlation: str) -> Response:
        now = time.time()
        timestamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace_id = str(uuid.uuid4())
        description = (
            f"AADSTS{exc.code}: {exc.description} Trace ID: {trace_id} Correlation ID: {correlation} "
            f"Timestamp: {timestamp}"
        )
        body = {
            "error": exc.error,
            "error_description": description,
            "error_codes": [exc.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation,
            "error_uri": f"{self.url}/error?code={exc.code}",
        }
        return Response.json(exc.status, body, {"Cache-Control": "no-store, no-cache"})

    def _exchange(self, tenant: str, form: dict[str, str]) -> IssuedToken:
        for name in ("grant_type", "client_id", "scope"):
            if not form.get(name):
                raise EntraError(
                    400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
                )
        if form["grant_type"] != "client_credentials":
            raise EntraError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form['grant_type']}'.",
            )
        assertion = form.get("client_assertion", "")
        if not assertion or form.get("client_assertion_type") != ASSERTION_TYPE:
            raise EntraError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        client_id = form["client_id"]
        # MSAL adds the OpenID scopes to every request; Entra ID ignores them in the client credentials flow, which
        # needs exactly one resource's /.default.
        resources = [s for s in form["scope"].split() if s not in OIDC_SCOPES]
        scope = resources[0] if len(resources) == 1 else form["scope"]
        if len(resources) != 1 or not scope.endswith("/.default"):
            raise EntraError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form['scope']} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
            )
        with self._lock:
            credentials = list(self.federated_credentials)
        if not any(c.tenant_id == tenant for c in credentials):
            raise EntraError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
                "the correct cloud. Check with your subscription administrator, this may happen if there are no "
                "active subscriptions for the tenant.",
            )
        app_credentials = [c for c in credentials if c.tenant_id == tenant and c.client_id == client_id]
        if not app_credentials:
            raise EntraError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        try:
            jwt = parse_jwt(assertion)
        except JwtError:
            raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.") from None
        claims = jwt.claims
        issuer = claims.get("iss")
        subject = claims.get("sub")
        audiences = claims.get("aud")
        audience_list = [audiences] if isinstance(audiences, str) else list(audiences or [])
        if not isinstance(issuer, str) or not isinstance(subject, str) or not audience_list:
            raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.")

        by_issuer = [c for c in app_credentials if c.issuer == issuer]
        if not by_issuer:
            raise EntraError(
                401,
                "invalid_client",
                700211,
                f"No matching federated identity record found for presented assertion issuer '{issuer}'. Please "
                "note that the matching is done using a case-sensitive comparison. Please check your federated "
                f"identity credential Subject, Audience and Issuer against the presented assertion. {WIF_DOCS}",
            )
        self._verify_signature(issuer, jwt)
        self._verify_times(claims)
        by_audience = [c for c in by_issuer if c.audience in audience_list]
        if not by_audience:
            raise EntraError(
                401,
                "invalid_client",
                700212,
                f"No matching federated identity record found for presented assertion audience "
                f"'{','.join(map(str, audience_list))}'. Please note that the matching is done using a case-sensitive "
                "comparison. Please check your federated identity credential Subject, Audience and Issuer against "
                f"the presented assertion. {WIF_DOCS}",
            )
        if not any(c.subject == subject for c in by_audience):
            raise EntraError(
                401,
                "invalid_client",
                70021,
                f"No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. "
                f"Assertion Subject: '{subject}'. Assertion Audience: '{','.join(map(str, audience_list))}'. "
                f"{WIF_DOCS}",
            )
        return IssuedToken(
            client_id=client_id,
            tenant_id=tenant,
            scope=scope,
            expires_on=time.time() + self.expires_in,
            issuer=issuer,
            subject=subject,
        )

    def _verify_signature(self, issuer: str, jwt: ParsedJwt) -> None:
        alg = jwt.header.get("alg")
        kid = jwt.header.get("kid")
        if alg not in _HASHES:
            raise EntraError(
                401,
                "invalid_client",
                700027,
                f"Client assertion contains an invalid signature. [Reason - The signing algorithm '{alg}' is not "
                "supported.]",
            )
        with self._lock:
            source = self.issuers.get(issuer)
        if source is None:
            raise EntraError(
                400,
                "invalid_request",
                50166,
                f"Request to External OIDC endpoint failed. [Reason - no JWKS configured for issuer '{issuer}']",
            )
        for refresh in (False, True):
            try:
                keys = source.keys(issuer, refresh=refresh)
            except JwksUnavailable as exc:
                raise EntraError(
                    400,
                    "invalid_request",
                    50166,
                    f"Request to External OIDC endpoint failed. [Reason - {exc}]",
                ) from None
            candidates = [k for k in keys if kid is None or k.get("kid") == kid]
            if candidates:
                if any(_verify_with_jwk(k, str(alg), jwt.signing_input, jwt.signature) for k in candidates):
                    return
                raise EntraError(
                    401,
                    "invalid_client",
                    700027,
                    "Client assertion contains an invalid signature. [Reason - The provided signature value did not "
                    f"match the expected signature value., Key ID: '{kid}', Issuer: '{issuer}']",
                )
        raise EntraError(
            401,
            "invalid_client",
            700027,
            f"Client assertion contains an invalid signature. [Reason - The key was not found., Key ID: '{kid}', "
            f"Issuer: '{issuer}']",
        )

    def _verify_times(self, claims: dict[str, Any]) -> None:
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not isinstance(exp, int | float):
            raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        start = nbf if isinstance(nbf, int | float) else now
        if now > exp + self.clock_skew or now + self.clock_skew < start:
            raise EntraError(
                401,
                "invalid_client",
                700024,
                f"Client assertion is not within its valid time range. Current time: {_iso(now)}, assertion valid "
                f"from {_iso(start)}, expiry time of assertion {_iso(exp)}. Review the documentation at "
                "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
            )


class TokenIssuer:
    """A stand-in for a Kubernetes service-account token issuer: a key pair, its JWKS, minted tokens."""

    def __init__(self, issuer: str = "https://oidc.kvinject-e2e.invalid", alg: str = "RS256") -> None:
        self.issuer = issuer
        self.alg = alg
        self.key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if alg.startswith("RS"):
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.key = ec.generate_private_key(_CURVES[alg][1])
        self.kid = secrets.token_hex(8)

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.key.public_key(), self.kid)]}

    def source(self) -> JwksSource:
        return JwksSource(jwks=self.jwks)

    def token(
        self,
        namespace: str,
        service_account: str,
        audience: str = TOKEN_EXCHANGE_AUDIENCE,
        lifetime: float = 3600,
        now: float | None = None,
        **overrides: Any,
    ) -> str:
        claims = service_account_claims(self.issuer, namespace, service_account, audience, lifetime, now)
        claims.update(overrides)
        return sign_jwt(claims, self.key, self.kid, self.alg)

    def credential(self, tenant_id: str, client_id: str, namespace: str, service_account: str) -> FederatedCredential:
        """The federated credential an admin would create for this issuer's service account."""
        return FederatedCredential(
            tenant_id, client_id, self.issuer, f"system:serviceaccount:{namespace}:{service_account}"
        )
