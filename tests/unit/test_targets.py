"""Target containers: the record of the first injection, what it makes the default afterwards, and what a container
that is not a target may not carry. Pure functions (webhook.targets, the record's parsing, the plan over both)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.harness import apply, controller_pod
from webhook import contract, plan, targets
from webhook.identity import Identity
from webhook.names import CONTAINERS, INIT_CONTAINER, INJECTED_CONTAINERS, PREFIX, STATUS, VOLUME_NAME
from webhook.plan import EnvSource, PlanError
from webhook.providers.azure import AzureProvider
from webhook.settings import Settings

K = PREFIX
SPC = "kvinject-0123456789abcdef"
ENV = [EnvSource("DB", SPC, "db")]
CSI = {K + "secret-db": "db"}
INIT = {K + "mode": "init", K + "secret-db": "db"}
MOUNT = {"name": VOLUME_NAME, "mountPath": "/mnt/secrets", "readOnly": True}
INJECTED = {STATUS: "injected"}
SPEC = AzureProvider().init_spec(Identity("cid", "tid"), Settings(init_image="kvinject:test"))


def container(name: str, mounted: bool = False, **fields: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": f"{name}:1", **fields}
    if mounted:
        c["volumeMounts"] = [dict(MOUNT)]
    return c


def pod_with(
    annotations: dict[str, str],
    apps: list[dict[str, Any]],
    inits: list[dict[str, Any]] | None = None,
    volume: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if inits is not None:
        spec["initContainers"] = inits
    if volume:
        spec["volumes"] = [plan.csi_volume(SPC)]
    return controller_pod(annotations=annotations, containers=apps, **spec)


def request_of(pod: dict[str, Any]) -> contract.InjectionRequest:
    return contract.parse_annotations(pod["metadata"]["annotations"], "payments-kv")


# -- the record, as the contract parses it ------------------------------------------------------------------------

RECORDS: list[tuple[str, dict[str, str], tuple[str, ...] | None]] = [
    ("absent", {}, None),
    ("one", {**INJECTED, INJECTED_CONTAINERS: "app"}, ("app",)),
    ("several-with-spaces", {**INJECTED, INJECTED_CONTAINERS: "app, worker"}, ("app", "worker")),
    ("empty: nothing was there to inject into", {**INJECTED, INJECTED_CONTAINERS: ""}, ()),
]


@pytest.mark.parametrize(("annotations", "recorded"), [r[1:] for r in RECORDS], ids=[r[0] for r in RECORDS])
def test_the_record_is_parsed_beside_the_status(annotations: dict[str, str], recorded: tuple[str, ...] | None) -> None:
    assert contract.parse_annotations({**CSI, **annotations}, "payments-kv").recorded == recorded


BAD_RECORDS = [
    (
        "written-by-the-pods-author",
        {INJECTED_CONTAINERS: "app,mesh"},
        f"{INJECTED_CONTAINERS} is kvinject's record of the containers it injected, written by kvinject itself:"
        f" remove it (name the containers to inject into with {CONTAINERS})",
    ),
    (
        "beside-another-status",
        {STATUS: "pending", INJECTED_CONTAINERS: "app"},
        f"{INJECTED_CONTAINERS} is kvinject's record",
    ),
    ("not-names", {**INJECTED, INJECTED_CONTAINERS: "app,,Mesh"}, "is not a list of distinct container names"),
    ("duplicates", {**INJECTED, INJECTED_CONTAINERS: "app,app"}, "is not a list of distinct container names"),
    ("too-long", {**INJECTED, INJECTED_CONTAINERS: "a" * 1025}, "value is 1025 characters, more than 1024"),
]


@pytest.mark.parametrize(("annotations", "message"), [b[1:] for b in BAD_RECORDS], ids=[b[0] for b in BAD_RECORDS])
def test_a_record_kvinject_did_not_write_is_an_annotation_error(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(contract.ContractError) as err:
        contract.parse_annotations({**CSI, **annotations}, "payments-kv")
    assert any(message in p for p in err.value.problems), err.value.problems


# -- selection ----------------------------------------------------------------------------------------------------

SELECTIONS: list[tuple[str, dict[str, Any], list[str], str | None, tuple[str, ...]]] = [
    # (id, pod, targets, record to write, named but absent)
    (
        "first: every container",
        pod_with(CSI, [container("app"), container("worker")]),
        ["app", "worker"],
        "app,worker",
        (),
    ),
    (
        "first: the named ones",
        pod_with({**CSI, CONTAINERS: "worker"}, [container("app"), container("worker")]),
        ["worker"],
        "worker",
        (),
    ),
    (
        "first: a named one still to come",
        pod_with({**CSI, CONTAINERS: "app,mesh"}, [container("app")]),
        ["app"],
        "app",
        ("mesh",),
    ),
    (
        "first: a named init container",
        pod_with({**CSI, CONTAINERS: "migrate,app"}, [container("app")], [container("migrate")]),
        ["migrate", "app"],
        "migrate,app",
        (),
    ),
    (
        "first: init containers are not targets by default",
        pod_with(CSI, [container("app")], [container("migrate")]),
        ["app"],
        "app",
        (),
    ),
    (
        "first: a status written by the author changes nothing",
        pod_with({**CSI, **INJECTED}, [container("app"), container("worker")]),
        ["app", "worker"],
        "app,worker",
        (),
    ),
    (
        "recorded: a later container is no target",
        pod_with(
            {**CSI, **INJECTED, INJECTED_CONTAINERS: "app"}, [container("app", True), container("mesh")], volume=True
        ),
        ["app"],
        None,
        (),
    ),
    (
        "recorded: a later container named is one",
        pod_with(
            {**CSI, **INJECTED, INJECTED_CONTAINERS: "app", CONTAINERS: "app,mesh"},
            [container("app", True), container("mesh")],
            volume=True,
        ),
        ["app", "mesh"],
        None,
        (),
    ),
    (
        "recorded: nothing was there, the named one came later",
        pod_with(
            {**CSI, **INJECTED, INJECTED_CONTAINERS: "", CONTAINERS: "mesh"},
            [container("app"), container("mesh")],
            volume=True,
        ),
        ["mesh"],
        None,
        (),
    ),
    (
        "legacy: no record, the containers with kvinject's mount",
        pod_with({**CSI, **INJECTED}, [container("app", True), container("mesh")], volume=True),
        ["app"],
        None,
        (),
    ),
]


@pytest.mark.parametrize(
    ("pod", "names", "record", "pending"), [s[1:] for s in SELECTIONS], ids=[s[0] for s in SELECTIONS]
)
def test_select(pod: dict[str, Any], names: list[str], record: str | None, pending: tuple[str, ...]) -> None:
    selection = targets.select(pod, request_of(pod))
    assert [t.name for t in selection.targets] == names
    assert selection.record == record
    assert selection.pending == pending
    assert selection.problems == ()
    everyone = [c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]
    assert sorted(t.name for t in selection.targets + selection.others) == sorted(everyone)


def test_kvinject_fetch_is_never_a_target_in_mode_init() -> None:
    fetch = {
        "name": INIT_CONTAINER,
        "image": "kvinject:test",
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": "/x"}],
    }
    pod = pod_with({**INIT, CONTAINERS: f"app,{INIT_CONTAINER}"}, [container("app")], [fetch])
    selection = targets.select(pod, request_of(pod))
    assert [t.name for t in selection.targets] == ["app"]
    assert selection.pending == () and INIT_CONTAINER not in [t.name for t in selection.others]


def test_a_recorded_container_that_is_gone() -> None:
    pod = pod_with({**CSI, **INJECTED, INJECTED_CONTAINERS: "app,worker"}, [container("app", True)], volume=True)
    assert targets.select(pod, request_of(pod)).problems == (
        f"{INJECTED_CONTAINERS} records worker as injected, but the pod has no container of that name",
    )


def test_a_record_without_kvinjects_volume_was_not_written_by_kvinject() -> None:
    """The author of a fresh pod writes kvinject's status and an empty record: nothing is taken as injected."""
    pod = pod_with({**CSI, **INJECTED, INJECTED_CONTAINERS: ""}, [container("app")])
    assert targets.select(pod, request_of(pod)).problems == (
        f"the pod carries {INJECTED_CONTAINERS} and {STATUS}: injected but no volume {VOLUME_NAME}: kvinject did not"
        " inject it; remove both annotations",
    )
    with pytest.raises(PlanError):
        plan.csi(pod, request_of(pod), SPC, ENV)


