"""What may change on a pod after kvinject admitted it, and what a class kvinject's pods read through is: the pure
functions behind the red team's findings (webhook.targets `ephemeral_problems`, `record_changes`; webhook.rollout
`classes_used`, `reserved_syncs`). The same bypasses through the real apiserver: tests/bypasses/test_redteam_*."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_targets import INIT, container, pod_with, request_of
from webhook import rollout, targets
from webhook.names import (
    CONTAINERS,
    CSI_DRIVER,
    INIT_CONTAINER,
    INJECT_LABEL,
    INJECTED_CONTAINERS,
    MANAGED_BY,
    PROVIDER_CLASS,
    STATUS,
    TOKEN_VOLUME,
    VOLUME_NAME,
)

GENERATED = "kvinject-0123456789abcdef"


def csi(name: str, spc: str) -> dict[str, Any]:
    return {"name": name, "csi": {"driver": CSI_DRIVER, "volumeAttributes": {"secretProviderClass": spc}}}


SPEC: dict[str, Any] = {
    "containers": [{"name": "app", "image": "app:1"}],
    "volumes": [
        csi(VOLUME_NAME, GENERATED),
        {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
        {"name": "synced", "secret": {"secretName": GENERATED}},
        {"name": "synced-projected", "projected": {"sources": [{"secret": {"name": GENERATED}}]}},
        csi("hand-written-generated", GENERATED),
        {"name": "config", "configMap": {"name": "cfg"}},
        {"name": "own-secret", "secret": {"secretName": "app-tls"}},
        csi("own-class", "team-spc"),
    ],
}


def debug(**fields: Any) -> dict[str, Any]:
    return {"name": "dbg", "image": "busybox:1", **fields}


def mount(*names: str) -> dict[str, Any]:
    return {"volumeMounts": [{"name": n, "mountPath": f"/{n}"} for n in names]}


EPHEMERAL = [
    ("kvinjects-volume", debug(**mount(VOLUME_NAME)), [f"mounts kvinject's volume {VOLUME_NAME}"]),
    ("token-volume", debug(**mount(TOKEN_VOLUME)), [f"mounts kvinject's token volume {TOKEN_VOLUME}"]),
    ("secret-volume", debug(**mount("synced")), ["mounts a volume of a kvinject-* Secret synced"]),
    ("projected-volume", debug(**mount("synced-projected")), ["a volume of a kvinject-* Secret synced-projected"]),
    ("csi-volume", debug(**mount("hand-written-generated")), ["kvinject-* SecretProviderClass hand-written"]),
    (
        "env",
        debug(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": GENERATED, "key": "k"}}}]),
        [f"reads kvinject's Secret {GENERATED} into X"],
    ),
    (
        "envFrom",
        debug(envFrom=[{"secretRef": {"name": GENERATED}}]),
        [f"reads kvinject's Secret {GENERATED} (envFrom)"],
    ),
    (
        "every-problem-in-one",
        debug(**mount(VOLUME_NAME, TOKEN_VOLUME), envFrom=[{"secretRef": {"name": GENERATED}}]),
        [VOLUME_NAME, TOKEN_VOLUME, "(envFrom)"],
    ),
    ("config-map", debug(**mount("config")), []),
    ("own-secret", debug(**mount("own-secret"), envFrom=[{"secretRef": {"name": "app-tls"}}]), []),
    ("own-class", debug(**mount("own-class")), []),  # a hand-written class: judged by policy (validation.py)
    ("nothing", debug(), []),
    ("malformed-mounts", debug(volumeMounts=["x", None], env=[None], envFrom=[{"secretRef": "x"}]), []),
]


@pytest.mark.parametrize(("container", "says"), [c[1:] for c in EPHEMERAL], ids=[c[0] for c in EPHEMERAL])
def test_an_ephemeral_container_takes_nothing_of_kvinjects(container: dict[str, Any], says: list[str]) -> None:
    found = targets.ephemeral_problems(SPEC, [container])
    if not says:
        assert found == []
        return
    (problem,) = found  # one line per container, every problem in it
    assert problem.startswith("ephemeral container 'dbg' ")
    assert all(s in problem for s in says), problem


def test_every_ephemeral_container_is_named() -> None:
    added = [{**debug(**mount(VOLUME_NAME)), "name": n} for n in ("a", "b")]
    assert [p.split("'")[1] for p in targets.ephemeral_problems(SPEC, added)] == ["a", "b"]


def meta(annotations: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations, "labels": {INJECT_LABEL: "true"} if labels is None else labels}}


INJECTED = {STATUS: "injected", INJECTED_CONTAINERS: "app", CONTAINERS: "app", "kvinject.io/secret-db": "db"}
RECORD = [
    ("record-widened", meta(INJECTED), meta({**INJECTED, INJECTED_CONTAINERS: "app,dbg"}), [
        f"annotation {INJECTED_CONTAINERS} changed"]),
    ("named-added", meta({k: v for k, v in INJECTED.items() if k != CONTAINERS}), meta(INJECTED), [
        f"annotation {CONTAINERS} added"]),
    ("named-changed", meta(INJECTED), meta({**INJECTED, CONTAINERS: "app,dbg"}), [f"annotation {CONTAINERS} changed"]),
    ("record-removed", meta(INJECTED), meta({k: v for k, v in INJECTED.items() if k != INJECTED_CONTAINERS}), [
        f"annotation {INJECTED_CONTAINERS} removed"]),
    ("status-removed", meta(INJECTED), meta({k: v for k, v in INJECTED.items() if k != STATUS}), [
        f"annotation {STATUS} removed"]),
    ("contract-added", meta(INJECTED), meta({**INJECTED, "kvinject.io/secret-other": "x"}), [
        "annotation kvinject.io/secret-other added"]),
    ("label-removed", meta(INJECTED), meta(INJECTED, {}), [f"label {INJECT_LABEL} removed"]),
    ("label-changed", meta(INJECTED), meta(INJECTED, {INJECT_LABEL: "false"}), [f"label {INJECT_LABEL} changed"]),
    ("all-at-once", meta(INJECTED), meta({**INJECTED, INJECTED_CONTAINERS: "x", CONTAINERS: "x"}, {}), [
        f"annotation {CONTAINERS} changed", f"annotation {INJECTED_CONTAINERS} changed",
        f"label {INJECT_LABEL} removed"]),
    ("other-annotations", meta(INJECTED), meta({**INJECTED, "team/owner": "alice"}, {INJECT_LABEL: "true", "a": "b"}),
     []),
    ("unchanged", meta(INJECTED), meta(INJECTED), []),
    ("not-injected", meta({CONTAINERS: "app"}), meta({CONTAINERS: "app,dbg"}), []),
    ("malformed-old", {"metadata": None}, meta(INJECTED), []),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "changes"), [c[1:] for c in RECORD], ids=[c[0] for c in RECORD])
def test_kvinjects_record_is_fixed_after_admission(
    old: dict[str, Any], new: dict[str, Any], changes: list[str]
) -> None:
    assert targets.record_changes(old, new) == changes


def pod(labels: dict[str, str], annotations: dict[str, str], *volumes: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1"}], "volumes": list(volumes)},
    }


OPTED = {INJECT_LABEL: "true"}
USED = [
    ("provider-class-injected", pod(OPTED, {PROVIDER_CLASS: "team-spc"}, csi(VOLUME_NAME, "team-spc")), {"team-spc"}),
    ("provider-class-annotation-only", pod(OPTED, {PROVIDER_CLASS: "team-spc"}), {"team-spc"}),
    ("hand-written-volume-opted-in", pod(OPTED, {}, csi("own", "mine")), {"mine"}),
    ("any-label-value", pod({INJECT_LABEL: "false"}, {}, csi("own", "mine")), {"mine"}),
    ("label-gone-volume-stays", pod({}, {}, csi(VOLUME_NAME, "team-spc")), {"team-spc"}),
    ("several", pod(OPTED, {PROVIDER_CLASS: "a"}, csi(VOLUME_NAME, "a"), csi("own", "b")), {"a", "b"}),
    ("not-kvinjects", pod({}, {PROVIDER_CLASS: "team-spc"}, csi("own", "mine")), set()),
    ("another-driver", pod(OPTED, {}, {"name": "x", "csi": {"driver": "other", "volumeAttributes": {
        "secretProviderClass": "mine"}}}), set()),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "used"), [c[1:] for c in USED], ids=[c[0] for c in USED])
def test_classes_kvinjects_pods_read_through(doc: dict[str, Any], used: set[str]) -> None:
    assert rollout.classes_used(doc) == used


def spc(name: str, *secret_names: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    objects = [{"secretName": s, "type": "Opaque", "data": [{"objectName": "o", "key": "k"}]} for s in secret_names]
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"provider": "azure", "secretObjects": objects}}


SYNCS = [
    ("hand-written-into-reserved", spc("mine", GENERATED), [GENERATED]),
    ("every-reserved-name", spc("mine", "ok", GENERATED, "kvinject-x"), [GENERATED, "kvinject-x"]),
    ("hand-written-own-name", spc("mine", "mine-config"), []),
    ("prefix-inside-is-fine", spc("mine", "my-kvinject-config"), []),
    ("generated-class", spc(GENERATED, GENERATED), []),  # only kvinject's ServiceAccount writes it (VAP)
    ("managed-by-label", spc("mine", GENERATED, labels=dict(MANAGED_BY)), []),  # reserved too (VAP)
    ("no-secret-objects", {"metadata": {"name": "mine"}, "spec": {"provider": "azure"}}, []),
    ("malformed", {"metadata": {"name": "mine"}, "spec": {"secretObjects": [None, {"secretName": None}]}}, []),
]


@pytest.mark.parametrize(("doc", "reserved"), [c[1:] for c in SYNCS], ids=[c[0] for c in SYNCS])
def test_kvinjects_secret_names_are_reserved(doc: dict[str, Any], reserved: list[str]) -> None:
    assert rollout.reserved_syncs(doc) == reserved


TOKEN = {"name": TOKEN_VOLUME, "mountPath": "/t"}
TOKEN_MOUNTS = [
    ("target", pod_with(INIT, [container("app", volumeMounts=[TOKEN])]), ["'app'"]),
    ("other-container", pod_with({**INIT, CONTAINERS: "app"}, [
        container("app"), container("side", volumeMounts=[TOKEN])]), ["'side'"]),
    ("init-container", pod_with(INIT, [container("app")], [container("setup", volumeMounts=[TOKEN])]), ["'setup'"]),
    ("every-one", pod_with(INIT, [container("app", volumeMounts=[TOKEN]), container("b", volumeMounts=[TOKEN])]),
     ["'app'", "'b'"]),
    ("kvinject-fetch-itself", pod_with(INIT, [container("app")], [
        container(INIT_CONTAINER, volumeMounts=[TOKEN])]), []),
    ("no-token", pod_with(INIT, [container("app")]), []),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "named"), [c[1:] for c in TOKEN_MOUNTS], ids=[c[0] for c in TOKEN_MOUNTS])
def test_only_kvinject_fetch_mounts_the_token_volume(doc: dict[str, Any], named: list[str]) -> None:
    found = [f for f in targets.strays(targets.select(doc, request_of(doc)), []) if TOKEN_VOLUME in f]
    assert [f.split(" ")[1] for f in found] == named, found
    assert all(
        f.endswith(f"mounts kvinject's token volume {TOKEN_VOLUME}: only {INIT_CONTAINER} reads it") for f in found
    )
