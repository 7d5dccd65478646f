"""kvinject.io/refresh through the real apiserver (v1.35) and the session's kvinject, registered as shipped: /mutate
adds the native sidecar after kvinject-fetch (kvinject read /version itself) and the apiserver keeps it as one; the
annotation in mode csi is denied at create; /validate (routed by the shipped matchConditions) judges a kvinject-refresh
that kvinject did not add, on a pod it never injected, as it judges a stray kvinject-fetch."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import ControlPlane, K, create, pod_manifest
from webhook.names import INIT_CONTAINER, REFRESH, REFRESH_CONTAINER

pytestmark = pytest.mark.e2e

INIT = {K + "mode": "init", K + "secret-db": "peer-kv/db"}


def init_containers(stored: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in stored["spec"].get("initContainers", [])}


@pytest.mark.parametrize(
    ("spec", "order"),
    [
        ({}, [INIT_CONTAINER, REFRESH_CONTAINER]),
        ({"initContainers": [{"name": "migrate", "image": "m:1"}]}, [INIT_CONTAINER, REFRESH_CONTAINER, "migrate"]),
        ({"restartPolicy": "Never"}, [INIT_CONTAINER, REFRESH_CONTAINER]),  # native sidecars run in any pod
    ],
    ids=["bare", "with-init-container", "restart-never"],
)
def test_the_sidecar_is_created_after_kvinject_fetch(
    control_plane: ControlPlane, namespace: str, spec: dict[str, Any], order: list[str]
) -> None:
    stored = create(control_plane, pod_manifest(namespace, {**INIT, REFRESH: "15m"}, **spec))
    found = init_containers(stored)
    assert list(found) == order
    sidecar, fetch = found[REFRESH_CONTAINER], found[INIT_CONTAINER]
    assert sidecar["restartPolicy"] == "Always" and "restartPolicy" not in fetch  # the apiserver kept it
    assert sidecar["command"] == ["kvinject", "fetch", "--refresh", "900s"]
    assert sidecar["env"] == fetch["env"] and sidecar["image"] == fetch["image"]
    assert stored["metadata"]["annotations"][K + "status"] == "injected"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({K + "secret-db": "peer-kv/db", REFRESH: "5m"}, f"{REFRESH} works only in mode init"),
        ({**INIT, REFRESH: "10s"}, f"{REFRESH}: '10s' must be a duration from 1m to 24h"),
    ],
    ids=["csi-mode", "below-the-floor"],
)
def test_refresh_is_denied_where_it_cannot_apply(
    control_plane: ControlPlane, namespace: str, annotations: dict[str, str], message: str
) -> None:
    result = create(control_plane, pod_manifest(namespace, annotations), check=False)
    assert result.returncode != 0
    assert 'admission webhook "mutate.kvinject.io" denied the request' in result.stderr
    assert message in result.stderr


def test_a_refresh_sidecar_kvinject_did_not_add_is_denied(control_plane: ControlPlane, namespace: str) -> None:
    """No opt-in label, so kvinject's mutating webhook never sees it; the validating one still must."""
    doc = pod_manifest(namespace, {})
    doc["metadata"]["labels"] = {"app": "x"}
    doc["spec"]["initContainers"] = [
        {"name": REFRESH_CONTAINER, "image": "x:1", "restartPolicy": "Always", "command": ["kvinject", "fetch"]}
    ]
    result = create(control_plane, doc, check=False)
    assert result.returncode != 0
    assert 'admission webhook "validate.kvinject.io" denied the request' in result.stderr
    assert f"the pod carries kvinject's init container {REFRESH_CONTAINER} but kvinject did not inject it" in (
        result.stderr
    )
