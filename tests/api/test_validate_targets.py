"""/validate over ASGI on the final pod, after another mutating webhook added containers: a later container without
kvinject's parts is fine, one carrying them without being a target is denied, and so is a changed record."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.test_validate import injected, post
from tests.harness import admission_review, controller_pod, golden_cluster
from webhook.names import CONTAINERS, INJECTED_CONTAINERS, PREFIX, VOLUME_NAME

K = PREFIX
CSI_ENV = {K + "secret-db-password": "db-password", K + "env-DB_PASSWORD": "db-password"}
INIT = {K + "mode": "init", K + "secret-db-password": "db-password"}
TAMPERED = "the pod was changed after kvinject injected it"

Change = Callable[[dict[str, Any]], dict[str, Any]]


def changed(*steps: Change) -> Change:
    def run(pod: dict[str, Any]) -> dict[str, Any]:
        pod = copy.deepcopy(pod)
        for step in steps:
            step(pod)
        return pod

    return run


def sidecar(copy_mount: bool = False, copy_env: bool = False, init: bool = False) -> Change:
    """Another webhook appends `mesh` (an init container when `init`, as a native sidecar), with copies of the first
    container's kvinject mount or env."""

    def add(pod: dict[str, Any]) -> dict[str, Any]:
        app = pod["spec"]["containers"][0]
        mesh: dict[str, Any] = {"name": "mesh", "image": "mesh:1"}
        if copy_mount:
            mesh["volumeMounts"] = [m for m in app["volumeMounts"] if m["name"] == VOLUME_NAME]
        if copy_env:
            mesh["env"] = list(app["env"])
        if init:
            mesh["restartPolicy"] = "Always"
        pod["spec"].setdefault("initContainers" if init else "containers", []).append(mesh)
        return pod

    return add


def record(value: str | None) -> Change:
    def write(pod: dict[str, Any]) -> dict[str, Any]:
        if value is None:
            del pod["metadata"]["annotations"][INJECTED_CONTAINERS]
        else:
            pod["metadata"]["annotations"][INJECTED_CONTAINERS] = value
        return pod

    return write


def named(value: str) -> Change:
    def write(pod: dict[str, Any]) -> dict[str, Any]:
        pod["metadata"]["annotations"][CONTAINERS] = value
        return pod

    return write


def mount_into_mesh(pod: dict[str, Any]) -> dict[str, Any]:
    """What kvinject's reinvocation adds for a named `mesh` (the same mount and env as the app's)."""
    app, mesh = pod["spec"]["containers"][0], pod["spec"]["containers"][-1]
    mesh["volumeMounts"] = [m for m in app["volumeMounts"] if m["name"] == VOLUME_NAME]
    mesh["env"] = [e for e in app.get("env", []) if e["name"] == "DB_PASSWORD"]
    return pod


