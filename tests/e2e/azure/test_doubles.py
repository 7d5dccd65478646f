"""The Azure test doubles, proven with the real azure-identity and azure-keyvault-secrets SDKs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.identity import WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient

from tests.harness import CLIENT_ID, TENANT_ID, VAULT, ControlPlane, loopback, trust
from tests.harness.doubles.entra import (
    ASSERTION_TYPE,
    TOKEN_EXCHANGE_AUDIENCE,
    FakeEntra,
    FederatedCredential,
    JwksSource,
    JwksUnavailable,
    TokenIssuer,
)
from tests.harness.doubles.https import HttpsServer, Request, Response
from tests.harness.doubles.keyvault import FakeKeyVault, StaticTokenCredential, secret_client, seed

NS, SA = "payments", "api"
KV_SCOPE = "https://vault.azure.net/.default"


def workload_credential(entra: FakeEntra, token_file: Path, **kwargs: Any) -> WorkloadIdentityCredential:
    """azure-identity's real credential pointed at the fake endpoint, trusting its CA."""
    return WorkloadIdentityCredential(
        tenant_id=kwargs.pop("tenant_id", TENANT_ID),
        client_id=kwargs.pop("client_id", CLIENT_ID),
        token_file_path=str(token_file),
        authority=entra.authority,
        connection_verify=str(entra.ca_file),
        **kwargs,
    )


