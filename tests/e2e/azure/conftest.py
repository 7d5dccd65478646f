"""Fixtures for the Azure test doubles (the e2e marker and control plane come from tests/e2e/conftest.py)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.azure.keyvault import KEY_VAULT_RESOURCE, FakeKeyVault
from tests.e2e.azure.token_endpoint import FakeEntra, TokenIssuer
from tests.helpers import TENANT_ID

VAULT = "kv-e2e"


@pytest.fixture
def entra(tmp_path: Path) -> Iterator[FakeEntra]:
    """A started fake Entra token endpoint with no federated credentials yet."""
    with FakeEntra(tmp_path / "entra") as endpoint:
        yield endpoint
        assert not endpoint.errors, "\n".join(endpoint.errors)
    log = endpoint.log_path.read_text()
    assert "Traceback" not in log, log


@pytest.fixture
def key_vault(tmp_path: Path, entra: FakeEntra) -> Iterator[FakeKeyVault]:
    """A started fake Key Vault with one vault ``kv-e2e`` in TENANT_ID that accepts only tokens ``entra`` issued
    for Key Vault, to clients granted by its access policy (``key_vault.grant``)."""
    kv = FakeKeyVault(
        tmp_path / "keyvault",
        [VAULT],
        tenant_id=TENANT_ID,
        identity_of=functools.partial(entra.identity_of, resource=KEY_VAULT_RESOURCE),
    )
    with kv:
        sys.stderr.write(f"\n[e2e] fake Key Vault {VAULT} at {kv.vault_url(VAULT)} ({kv.start_seconds:.3f}s)\n")
        yield kv
        assert not kv.errors, "\n".join(kv.errors)


@pytest.fixture
def sa_issuer() -> TokenIssuer:
    """A service-account token issuer without Kubernetes (RSA key, JWKS as a dict)."""
    return TokenIssuer()
