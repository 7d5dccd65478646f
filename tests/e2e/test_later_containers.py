"""Target containers on the real apiserver: a second mutating webhook (a sidecar injector, like a service mesh's)
runs beside kvinject, which is registered as shipped (reinvocationPolicy IfNeeded). The sidecar injector's
configuration is named to run before or after kvinject's (the apiserver calls them sorted by name)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from tests.harness import ControlPlane, K, KvinjectServer, create, mutating_configuration, mutating_webhook_in_effect
from tests.harness import pod_manifest as kvinject_pod
from tests.harness.doubles.sidecar import LABEL, MODE, SIDECAR, SidecarWebhook
from webhook.names import INJECTED_CONTAINERS, VOLUME_NAME

FIRST, LAST = "a-sidecar-injector", "z-sidecar-injector"  # "kvinject" sorts between them
MOUNT = {"name": VOLUME_NAME, "mountPath": "/mnt/secrets", "readOnly": True}
CSI = {K + "secret-db": "peer-kv/db", K + "env-DB": "db"}
INIT = {K + "mode": "init", K + "secret-db": "peer-kv/db"}


@pytest.fixture(scope="module")
def injector(kvinject: KvinjectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarWebhook]:
    with SidecarWebhook(tmp_path_factory.mktemp("sidecar-injector")) as webhook:
        yield webhook


def _has_sidecar(pod: dict[str, Any]) -> bool:
    return any(c["name"] == SIDECAR for c in pod["spec"]["containers"])


@contextmanager
def injector_installed(cp: ControlPlane, namespace: str, config_name: str, webhook: SidecarWebhook) -> Iterator[None]:
    """The injector's configuration (pods labelled LABEL=true), in effect until the block ends."""
    config = mutating_configuration(
        config_name, "sidecar.kvinject.test", webhook.url, webhook.ca_bundle, {LABEL: "true"}, timeoutSeconds=10
    )
    probe = kvinject_pod(namespace, {})
    probe["metadata"]["labels"] = {LABEL: "true"}  # the injector's label only: kvinject leaves the probe alone
    with mutating_webhook_in_effect(cp, config, probe, _has_sidecar):
        yield
    assert not webhook.errors, webhook.errors


def pod(namespace: str, annotations: dict[str, str], sidecar_mode: str = "plain") -> dict[str, Any]:
    """A pod opted in to kvinject and to the sidecar injector, with two app containers."""
    doc = kvinject_pod(
        namespace,
        {**annotations, MODE: sidecar_mode},
        containers=[{"name": "app", "image": "app:1"}, {"name": "worker", "image": "worker:1"}],
    )
    doc["metadata"]["labels"][LABEL] = "true"
    return doc


def containers(stored: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in stored["spec"]["containers"]}


def has_mount(container: dict[str, Any]) -> bool:
    return any(m["name"] == VOLUME_NAME for m in container.get("volumeMounts", []))


