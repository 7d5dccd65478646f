"""Fixtures of the node scenarios: the test's own Azure cloud, and kvinject configured for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import ControlPlane, KvinjectServer, serving_in_place_of
from tests.harness.cloud import AzureCloud

VAULTS = ("payments-kv", "team-kv", "billing-kv")


@pytest.fixture(scope="session")
def azure_cloud(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureCloud]:
    """Entra ID and Key Vault doubles reached by name (see tests/harness/cloud.py)."""
    with AzureCloud(tmp_path_factory.mktemp("cloud"), control_plane, VAULTS) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def cloud_kvinject(
    control_plane: ControlPlane,
    kvinject: KvinjectServer,
    azure_cloud: AzureCloud,
    node: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KvinjectServer]:
    """kvinject serving for the cloud (its environment file, the init image: the kvinject-fetch image built from
    our Dockerfile, the CA ConfigMap), registered in place of the session's kvinject for the module, which gets it
    back afterwards."""
    node.set_hosts(azure_cloud.hosts)
    node.set_provider_env({"SSL_CERT_FILE": str(azure_cloud.ca_bundle)})
    env = {**azure_cloud.kvinject_env(node.images["fetch"]), "KVINJECT_LOG_LEVEL": "DEBUG"}
    with serving_in_place_of(control_plane, kvinject, tmp_path_factory.mktemp("kvinject-cloud"), env) as server:
        yield server