def post_token(entra: FakeEntra, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST a token request the way azure-identity does; returns (status, JSON body)."""
    req = urllib.request.Request(
        f"{entra.url}/{tenant}/oauth2/v2.0/token",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    ctx = trust(entra.ca_file)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def assertion_form(assertion: str, client_id: str = CLIENT_ID) -> dict[str, str]:
    return {
        "client_assertion": assertion,
        "client_assertion_type": ASSERTION_TYPE,
        "client_id": client_id,
        "grant_type": "client_credentials",
        "scope": KV_SCOPE,
    }


# --------------------------------------------------------------------------------------
# Key Vault double
# --------------------------------------------------------------------------------------


def test_key_vault_seed_and_read_back_with_tls_verified(key_vault: FakeKeyVault) -> None:
    versions = key_vault.seed(VAULT, {"db-password": "s3cr3t", "api-key": "k-1"})
    rotated = key_vault.seed(VAULT, {"api-key": "k-2"})

    client = key_vault.admin_client(VAULT)
    with client:
        got = client.get_secret("db-password")
        assert got.value == "s3cr3t"
        assert got.properties.version == versions["db-password"]
        assert got.id == f"{key_vault.vault_url(VAULT)}/secrets/db-password/{versions['db-password']}"
        assert client.get_secret("api-key").value == "k-2"
        assert client.get_secret("api-key", versions["api-key"]).value == "k-1"
        listed = {p.version for p in client.list_properties_of_secret_versions("api-key")}
        assert listed == {versions["api-key"], rotated["api-key"]}
        assert {p.name for p in client.list_properties_of_secrets()} == {"db-password", "api-key"}

    # Verification is real: the default trust store does not know the double's CA.
    untrusted = SecretClient(
        key_vault.vault_url(VAULT),
        StaticTokenCredential(key_vault.admin_token),
        api_version="7.6",
        verify_challenge_resource=False,
        retry_total=0,
    )
    with untrusted, pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.get_secret("db-password")


def test_key_vault_module_level_seed_helper(tmp_path: Path) -> None:
    """``seed`` works against an unauthenticated-mode vault with any bearer token, like lowkey-vault."""
    with FakeKeyVault(tmp_path, ["a", "b"], tenant_id=TENANT_ID) as kv:
        assert kv.vault_url("a") != kv.vault_url("b")
        versions = seed(kv.vault_url("b"), kv.ca_file, {"only-in-b": "v"}, token="whatever")
        with secret_client(kv.vault_url("b"), StaticTokenCredential("other"), kv.ca_file) as client:
            assert client.get_secret("only-in-b").properties.version == versions["only-in-b"]
        client_a = secret_client(kv.vault_url("a"), StaticTokenCredential("other"), kv.ca_file)
        with client_a, pytest.raises(ResourceNotFoundError, match="SecretNotFound"):
            client_a.get_secret("only-in-b")


def test_key_vault_error_shapes(key_vault: FakeKeyVault) -> None:
    key_vault.seed(VAULT, {"gone": "x"})
    with key_vault.admin_client(VAULT) as client:
        with pytest.raises(ResourceNotFoundError) as missing:
            client.get_secret("nope")
        assert missing.value.status_code == 404
        assert missing.value.error is not None and missing.value.error.code == "SecretNotFound"

        client.update_secret_properties("gone", enabled=False)
        with pytest.raises(HttpResponseError) as disabled:
            client.get_secret("gone")
        assert disabled.value.status_code == 403
        assert "disabled secret" in str(disabled.value)

        client.begin_delete_secret("gone").wait()
        with pytest.raises(ResourceNotFoundError):
            client.get_secret("gone")

    # An access token nobody issued: 401 (the SDK re-challenges once, then gives up).
    with secret_client(key_vault.vault_url(VAULT), StaticTokenCredential("forged"), key_vault.ca_file) as client:
        with pytest.raises(ClientAuthenticationError) as forged:
            client.get_secret("anything")
        assert forged.value.status_code == 401
        assert "AKV10032" in str(forged.value)

    # An api-version the service does not know.
    old_api = secret_client(
        key_vault.vault_url(VAULT), StaticTokenCredential(key_vault.admin_token), key_vault.ca_file, api_version="1.0"
    )
    with old_api, pytest.raises(HttpResponseError, match="not recognized"):
        old_api.get_secret("anything")


# --------------------------------------------------------------------------------------
# Token endpoint, without Kubernetes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_workload_identity_credential_gets_token(entra: FakeEntra, tmp_path: Path, alg: str) -> None:
    issuer = TokenIssuer(alg=alg)
    entra.trust_issuer(issuer.issuer, issuer.source())
    entra.add_federated_credential(issuer.credential(TENANT_ID, CLIENT_ID, NS, SA))
    token_file = tmp_path / "token"
    token_file.write_text(issuer.token(NS, SA))

    credential = workload_credential(entra, token_file)
    token = credential.get_token(KV_SCOPE)
    assert token.expires_on > time.time() + 3000
    assert entra.identity_of(token.token) == CLIENT_ID
    assert entra.identity_of(token.token, resource="https://vault.azure.net") == CLIENT_ID
    assert entra.identity_of(token.token, resource="https://storage.azure.com") is None
    assert entra.identity_of("not-a-token") is None

    # azure-identity caches the access token: a second call does not reach the endpoint.
    assert credential.get_token(KV_SCOPE).token == token.token
    assert entra.request_count == 1 and entra.requests_for(CLIENT_ID, succeeded=True) == 1

    # Neither the assertion nor the access token is logged.
    log = entra.log_path.read_text()
    assert token_file.read_text() not in log and token.token not in log
    assert "/oauth2/v2.0/token -> 200" in log


def test_wrong_subject_is_aadsts70021(entra: FakeEntra, sa_issuer: TokenIssuer, tmp_path: Path) -> None:
    entra.trust_issuer(sa_issuer.issuer, sa_issuer.source())
    entra.add_federated_credential(sa_issuer.credential(TENANT_ID, CLIENT_ID, NS, SA))
    token_file = tmp_path / "token"
    token_file.write_text(sa_issuer.token(NS, "intruder"))

    with pytest.raises(ClientAuthenticationError) as caught:
        workload_credential(entra, token_file).get_token(KV_SCOPE)
    message = str(caught.value)
    assert "AADSTS70021" in message
    assert f"Assertion Subject: 'system:serviceaccount:{NS}:intruder'" in message
    assert f"Assertion Issuer: '{sa_issuer.issuer}'" in message
    assert entra.records[-1].status == 401 and entra.records[-1].error_code == 70021


def _expired(issuer: TokenIssuer) -> str:
    return issuer.token(NS, SA, lifetime=60, now=time.time() - 7200)


def _foreign_signature(issuer: TokenIssuer) -> str:
    other = TokenIssuer(issuer.issuer)
    other.kid = issuer.kid  # same key id, different key
    return other.token(NS, SA)


def _unknown_kid(issuer: TokenIssuer) -> str:
    other = TokenIssuer(issuer.issuer)
    return other.token(NS, SA)


def _unsigned(issuer: TokenIssuer) -> str:
    good = issuer.token(NS, SA)
    _header, payload, _signature = good.split(".")
    none_header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    return f"{none_header}.{payload}."


REJECTIONS = [
    # (case, assertion factory, client id, tenant, status, error, AADSTS code)
    ("wrong subject", lambda i: i.token(NS, "other"), CLIENT_ID, TENANT_ID, 401, "invalid_client", 70021),
    (
        "wrong audience",
        lambda i: i.token(NS, SA, audience="api://other"),
        CLIENT_ID,
        TENANT_ID,
        401,
        "invalid_client",
        700212,
    ),
    (
        "unknown issuer",
        lambda i: TokenIssuer("https://elsewhere.invalid").token(NS, SA),
        CLIENT_ID,
        TENANT_ID,
        401,
        "invalid_client",
        700211,
    ),
    ("expired", _expired, CLIENT_ID, TENANT_ID, 401, "invalid_client", 700024),
    (
        "not yet valid",
        lambda i: i.token(NS, SA, now=time.time() + 7200),
        CLIENT_ID,
        TENANT_ID,
        401,
        "invalid_client",
        700024,
    ),
    ("bad signature", _foreign_signature, CLIENT_ID, TENANT_ID, 401, "invalid_client", 700027),
    ("unknown key id", _unknown_kid, CLIENT_ID, TENANT_ID, 401, "invalid_client", 700027),
    ("alg none", _unsigned, CLIENT_ID, TENANT_ID, 401, "invalid_client", 700027),
    ("malformed", lambda i: "not-a-jwt", CLIENT_ID, TENANT_ID, 400, "invalid_request", 50027),
    ("unknown client", lambda i: i.token(NS, SA), str(uuid.uuid4()), TENANT_ID, 400, "unauthorized_client", 700016),
    ("unknown tenant", lambda i: i.token(NS, SA), CLIENT_ID, str(uuid.uuid4()), 400, "invalid_request", 90002),
]


@pytest.mark.parametrize(
    ("make", "client_id", "tenant", "status", "error", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in REJECTIONS],
)
def test_token_endpoint_rejections_have_entra_error_shape(
    entra: FakeEntra,
    sa_issuer: TokenIssuer,
    make: Any,
    client_id: str,
    tenant: str,
    status: int,
    error: str,
    code: int,
) -> None:
    entra.trust_issuer(sa_issuer.issuer, sa_issuer.source())
    entra.add_federated_credential(sa_issuer.credential(TENANT_ID, CLIENT_ID, NS, SA))
    got_status, body = post_token(entra, tenant, assertion_form(make(sa_issuer), client_id))
    assert (got_status, body["error"], body["error_codes"]) == (status, error, [code])
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()
    assert f"Trace ID: {body['trace_id']}" in body["error_description"]
    assert entra.identity_of("anything") is None
    assert entra.requests_for(client_id, succeeded=False) == 1


def test_token_endpoint_request_validation(entra: FakeEntra, sa_issuer: TokenIssuer) -> None:
    entra.trust_issuer(sa_issuer.issuer, sa_issuer.source())
    entra.add_federated_credential(sa_issuer.credential(TENANT_ID, CLIENT_ID, NS, SA))
    good = assertion_form(sa_issuer.token(NS, SA))

    status, body = post_token(entra, TENANT_ID, {**good, "scope": "https://vault.azure.net/user_impersonation"})
    assert (status, body["error"], body["error_codes"]) == (400, "invalid_scope", [1002012])
    status, body = post_token(entra, TENANT_ID, {k: v for k, v in good.items() if k != "client_assertion"})
    assert (status, body["error"], body["error_codes"]) == (401, "invalid_client", [7000218])
    status, body = post_token(entra, TENANT_ID, {**good, "grant_type": "password"})
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    status, body = post_token(entra, TENANT_ID, {**good, "claims": '{"access_token":{"xms_cc":{"values":["CP1"]}}}'})
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["ext_expires_in"] == 3600 and entra.identity_of(body["access_token"]) == CLIENT_ID


def test_jwks_url_is_refetched_for_a_rotated_key(entra: FakeEntra, tmp_path: Path) -> None:
    """Keys come from a JWKS URL (HTTPS, own CA); an unknown ``kid`` makes the endpoint refetch it once."""
    old = TokenIssuer()
    new = TokenIssuer(old.issuer)
    published = {"keys": old.jwks["keys"]}
    issued = loopback(tmp_path / "jwks")

    def app(_request: Request) -> Response:
        return Response.json(200, published)

    with (
        (tmp_path / "jwks.log").open("w") as log,
        HttpsServer(app, issued.cert_file, issued.key_file, log) as server,
    ):
        source = JwksSource(
            url=f"{server.url}/openid/v1/jwks",
            ssl_context=trust(issued.ca_file),
            min_refresh_interval=0,
        )
        entra.trust_issuer(old.issuer, source)
        entra.add_federated_credential(old.credential(TENANT_ID, CLIENT_ID, NS, SA))
        assert post_token(entra, TENANT_ID, assertion_form(old.token(NS, SA)))[0] == 200
        assert post_token(entra, TENANT_ID, assertion_form(old.token(NS, SA)))[0] == 200
        assert source.fetch_count == 1
        published["keys"] = old.jwks["keys"] + new.jwks["keys"]
        assert post_token(entra, TENANT_ID, assertion_form(new.token(NS, SA)))[0] == 200
        assert source.fetch_count == 2


# --------------------------------------------------------------------------------------
# Both doubles together
# --------------------------------------------------------------------------------------


def test_workload_identity_reads_seeded_secret(
    entra: FakeEntra, key_vault: FakeKeyVault, sa_issuer: TokenIssuer, tmp_path: Path
) -> None:
    entra.trust_issuer(sa_issuer.issuer, sa_issuer.source())
    entra.add_federated_credential(sa_issuer.credential(TENANT_ID, CLIENT_ID, NS, SA))
    other_client = str(uuid.uuid4())
    entra.add_federated_credential(sa_issuer.credential(TENANT_ID, other_client, NS, "batch"))
    versions = key_vault.seed(VAULT, {"db-password": "s3cr3t"})
    key_vault.grant(VAULT, CLIENT_ID, "get")

    token_file = tmp_path / "api-token"
    token_file.write_text(sa_issuer.token(NS, SA))
    client = secret_client(key_vault.vault_url(VAULT), workload_credential(entra, token_file), key_vault.ca_file)
    with client:
        secret = client.get_secret("db-password")
    assert (secret.value, secret.properties.version) == ("s3cr3t", versions["db-password"])
    assert entra.requests_for(CLIENT_ID, succeeded=True) == 1
    # (The SDK keeps challenges in a process-wide cache per vault origin: after the seeding above, the GET
    # carries the token at once, without a 401 round trip first.)
    reads = [r for r in key_vault.records if r.method == "GET"]
    assert [(r.status, r.principal) for r in reads if r.status != 401] == [(200, CLIENT_ID)]

    # A federated identity without an access policy on the vault is refused by the vault (not by Entra).
    batch_file = tmp_path / "batch-token"
    batch_file.write_text(sa_issuer.token(NS, "batch"))
    credential = workload_credential(entra, batch_file, client_id=other_client)
    denied = secret_client(key_vault.vault_url(VAULT), credential, key_vault.ca_file)
    with denied, pytest.raises(HttpResponseError) as caught:
        denied.get_secret("db-password")
    assert caught.value.status_code == 403 and "does not have secrets get permission" in str(caught.value)


def test_vault_in_another_tenant_needs_additionally_allowed_tenants(
    entra: FakeEntra, sa_issuer: TokenIssuer, tmp_path: Path
) -> None:
    """The challenge names the vault's tenant; azure-identity refuses a tenant it was not configured for."""
    other_tenant = str(uuid.uuid4())
    entra.trust_issuer(sa_issuer.issuer, sa_issuer.source())
    entra.add_federated_credential(sa_issuer.credential(TENANT_ID, CLIENT_ID, NS, SA))
    entra.add_federated_credential(sa_issuer.credential(other_tenant, CLIENT_ID, NS, SA))
    token_file = tmp_path / "token"
    token_file.write_text(sa_issuer.token(NS, SA))
    with FakeKeyVault(tmp_path / "kv", [VAULT], tenant_id=other_tenant, identity_of=entra.identity_of) as kv:
        kv.seed(VAULT, {"s": "v"})
        kv.grant(VAULT, CLIENT_ID, "get")
        refused = secret_client(kv.vault_url(VAULT), workload_credential(entra, token_file), kv.ca_file)
        with refused, pytest.raises(ClientAuthenticationError, match="additionally_allowed_tenants"):
            refused.get_secret("s")
        assert entra.request_count == 0
        credential = workload_credential(entra, token_file, additionally_allowed_tenants=["*"])
        with secret_client(kv.vault_url(VAULT), credential, kv.ca_file) as client:
            assert client.get_secret("s").value == "v"
        assert [r.tenant_id for r in entra.records] == [other_tenant]


# --------------------------------------------------------------------------------------
# With a real kube-apiserver as the issuer
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("discovery", [False, True], ids=["jwks-url", "oidc-discovery"])
def test_apiserver_service_account_token_exchange(
    control_plane: ControlPlane,
    entra: FakeEntra,
    key_vault: FakeKeyVault,
    tmp_path: Path,
    discovery: bool,
) -> None:
    namespace = f"wi-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", namespace)
    try:
        control_plane.kubectl("create", "serviceaccount", SA, "-n", namespace)
        minted = control_plane.kubectl(
            "create", "token", SA, "-n", namespace, "--audience", TOKEN_EXCHANGE_AUDIENCE, "--duration", "10m"
        ).stdout.strip()
    finally:
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)

    source = entra.trust_apiserver(control_plane, discovery=discovery)
    entra.add_federated_credential(
        FederatedCredential(TENANT_ID, CLIENT_ID, control_plane.issuer, f"system:serviceaccount:{namespace}:{SA}")
    )
    key_vault.seed(VAULT, {"db-password": "from-k8s"})
    key_vault.grant(VAULT, CLIENT_ID, "get")

    token_file = tmp_path / "token"
    token_file.write_text(minted)
    with secret_client(key_vault.vault_url(VAULT), workload_credential(entra, token_file), key_vault.ca_file) as c:
        assert c.get_secret("db-password").value == "from-k8s"
    assert source.fetch_count == 1

    # The same issuer's tokens with another audience or for another service account do not match.
    default_audience = control_plane.kubectl("create", "token", "default", "-n", "default", "--duration", "10m")
    status, body = post_token(entra, TENANT_ID, assertion_form(default_audience.stdout.strip()))
    assert (status, body["error_codes"]) == (401, [700212])
    other_sa = control_plane.kubectl(
        "create", "token", "default", "-n", "default", "--audience", TOKEN_EXCHANGE_AUDIENCE, "--duration", "10m"
    )
    status, body = post_token(entra, TENANT_ID, assertion_form(other_sa.stdout.strip()))
    assert (status, body["error_codes"]) == (401, [70021])
    assert "Assertion Subject: 'system:serviceaccount:default:default'" in body["error_description"]


