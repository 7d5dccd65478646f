"""Helm with private homes for the chart tests; without the cached helm/kubectl: skipped locally, failed under CI."""

from __future__ import annotations

import pytest

from tests.harness import BinariesMissing, unavailable
from tests.harness.helm import Helm, kubectl_binary


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        kubectl_binary()
        return Helm.create(tmp_path_factory.mktemp("helm"))
    except BinariesMissing as exc:
        unavailable(str(exc))