def test_missing_mounts_name_recorded_containers_without_kvinjects_volume() -> None:
    pod = pod_with(
        {**CSI, **INJECTED, INJECTED_CONTAINERS: "app,mesh"}, [container("app", True), container("mesh")], volume=True
    )
    assert targets.missing_mounts(targets.select(pod, request_of(pod))) == [
        f"container 'mesh' is recorded in {INJECTED_CONTAINERS} as injected but does not mount {VOLUME_NAME}"
    ]


def test_pending_warning_and_problem() -> None:
    pod = pod_with({**CSI, CONTAINERS: "app,mesh"}, [container("app")])
    selection = targets.select(pod, request_of(pod))
    assert targets.pending_problem(selection) == f"{CONTAINERS}: no container named mesh in the pod (containers: app)"
    (warning,) = targets.pending_warning(selection)
    assert warning.startswith(targets.pending_problem(selection)) and "later webhook" in warning
    plain = pod_with(CSI, [container("app")])
    assert targets.pending_warning(targets.select(plain, request_of(plain))) == []


# -- strays: kvinject's parts in a container that is not a target -------------------------------------------------

OURS = ENV[0].entry()
RECORDED = {**CSI, **INJECTED, INJECTED_CONTAINERS: "app"}
STRAYS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("later container without our parts", pod_with(RECORDED, [container("app", True), container("mesh")]), []),
    (
        "later container with our mount",
        pod_with(RECORDED, [container("app", True), container("mesh", True)]),
        ["container 'mesh' mounts kvinject's volume kvinject-secrets but is not one kvinject injects into"],
    ),
    (
        "later container with our env",
        pod_with(RECORDED, [container("app", True), container("mesh", env=[OURS])]),
        ["container 'mesh' sets kvinject's env DB but is not one kvinject injects into"],
    ),
    (
        "later init container with our mount",
        pod_with(RECORDED, [container("app", True)], [container("mesh-init", True)]),
        ["container 'mesh-init' mounts kvinject's volume kvinject-secrets but is not one"],
    ),
    (
        "the same Secret under another variable is judged by policy, not here",
        pod_with(RECORDED, [container("app", True), container("mesh", env=[{**OURS, "name": "OTHER"}])]),
        [],
    ),
    (
        "the author's own mount in a container left out",
        pod_with({**CSI, CONTAINERS: "app"}, [container("app"), container("worker", True)]),
        [
            "container 'worker' mounts kvinject's volume kvinject-secrets but is not one kvinject injects into (its"
            " targets: app)"
        ],
    ),
]