def test_apiserver_jwks_needs_credentials(control_plane: ControlPlane, entra: FakeEntra) -> None:
    """The apiserver refuses anonymous JWKS reads (403); a client certificate or any service account's bearer
    token (RBAC: system:service-account-issuer-discovery) is accepted. An unreadable JWKS is Entra's AADSTS50166."""
    jwks_url = f"{control_plane.url}/openid/v1/jwks"
    ca_only = trust(control_plane.ca_file)
    with pytest.raises(JwksUnavailable, match="403"):
        JwksSource(url=jwks_url, ssl_context=ca_only).keys(control_plane.issuer)

    by_cert = JwksSource(url=jwks_url, ssl_context=control_plane.admin_ssl_context()).keys(control_plane.issuer)
    sa_token = control_plane.kubectl("create", "token", "default", "-n", "default", "--duration", "10m")
    by_token = JwksSource(url=jwks_url, ssl_context=ca_only, bearer_token=sa_token.stdout.strip())
    assert by_token.keys(control_plane.issuer) == by_cert and by_cert

    entra.trust_issuer(control_plane.issuer, JwksSource(url=jwks_url, ssl_context=ca_only))
    entra.add_federated_credential(
        FederatedCredential(TENANT_ID, CLIENT_ID, control_plane.issuer, "system:serviceaccount:default:default")
    )
    minted = control_plane.kubectl(
        "create", "token", "default", "-n", "default", "--audience", TOKEN_EXCHANGE_AUDIENCE, "--duration", "10m"
    )
    status, body = post_token(entra, TENANT_ID, assertion_form(minted.stdout.strip()))
    assert (status, body["error"], body["error_codes"]) == (400, "invalid_request", [50166])