CASES: list[tuple[str, dict[str, str], Change, str | None]] = [
    ("untouched", CSI_ENV, changed(), None),
    ("later-sidecar-without-kvinjects-parts", CSI_ENV, changed(sidecar()), None),
    ("later-native-sidecar-without-kvinjects-parts", CSI_ENV, changed(sidecar(init=True)), None),
    (
        "later-sidecar-with-a-copy-of-the-mount",
        CSI_ENV,
        changed(sidecar(copy_mount=True)),
        "container 'mesh' mounts kvinject's volume kvinject-secrets but is not one kvinject injects into (its"
        " targets: app)",
    ),
    (
        "later-sidecar-with-a-copy-of-the-env",
        CSI_ENV,
        changed(sidecar(copy_env=True)),
        "container 'mesh' sets kvinject's env DB_PASSWORD but is not one kvinject injects into",
    ),
    (
        "later-native-sidecar-with-a-copy-of-the-mount",
        CSI_ENV,
        changed(sidecar(copy_mount=True, init=True)),
        "container 'mesh' mounts kvinject's volume kvinject-secrets but is not one",
    ),
    (
        "record-widened-to-the-sidecar-with-its-mount-missing",
        CSI_ENV,
        changed(sidecar(), record("app,mesh")),
        f"container 'mesh' is recorded in {INJECTED_CONTAINERS} as injected but does not mount kvinject-secrets",
    ),
    (
        "record-narrowed",
        CSI_ENV,
        changed(record("")),
        "container 'app' mounts kvinject's volume kvinject-secrets and sets kvinject's env DB_PASSWORD but is not"
        " one kvinject injects into (its targets: none)",
    ),
    (
        "record-garbled",
        CSI_ENV,
        changed(record("app;mesh")),
        f"its kvinject annotations no longer parse: {INJECTED_CONTAINERS}: 'app;mesh' is not a list",
    ),
    # Injected before kvinject kept a record (an upgrade under way): judged as before, by kvinject's own mounts.
    ("legacy-without-record", CSI_ENV, changed(record(None)), None),
    ("legacy-without-record-and-later-sidecar", CSI_ENV, changed(record(None), sidecar()), None),
    (
        "legacy-without-record-and-later-sidecar-with-the-env",
        CSI_ENV,
        changed(record(None), sidecar(copy_env=True)),
        "container 'mesh' sets kvinject's env DB_PASSWORD but is not one kvinject injects into",
    ),
    ("init-mode-later-sidecar", INIT, changed(sidecar()), None),
    (
        "init-mode-later-sidecar-with-the-mount",
        INIT,
        changed(sidecar(copy_mount=True)),
        "container 'mesh' mounts kvinject's volume kvinject-secrets but is not one kvinject injects into",
    ),
]


@pytest.mark.parametrize(("annotations", "change", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_final_pod_after_another_webhook(
    annotations: dict[str, str], change: Change, message: str | None
) -> None:
    cluster = golden_cluster()
    final = change(await injected(controller_pod(annotations=dict(annotations)), cluster=cluster))
    answer = await post("/validate", admission_review(final), cluster)
    if message is None:
        assert answer["allowed"] is True, answer
        assert answer["auditAnnotations"]["decision"] == "allowed"
    else:
        assert answer["allowed"] is False, answer
        assert TAMPERED in answer["status"]["message"] and message in answer["status"]["message"], answer


async def test_a_named_later_sidecar_with_kvinjects_parts_is_allowed() -> None:
    cluster = golden_cluster()
    once = await injected(controller_pod(annotations={**CSI_ENV, CONTAINERS: "app,mesh"}), cluster=cluster)
    final = changed(sidecar(), mount_into_mesh)(once)
    answer = await post("/validate", admission_review(final), cluster)
    assert answer["allowed"] is True, answer
    without = changed(sidecar())(once)  # kvinject was not called again: the named sidecar lacks its parts
    answer = await post("/validate", admission_review(without), cluster)
    assert answer["allowed"] is False and "missing /spec/containers/1/volumeMounts" in answer["status"]["message"]


async def test_a_named_container_absent_from_the_final_pod_is_denied() -> None:
    """At mutation a named container may still come from a later webhook; in the final pod it never will."""
    cluster = golden_cluster()
    pod = controller_pod(annotations={**CSI_ENV, CONTAINERS: "app,mesh"})
    mutated = await post("/mutate", admission_review(pod), cluster)
    assert mutated["allowed"] is True
    assert any("no container named mesh in the pod" in w for w in mutated["warnings"]), mutated
    final = await injected(pod, cluster=cluster)
    answer = await post("/validate", admission_review(final), cluster)
    assert answer["allowed"] is False and answer["status"]["code"] == 400
    assert f"{CONTAINERS}: no container named mesh in the pod (containers: app)" in answer["status"]["message"]


async def test_named_later_sidecar_without_mutation_is_denied_even_in_audit_mode() -> None:
    """Annotation mistakes are denied whatever the namespace's enforcement (as at mutation)."""
    cluster = golden_cluster()
    final = await injected(controller_pod(annotations={**CSI_ENV, CONTAINERS: "app,ghost"}), "observed", cluster)
    answer = await post("/validate", admission_review(final, namespace="observed"), cluster)
    assert answer["allowed"] is False and "no container named ghost" in answer["status"]["message"]