@pytest.mark.parametrize(("pod", "fragments"), [s[1:] for s in STRAYS], ids=[s[0] for s in STRAYS])
def test_strays(pod: dict[str, Any], fragments: list[str]) -> None:
    ours = targets.env_key(OURS)
    assert ours is not None
    found = targets.strays(targets.select(pod, request_of(pod)), [ours])
    assert len(found) == len(fragments), found
    for message, fragment in zip(found, fragments, strict=True):
        assert fragment in message
        assert f"({INJECTED_CONTAINERS}) and to those named by {CONTAINERS}" in message


def test_env_key() -> None:
    assert targets.env_key(OURS) == ("DB", SPC, "db")
    assert targets.env_key({"name": "X", "value": "1"}) is None
    assert targets.env_key({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}) is None
    assert targets.env_key("not an entry") is None


# -- the plan over it: first injection, then another webhook, then kvinject again ---------------------------------


def first_injection(annotations: dict[str, str], apps: list[dict[str, Any]]) -> dict[str, Any]:
    pod = pod_with(annotations, apps)
    return apply(pod, plan.csi(pod, request_of(pod), SPC, ENV))


def later_webhook(pod: dict[str, Any], sidecar: dict[str, Any], record: str | None = None) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["spec"]["containers"].append(sidecar)
    if record is not None:
        pod["metadata"]["annotations"][INJECTED_CONTAINERS] = record
    return pod


