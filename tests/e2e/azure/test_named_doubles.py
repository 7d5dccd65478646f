"""The doubles as a cloud reached by name on port 443 (the node tier's setting), proven with the real SDKs.

The node tier's hosts file resolves these names inside the test's mount namespace; here the test resolves them
itself (a patched getaddrinfo) so that the doubles' own behaviour is checked without a node: Entra ID's
instance discovery and OpenID configuration (which MSAL for Go, in the Azure provider, asks for), Key Vault's
host routing and its challenge resource, which the SDK verifies against the vault's host by default.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient

from tests.harness import CLIENT_ID, TENANT_ID, trust
from tests.harness.doubles.entra import FakeEntra, FederatedCredential, TokenIssuer
from tests.harness.doubles.keyvault import FakeKeyVault

pytestmark = pytest.mark.e2e

LOGIN = "login.kvinject.test"
PUBLIC_LOGIN = "login.microsoftonline.com"  # where MSAL for Go sends instance discovery for hosts it does not trust
SUFFIX = "vault.kvinject.test"
VAULT = "payments-kv"
ENTRA_IP, VAULT_IP = "127.0.0.2", "127.0.0.3"
NAMES = {LOGIN: ENTRA_IP, PUBLIC_LOGIN: ENTRA_IP, f"{VAULT}.{SUFFIX}": VAULT_IP, f"other-kv.{SUFFIX}": VAULT_IP}


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.environ.get("KVINJECT_NETNS"):
        pytest.fail("port 443 on 127.0.0.2-3 needs the test's own network namespace (run under tests/isolated.sh)")
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real(NAMES.get(host, host) if isinstance(host, str) else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def cloud(tmp_path: Path, resolved: None) -> Iterator[tuple[FakeEntra, FakeKeyVault, TokenIssuer]]:
    issuer = TokenIssuer()
    entra = FakeEntra(
        tmp_path / "entra",
        [FederatedCredential(TENANT_ID, CLIENT_ID, issuer.issuer, "system:serviceaccount:payments:api")],
        {issuer.issuer: issuer.source()},
        hostnames=(LOGIN, PUBLIC_LOGIN),
        address=ENTRA_IP,
    )
    with entra:
        vault = FakeKeyVault(
            tmp_path / "kv",
            [VAULT, "other-kv"],
            tenant_id=TENANT_ID,
            authority=entra.authority,
            identity_of=entra.identity_of,
            dns_suffix=SUFFIX,
            address=VAULT_IP,
        )
        with vault:
            yield entra, vault, issuer


def get_json(url: str, ca_file: Path) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, context=trust(ca_file), timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_entra_answers_discovery_for_its_instances_only(cloud: tuple[FakeEntra, FakeKeyVault, TokenIssuer]) -> None:
    entra, _, _ = cloud
    assert entra.url == f"https://{LOGIN}"
    query = f"api-version=1.1&authorization_endpoint=https://{LOGIN}/{TENANT_ID}/oauth2/v2.0/authorize"
    status, doc = get_json(f"https://{PUBLIC_LOGIN}/common/discovery/instance?{query}", entra.ca_file)
    assert status == 200
    assert doc["tenant_discovery_endpoint"] == f"https://{LOGIN}/{TENANT_ID}/v2.0/.well-known/openid-configuration"
    status, config = get_json(doc["tenant_discovery_endpoint"], entra.ca_file)
    assert status == 200
    assert config["token_endpoint"] == f"https://{LOGIN}/{TENANT_ID}/oauth2/v2.0/token"
    assert config["issuer"] == f"https://{LOGIN}/{TENANT_ID}/v2.0" and config["authorization_endpoint"]
    unknown = "api-version=1.1&authorization_endpoint=https://login.elsewhere.test/t/oauth2/v2.0/authorize"
    status, error = get_json(f"https://{PUBLIC_LOGIN}/common/discovery/instance?{unknown}", entra.ca_file)
    assert (status, error["error"], error["error_codes"]) == (400, "invalid_instance", [50049])
    assert error["error_description"].startswith("AADSTS50049: Unknown or invalid instance.")


def test_key_vault_by_name_with_the_challenge_resource_verified(
    cloud: tuple[FakeEntra, FakeKeyVault, TokenIssuer], tmp_path: Path
) -> None:
    entra, vault, issuer = cloud
    assert vault.vault_url(VAULT) == f"https://{VAULT}.{SUFFIX}"
    versions = vault.seed(VAULT, {"db-password": "s3cr3t"})
    vault.grant(VAULT, CLIENT_ID, "get")
    token_file = tmp_path / "token"
    token_file.write_text(issuer.token("payments", "api"))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(entra.ca_file.read_bytes() + vault.ca_file.read_bytes())
    credential = WorkloadIdentityCredential(
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        token_file_path=str(token_file),
        authority=entra.authority,
        connection_verify=str(bundle),
    )
    # verify_challenge_resource stays on: the challenge names https://vault.kvinject.test, the vault's domain.
    client = SecretClient(vault.vault_url(VAULT), credential, connection_verify=str(bundle))
    with client:
        secret = client.get_secret("db-password")
        assert secret.value == "s3cr3t" and secret.properties.version == versions["db-password"]
        assert secret.id == f"https://{VAULT}.{SUFFIX}/secrets/db-password/{versions['db-password']}"
    # Another vault on the same address is another vault: no grant there, so Key Vault's 403 (before any lookup).
    other = SecretClient(vault.vault_url("other-kv"), credential, connection_verify=str(bundle))
    with other, pytest.raises(HttpResponseError) as refused:
        other.get_secret("db-password")
    assert refused.value.status_code == 403 and "on key vault 'other-kv;" in str(refused.value)
    assert [r.vault for r in vault.records if r.principal == CLIENT_ID] == [VAULT, "other-kv"]
