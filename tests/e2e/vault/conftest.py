"""A real Vault for the Vault store's tests: one per session, KV v2 at secret/ and Kubernetes auth at kubernetes/
configured against the session's control plane. Skipped locally without the built binary (tests/e2e/build_vault.sh),
failed under CI (CI=true)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.vault.site import Site
from tests.harness import ControlPlane, KvinjectServer, VaultMissing, VaultServer, require_vault, unavailable


@pytest.fixture(scope="session")
def vault(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    try:
        binary = require_vault()
    except VaultMissing as exc:
        unavailable(str(exc))
    with VaultServer(tmp_path_factory.mktemp("vault"), binary=binary) as server:
        sys.stderr.write(
            f"\n[e2e] Vault started, initialised and unsealed in {server.start_seconds:.2f}s at {server.url} "
            f"(RSS {server.rss_bytes() / 2**20:.0f} MiB); log {server.log_path}\n"
        )
        server.enable_kv()
        server.enable_kubernetes_auth(control_plane)
        yield server
        server.check_alive()


@pytest.fixture
def site(
    control_plane: ControlPlane, kvinject: KvinjectServer, vault: VaultServer, namespace: str, tmp_path: Path
) -> Iterator[Site]:
    """The namespace's Vault role, its mirror policy and kvinject serving with Vault settings (site.py)."""
    site = Site(control_plane, kvinject, vault, namespace, tmp_path)
    site.seed()
    site.start()
    try:
        yield site
    finally:
        site.stop()
