"""kvinject.io/refresh over ASGI: /mutate adds the refresh sidecar where native sidecars can run (and says why not
elsewhere), counts it, and /validate judges a kvinject-refresh exactly as it judges kvinject-fetch."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.api.test_validate import JSON, injected, post
from tests.harness import RELAXABLE, admission_review, controller_pod, golden_cluster
from webhook.app import create_app
from webhook.cluster import FileCluster
from webhook.names import INIT_CONTAINER, PREFIX, REFRESH, REFRESH_CONTAINER
from webhook.settings import Settings

K = PREFIX
INIT = {K + "mode": "init", K + "secret-db-password": "db-password"}
REFRESHED = {**INIT, REFRESH: "5m"}
TAMPERED = "the pod was changed after kvinject injected it"


class VersionedCluster(FileCluster):
    """The golden cluster, whose API server reports `version` (a FileCluster cannot tell)."""

    def __init__(self, version: tuple[int, int]) -> None:
        super().__init__([])
        self.stores = golden_cluster().stores
        self.version = version
        self.asked = 0

    async def server_version(self) -> tuple[int, int] | None:
        self.asked += 1
        return self.version


def inits(pod: dict[str, Any]) -> list[str]:
    return [c["name"] for c in pod["spec"].get("initContainers", [])]


GATE: list[tuple[str, Settings, tuple[int, int] | None, str | None]] = [
    ("auto-1.35", Settings(relaxable_namespaces=RELAXABLE), (1, 35), None),
    ("auto-1.29", Settings(relaxable_namespaces=RELAXABLE), (1, 29), None),
    (
        "auto-1.28",
        Settings(relaxable_namespaces=RELAXABLE),
        (1, 28),
        "kvinject.io/refresh adds a native sidecar (an init container with restartPolicy: Always), which needs"
        " Kubernetes 1.29 or later, but the API server is 1.28",
    ),
    ("on-1.28", Settings(relaxable_namespaces=RELAXABLE, refresh_sidecars="on"), (1, 28), None),
    (
        "off-1.35",
        Settings(relaxable_namespaces=RELAXABLE, refresh_sidecars="off"),
        (1, 35),
        "kvinject.io/refresh is turned off on this cluster (kvinject's setting refresh_sidecars: off)",
    ),
    ("file-source", Settings(relaxable_namespaces=RELAXABLE), None, None),
]


@pytest.mark.parametrize(("settings", "version", "message"), [g[1:] for g in GATE], ids=[g[0] for g in GATE])
async def test_mutate_adds_the_sidecar_where_native_sidecars_run(
    settings: Settings, version: tuple[int, int] | None, message: str | None
) -> None:
    cluster = golden_cluster() if version is None else VersionedCluster(version)
    answer = await post("/mutate", admission_review(controller_pod(annotations=dict(REFRESHED))), cluster, settings)
    if message is None:
        assert answer["allowed"] is True, answer
        ops = orjson.loads(base64.b64decode(answer["patch"]))
        added = [c for op in ops for c in (op["value"] if isinstance(op["value"], list) else [op["value"]])]
        assert REFRESH_CONTAINER in [c.get("name") for c in added if isinstance(c, dict)]
    else:
        assert answer["allowed"] is False
        assert answer["status"]["code"] == 400
        assert message in answer["status"]["message"], answer["status"]["message"]


async def test_pods_without_refresh_never_ask_the_version() -> None:
    cluster = VersionedCluster((1, 28))
    answer = await post("/mutate", admission_review(controller_pod(annotations=dict(INIT))), cluster)
    assert answer["allowed"] is True and cluster.asked == 0


async def test_injected_sidecars_are_counted_dry_runs_not() -> None:
    app = create_app(Settings(relaxable_namespaces=RELAXABLE), golden_cluster())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://k") as client:
        for dry_run, annotations in ((False, REFRESHED), (True, REFRESHED), (False, INIT), (False, REFRESHED)):
            doc = admission_review(controller_pod(annotations=dict(annotations)), dry_run=dry_run)
            resp = await client.post("/mutate", content=orjson.dumps(doc), headers=JSON)
            assert resp.json()["response"]["allowed"] is True
        text = (await client.get("/metrics")).text
    assert "kvinject_refresh_sidecars_injected_total 2.0" in text


Change = Callable[[dict[str, Any]], None]


def edit_sidecar(key: str, value: Any) -> Change:
    def run(pod: dict[str, Any]) -> None:
        sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == REFRESH_CONTAINER)
        if value is None:
            sidecar.pop(key)
        else:
            sidecar[key] = value

    return run


def drop_sidecar(pod: dict[str, Any]) -> None:
    pod["spec"]["initContainers"] = [c for c in pod["spec"]["initContainers"] if c["name"] != REFRESH_CONTAINER]


def drop_annotation(pod: dict[str, Any]) -> None:
    del pod["metadata"]["annotations"][REFRESH]


def copy_fetch_as_sidecar(pod: dict[str, Any]) -> None:
    """A later webhook (or the author) adds its own kvinject-refresh to a pod that did not ask for one."""
    fetch = next(c for c in pod["spec"]["initContainers"] if c["name"] == INIT_CONTAINER)
    pod["spec"]["initContainers"].append({**copy.deepcopy(fetch), "name": REFRESH_CONTAINER, "restartPolicy": "Always"})


VALIDATE: list[tuple[str, dict[str, str], Change, str | None]] = [
    ("untouched", REFRESHED, lambda p: None, None),
    ("image-swapped", REFRESHED, edit_sidecar("image", "evil:1"), "that is not the one kvinject injects (differs in"),
    ("interval-shortened", REFRESHED, edit_sidecar("command", ["kvinject", "fetch", "--refresh", "1s"]), "command"),
    ("made-a-plain-init-container", REFRESHED, edit_sidecar("restartPolicy", None), "restartPolicy"),
    ("sidecar-removed", REFRESHED, drop_sidecar, f"{TAMPERED} (its ServiceAccount is now api): missing"),
    ("annotation-removed", REFRESHED, drop_annotation, "which kvinject adds only with kvinject.io/refresh"),
    ("sidecar-added-later", INIT, copy_fetch_as_sidecar, "which kvinject adds only with kvinject.io/refresh"),
]


@pytest.mark.parametrize(("annotations", "change", "message"), [v[1:] for v in VALIDATE], ids=[v[0] for v in VALIDATE])
async def test_validate_judges_the_sidecar_as_the_init_container(
    annotations: dict[str, str], change: Change, message: str | None
) -> None:
    cluster = golden_cluster()
    final = await injected(controller_pod(annotations=dict(annotations)), cluster=cluster)
    change(final)
    answer = await post("/validate", admission_review(final), cluster)
    if message is None:
        assert answer["allowed"] is True, answer
        assert inits(final) == [INIT_CONTAINER, REFRESH_CONTAINER]
    else:
        assert answer["allowed"] is False, answer
        assert message in answer["status"]["message"], answer["status"]["message"]


async def test_a_hand_written_sidecar_on_a_pod_kvinject_never_injected() -> None:
    """kvinject's sidecar name on a pod without kvinject's status is judged like kvinject-fetch there."""
    pod = controller_pod(annotations={}, labels={"app": "x"})
    pod["spec"]["initContainers"] = [{"name": REFRESH_CONTAINER, "image": "x", "restartPolicy": "Always"}]
    answer = await post("/validate", admission_review(pod))
    assert answer["allowed"] is False
    assert (
        f"the pod carries kvinject's init container {REFRESH_CONTAINER} but kvinject did not inject it"
        in (answer["status"]["message"])
    )