def env_names(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


@pytest.mark.parametrize("annotations", [CSI, INIT], ids=["csi", "init"])
def test_a_sidecar_added_after_kvinject_gets_nothing(
    control_plane: ControlPlane, namespace: str, injector: SidecarWebhook, annotations: dict[str, str]
) -> None:
    with injector_installed(control_plane, namespace, LAST, injector):
        stored = create(control_plane, pod(namespace, annotations))
    found = containers(stored)
    assert list(found) == ["app", "worker", SIDECAR]  # the injector ran, after kvinject
    assert stored["metadata"]["annotations"][INJECTED_CONTAINERS] == "app,worker"
    assert stored["metadata"]["annotations"][K + "status"] == "injected"
    for name in ("app", "worker"):
        assert MOUNT in found[name]["volumeMounts"], name
    assert not has_mount(found[SIDECAR]) and "DB" not in env_names(found[SIDECAR]), found[SIDECAR]
    if annotations is CSI:
        assert all("DB" in env_names(found[n]) for n in ("app", "worker"))


def test_a_sidecar_present_at_first_injection_is_a_target(
    control_plane: ControlPlane, namespace: str, injector: SidecarWebhook
) -> None:
    with injector_installed(control_plane, namespace, FIRST, injector):
        stored = create(control_plane, pod(namespace, CSI))
    found = containers(stored)
    assert stored["metadata"]["annotations"][INJECTED_CONTAINERS] == f"app,worker,{SIDECAR}"
    assert all(MOUNT in c["volumeMounts"] and "DB" in env_names(c) for c in found.values()), found


@pytest.mark.parametrize("annotations", [CSI, INIT], ids=["csi", "init"])
def test_naming_a_later_sidecar_gives_it_the_secrets(
    control_plane: ControlPlane, namespace: str, injector: SidecarWebhook, annotations: dict[str, str]
) -> None:
    named = {**annotations, K + "containers": f"app,{SIDECAR}"}
    with injector_installed(control_plane, namespace, LAST, injector):
        result = control_plane.kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(pod(namespace, named)))
    stored = json.loads(result.stdout)
    found = containers(stored)
    # At kvinject's first call the sidecar was not there yet: recorded is what it injected then.
    assert stored["metadata"]["annotations"][INJECTED_CONTAINERS] == "app"
    assert MOUNT in found["app"]["volumeMounts"] and MOUNT in found[SIDECAR]["volumeMounts"]
    assert not has_mount(found["worker"])
    if annotations is CSI:
        assert "DB" in env_names(found[SIDECAR]) and "DB" not in env_names(found["worker"])
    # kvinject's first call warned that the named container was not there yet (it came, so nothing was denied).
    assert f"no container named {SIDECAR} in the pod" in result.stderr


DENIED = [
    (
        "copied-mount",
        "copy",
        f"container '{SIDECAR}' mounts kvinject's volume {VOLUME_NAME} and sets kvinject's env DB but is not one"
        " kvinject injects into (its targets: app, worker)",
    ),
    (
        "record-widened",
        "widen",
        f"container '{SIDECAR}' is recorded in {INJECTED_CONTAINERS} as injected but does not mount {VOLUME_NAME}",
    ),
]


@pytest.mark.parametrize(("mode", "message"), [d[1:] for d in DENIED], ids=[d[0] for d in DENIED])
def test_a_later_webhook_cannot_hand_out_kvinjects_secrets(
    control_plane: ControlPlane, namespace: str, injector: SidecarWebhook, mode: str, message: str
) -> None:
    with injector_installed(control_plane, namespace, LAST, injector):
        result = create(control_plane, pod(namespace, CSI, sidecar_mode=mode), check=False)
    assert result.returncode != 0, result.stdout
    assert "the pod was changed after kvinject injected it" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


USER_WRITTEN = [
    (
        "record-without-status",
        {INJECTED_CONTAINERS: f"app,worker,{SIDECAR}"},
        f"{INJECTED_CONTAINERS} is kvinject's record of the containers it injected, written by kvinject itself:"
        " remove it",
    ),
    (
        "record-and-status-naming-the-sidecar-to-come",
        {INJECTED_CONTAINERS: f"app,worker,{SIDECAR}", K + "status": "injected"},
        f"{INJECTED_CONTAINERS} records {SIDECAR} as injected, but the pod has no container of that name",
    ),
]


@pytest.mark.parametrize(("written", "message"), [u[1:] for u in USER_WRITTEN], ids=[u[0] for u in USER_WRITTEN])
def test_a_record_written_by_the_pods_author_is_refused(
    control_plane: ControlPlane, namespace: str, injector: SidecarWebhook, written: dict[str, str], message: str
) -> None:
    """The author of a fresh pod writes kvinject's record to widen it to the sidecar that will come: refused at
    kvinject's first call, before the sidecar exists (naming it in kvinject.io/containers is the way)."""
    with injector_installed(control_plane, namespace, LAST, injector):
        result = create(control_plane, pod(namespace, {**CSI, **written}), check=False)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
