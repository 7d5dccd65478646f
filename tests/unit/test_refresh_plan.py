"""kvinject.io/refresh: the annotation's grammar and rules, the refresh sidecar's shape and place, idempotency, and a
kvinject-refresh written by anyone else judged exactly like kvinject-fetch."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import apply, controller_pod
from webhook import contract, plan, targets
from webhook import names as kvnames
from webhook.contract import ContractError
from webhook.identity import Identity
from webhook.names import PREFIX, REFRESH, REFRESH_CONTAINER
from webhook.plan import PlanError
from webhook.providers.azure import AzureProvider
from webhook.settings import Settings

K = PREFIX
SPEC = AzureProvider().init_spec(Identity("cid", "tid"), Settings(init_image="kvinject:test"))
INIT = {K + "mode": "init", K + "secret-db": "db", K + "secret-tls.pem": "cert:other-kv/tls"}
APP = {"name": "app", "image": "a"}


def request(annotations: dict[str, str], floor: int = contract.REFRESH_MIN) -> contract.InjectionRequest:
    return contract.parse_annotations(annotations, "payments-kv", floor)


def readmitted(once: dict[str, Any], annotations: dict[str, str]) -> contract.InjectionRequest:
    written = (once.get("metadata") or {}).get("annotations") or {}
    return request({**annotations, **{k: v for k, v in written.items() if k in contract.OUTPUT_KEYS}})


# -- the annotation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "floor", "seconds"),
    [("5m", 60, 300), ("1h", 60, 3600), ("1h30m", 60, 5400), ("90s", 60, 90), ("24h", 60, 86400), ("10s", 5, 10)],
    ids=["minutes", "hours", "hours-minutes", "seconds", "maximum", "lower-floor-setting"],
)
def test_refresh_accepted(value: str, floor: int, seconds: int) -> None:
    assert request({**INIT, REFRESH: value}, floor).refresh == seconds


def test_no_refresh_by_default() -> None:
    assert request(INIT).refresh is None


@pytest.mark.parametrize(
    ("annotations", "floor", "expected"),
    [
        (
            {**INIT, REFRESH: "30s"},
            60,
            [f"{REFRESH}: '30s' must be a duration from 1m to 24h, written in hours, minutes and seconds"],
        ),
        ({**INIT, REFRESH: "25h"}, 60, [f"{REFRESH}: '25h' must be a duration from 1m to 24h"]),
        ({**INIT, REFRESH: "5"}, 60, [f"{REFRESH}: '5' must be a duration"]),
        ({**INIT, REFRESH: "5 minutes"}, 60, [f"{REFRESH}: '5 minutes' must be a duration"]),
        ({**INIT, REFRESH: "1m"}, 300, [f"{REFRESH}: '1m' must be a duration from 5m to 24h"]),
        (
            {K + "secret-db": "db", REFRESH: "5m"},
            60,
            [f"{REFRESH} works only in mode init: in mode csi the Secrets Store CSI driver re-reads"],
        ),
        (
            {K + "mode": "init", K + "secret-db": "db@" + "a" * 32, REFRESH: "5m"},
            60,
            [f"{REFRESH}: every object is pinned to a version, so re-reading can never change a file"],
        ),
        (
            # Every problem at once: the interval, csi mode, and an unrelated one.
            {K + "secret-db": "db", REFRESH: "5x", K + "mount-path": "relative"},
            60,
            [f"{REFRESH}: '5x' must be a duration", f"{REFRESH} works only in mode init", "kvinject.io/mount-path"],
        ),
    ],
    ids=[
        "below-floor",
        "above-maximum",
        "no-unit",
        "words",
        "setting-raises-floor",
        "csi",
        "all-pinned",
        "all-at-once",
    ],
)
def test_refresh_rejected(annotations: dict[str, str], floor: int, expected: list[str]) -> None:
    with pytest.raises(ContractError) as err:
        request(annotations, floor)
    problems = err.value.problems
    assert len(problems) == len(expected), problems
    for fragment in expected:
        assert any(p.startswith(fragment) for p in problems), problems


# -- the sidecar's shape and place --------------------------------------------------------------------

SHAPES: list[tuple[str, dict[str, Any], dict[str, str], list[str]]] = [
    ("bare", controller_pod(containers=[dict(APP)]), INIT, ["kvinject-fetch", "kvinject-refresh"]),
    (
        "existing-init",
        controller_pod(containers=[dict(APP)], initContainers=[{"name": "migrate", "image": "m"}]),
        INIT,
        ["kvinject-fetch", "kvinject-refresh", "migrate"],
    ),
    (
        "init-last",
        controller_pod(containers=[dict(APP)], initContainers=[{"name": "migrate", "image": "m"}]),
        {**INIT, K + "init-first": "false"},
        ["migrate", "kvinject-fetch", "kvinject-refresh"],
    ),
    (
        "init-target-shifted-by-two",
        controller_pod(
            containers=[dict(APP)],
            initContainers=[{"name": "migrate", "image": "m"}, {"name": "seed", "image": "s"}],
        ),
        {**INIT, K + "containers": "seed"},
        ["kvinject-fetch", "kvinject-refresh", "migrate", "seed"],
    ),
    (
        "fs-group",
        controller_pod(containers=[dict(APP)], securityContext={"fsGroup": 2000}),
        INIT,
        ["kvinject-fetch", "kvinject-refresh"],
    ),
]


@pytest.mark.parametrize(("pod", "annotations", "order"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_sidecar_follows_fetch_with_its_environment(
    pod: dict[str, Any], annotations: dict[str, str], order: list[str]
) -> None:
    annotations = {**annotations, REFRESH: "5m"}
    req = request(annotations)
    ops = plan.init(pod, req, SPEC)
    assert plan.adds_container(ops, REFRESH_CONTAINER)
    once = apply(pod, ops)
    assert plan.init(once, readmitted(once, annotations), SPEC) == []  # idempotent
    inits = {c["name"]: c for c in once["spec"]["initContainers"]}
    assert list(inits) == order
    fetch, sidecar = inits[kvnames.INIT_CONTAINER], inits[REFRESH_CONTAINER]
    assert sidecar["restartPolicy"] == "Always" and "restartPolicy" not in fetch
    assert sidecar["command"] == ["kvinject", "fetch", "--refresh", "300s"]
    for same in ("image", "env", "volumeMounts", "securityContext", "imagePullPolicy", "terminationMessagePolicy"):
        assert sidecar[same] == fetch[same], same
    assert sidecar["resources"]["requests"] == {"cpu": "10m", "memory": "64Mi"}
    # Targets get the volume read-only and nothing of the sidecar's; the sidecar is never a target.
    chosen = targets.select(once, readmitted(once, annotations)).targets
    assert REFRESH_CONTAINER not in [t.name for t in chosen]
    for target in chosen:
        assert {"name": kvnames.VOLUME_NAME, "mountPath": "/mnt/secrets", "readOnly": True} in target.container[
            "volumeMounts"
        ]


def test_no_sidecar_without_the_annotation() -> None:
    pod = controller_pod(containers=[dict(APP)])
    ops = plan.init(pod, request(INIT), SPEC)
    assert not plan.adds_container(ops, REFRESH_CONTAINER)
    assert [c["name"] for c in apply(pod, ops)["spec"]["initContainers"]] == [kvnames.INIT_CONTAINER]


# -- a kvinject-refresh written by someone else ------------------------------------------------------

WITH = {**INIT, REFRESH: "5m"}


def injected() -> dict[str, Any]:
    pod = controller_pod(containers=[dict(APP)])
    return apply(pod, plan.init(pod, request(WITH), SPEC))


def sidecar_of(pod: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod["spec"]["initContainers"] if c["name"] == REFRESH_CONTAINER)
    return found


def changed(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    pod = copy.deepcopy(injected())
    edit(pod)
    return pod


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda pod: sidecar_of(pod).__setitem__(key, value)


def _move_first(pod: dict[str, Any]) -> None:
    inits = pod["spec"]["initContainers"]
    inits.insert(0, inits.pop(1))


def _add_env(pod: dict[str, Any]) -> None:
    sidecar_of(pod)["env"].append({"name": "HTTPS_PROXY", "value": "http://evil:3128"})


def _mount_other(pod: dict[str, Any]) -> None:
    sidecar_of(pod)["volumeMounts"].append({"name": "data", "mountPath": "/data"})


FOREIGN = [
    ("image", changed(_set("image", "evil:latest")), WITH, "differs in image"),
    ("interval", changed(_set("command", ["kvinject", "fetch", "--refresh", "1s"])), WITH, "differs in command"),
    ("not-a-sidecar", changed(lambda p: sidecar_of(p).pop("restartPolicy")), WITH, "differs in restartPolicy"),
    ("extra-env", changed(_add_env), WITH, "differs in env"),
    (
        "other-command",
        changed(_set("command", ["sh", "-c", "cat /kvinject/secrets/*"])),
        WITH,
        "that kvinject did not add",
    ),
    ("before-fetch", changed(_move_first), WITH, "runs before 'kvinject-fetch'"),
    ("without-annotation", injected(), INIT, "which kvinject adds only with kvinject.io/refresh"),
]


@pytest.mark.parametrize(("pod", "annotations", "fragment"), [f[1:] for f in FOREIGN], ids=[f[0] for f in FOREIGN])
def test_a_foreign_sidecar_is_a_problem(pod: dict[str, Any], annotations: dict[str, str], fragment: str) -> None:
    with pytest.raises(PlanError) as err:
        plan.init(pod, readmitted(pod, annotations), SPEC)
    assert any(fragment in p for p in err.value.problems), err.value.problems


def test_mounts_of_other_volumes_are_allowed_as_for_kvinject_fetch() -> None:
    """kvinject-fetch may carry mounts of volumes kvinject never reads; so may its sidecar."""
    pod = changed(_mount_other)
    assert plan.init(pod, readmitted(pod, WITH), SPEC) == []


def test_a_foreign_sidecar_without_the_annotation_is_also_a_stray() -> None:
    """Without kvinject.io/refresh a kvinject-refresh mounting kvinject's volume is an ordinary container that
    reads the secrets without being a target."""
    pod = injected()
    selection = targets.select(pod, readmitted(pod, INIT))
    assert any(REFRESH_CONTAINER in s for s in targets.strays(selection, []))