def test_first_injection_records_and_its_output_is_a_fixed_point() -> None:
    once = first_injection(CSI, [container("app"), container("worker")])
    assert once["metadata"]["annotations"][INJECTED_CONTAINERS] == "app,worker"
    assert plan.csi(once, request_of(once), SPC, ENV) == []


def test_no_metadata_gets_record_and_status_in_one_operation() -> None:
    pod = {"spec": {"containers": [container("app")]}}
    ops = plan.csi(pod, contract.parse_annotations(CSI, "payments-kv"), SPC, ENV)
    assert ops[-1] == {
        "op": "add",
        "path": "/metadata",
        "value": {"annotations": {INJECTED_CONTAINERS: "app", STATUS: "injected"}},
    }


def test_reinvoked_with_a_later_sidecar_adds_nothing() -> None:
    again = later_webhook(first_injection(CSI, [container("app")]), container("mesh"))
    assert plan.csi(again, request_of(again), SPC, ENV) == []


def test_reinvoked_with_a_named_later_sidecar_injects_only_it() -> None:
    once = first_injection({**CSI, CONTAINERS: "app,mesh"}, [container("app")])
    again = later_webhook(once, container("mesh"))
    ops = plan.csi(again, request_of(again), SPC, ENV)
    assert [o["path"] for o in ops] == ["/spec/containers/1/volumeMounts", "/spec/containers/1/env"]
    assert plan.csi(apply(again, ops), request_of(again), SPC, ENV) == []


TAMPERED = [
    ("sidecar-copies-the-mount", container("mesh", True), None, "container 'mesh' mounts kvinject's volume"),
    ("sidecar-copies-the-env", container("mesh", env=[OURS]), None, "container 'mesh' sets kvinject's env DB"),
    ("record-widened", container("mesh"), "app,mesh", "container 'mesh' is recorded in"),
    ("record-narrowed", container("mesh"), "", "container 'app' mounts kvinject's volume"),
]


@pytest.mark.parametrize(("sidecar", "record", "message"), [t[1:] for t in TAMPERED], ids=[t[0] for t in TAMPERED])
def test_reinvoked_after_tampering_is_a_problem(sidecar: dict[str, Any], record: str | None, message: str) -> None:
    again = later_webhook(first_injection(CSI, [container("app")]), sidecar, record)
    with pytest.raises(PlanError) as err:
        plan.csi(again, request_of(again), SPC, ENV)
    assert any(message in p for p in err.value.problems), err.value.problems


def test_init_mode_records_and_ignores_a_later_sidecar() -> None:
    pod = pod_with(INIT, [container("app")], [container("migrate")])
    once = apply(pod, plan.init(pod, request_of(pod), SPEC))
    assert once["metadata"]["annotations"][INJECTED_CONTAINERS] == "app"
    again = later_webhook(once, container("mesh"))
    assert plan.init(again, request_of(again), SPEC) == []
    copied = later_webhook(once, container("mesh", True))
    with pytest.raises(PlanError) as err:
        plan.init(copied, request_of(copied), SPEC)
    assert any("container 'mesh' mounts kvinject's volume" in p for p in err.value.problems)


def test_duplicate_container_names_are_recorded_once_and_stay_a_fixed_point() -> None:
    """The apiserver refuses such a pod later, but kvinject's answer must still be stable (found by the fuzzer)."""
    once = first_injection(CSI, [container("c"), container("c")])
    assert once["metadata"]["annotations"][INJECTED_CONTAINERS] == "c"
    assert all(MOUNT in c["volumeMounts"] for c in once["spec"]["containers"])
    assert plan.csi(once, request_of(once), SPC, ENV) == []
