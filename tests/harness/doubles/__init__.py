"""HTTPS test doubles of Azure: Key Vault (keyvault.py) and the Entra token endpoint (entra.py), on the shared
server and lifecycle of https.py."""

from tests.harness.doubles.entra import (
    TOKEN_EXCHANGE_AUDIENCE,
    FakeEntra,
    FederatedCredential,
    JwksSource,
    TokenIssuer,
)
from tests.harness.doubles.https import Double, HttpsServer, Request, Response
from tests.harness.doubles.keyvault import KEY_VAULT_RESOURCE, FakeKeyVault, StaticTokenCredential, secret_client, seed

__all__ = [
    "KEY_VAULT_RESOURCE",
    "TOKEN_EXCHANGE_AUDIENCE",
    "Double",
    "FakeEntra",
    "FakeKeyVault",
    "FederatedCredential",
    "HttpsServer",
    "JwksSource",
    "Request",
    "Response",
    "StaticTokenCredential",
    "TokenIssuer",
    "secret_client",
    "seed",
]
