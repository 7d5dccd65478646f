"""Planning: each mutator, idempotency (plan(plan(x)) adds nothing), collisions named."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.harness import apply, controller_pod
from webhook import contract, plan, targets
from webhook import names as kvnames
from webhook.identity import Identity
from webhook.names import PREFIX
from webhook.plan import EnvSource, PlanError
from webhook.providers.azure import AzureProvider
from webhook.settings import Settings

K = PREFIX
SPC = "kvinject-0123456789abcdef"


def request(annotations: dict[str, str]) -> contract.InjectionRequest:
    return contract.parse_annotations(annotations, "payments-kv")


def readmitted(once: dict[str, Any], annotations: dict[str, str]) -> contract.InjectionRequest:
    """The request kvinject parses when its own output comes back: the annotations plus what it wrote."""
    written = (once.get("metadata") or {}).get("annotations") or {}
    return request({**annotations, **{k: v for k, v in written.items() if k in contract.OUTPUT_KEYS}})


def ops_for(pod: dict[str, Any], annotations: dict[str, str], env: list[EnvSource] | None = None) -> list[Any]:
    return plan.csi(pod, request(annotations), SPC, env or [])


BASIC = {K + "secret-db": "db"}
APP = {"name": "app", "image": "a"}
SIDE = {"name": "side", "image": "s"}
ENV_DB = [EnvSource("DB", SPC, "db")]

SHAPES: list[tuple[str, dict[str, Any], dict[str, str], list[EnvSource]]] = [
    ("bare", controller_pod(containers=[dict(APP)]), BASIC, []),
    ("existing-volumes", controller_pod(containers=[dict(APP)], volumes=[{"name": "data", "emptyDir": {}}]), BASIC, []),
    (
        "existing-mounts-and-env",
        controller_pod(
            containers=[
                {
                    **APP,
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "env": [{"name": "X", "value": "1"}],
                    "envFrom": [{"configMapRef": {"name": "cfg"}}],
                }
            ],
            volumes=[{"name": "data", "emptyDir": {}}],
        ),
        BASIC,
        ENV_DB,
    ),
    (
        "init-containers",
        controller_pod(containers=[dict(APP)], initContainers=[{"name": "migrate", "image": "m"}]),
        BASIC,
        ENV_DB,
    ),
    ("two-containers-env", controller_pod(containers=[dict(APP), dict(SIDE)]), BASIC, ENV_DB),
    (
        "containers-selection",
        controller_pod(containers=[dict(APP), dict(SIDE)]),
        {**BASIC, K + "containers": "side"},
        ENV_DB,
    ),
    (
        "init-container-target",
        controller_pod(containers=[dict(APP)], initContainers=[{"name": "migrate", "image": "m"}]),
        {**BASIC, K + "containers": "migrate,app"},
        ENV_DB,
    ),
    (
        "no-annotations-map",
        {"metadata": {"labels": {K + "inject": "true"}}, "spec": {"containers": [dict(APP)]}},
        BASIC,
        [],
    ),
    ("no-metadata", {"spec": {"containers": [dict(APP)]}}, BASIC, []),
    ("custom-mount-path", controller_pod(containers=[dict(APP)]), {**BASIC, K + "mount-path": "/etc/app"}, []),
]


@pytest.mark.parametrize(("pod", "annotations", "env"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_plan_applies_and_is_idempotent(pod: dict[str, Any], annotations: dict[str, str], env: list[EnvSource]) -> None:
    ops = ops_for(pod, annotations, env)
    once = apply(pod, ops)
    req = readmitted(once, annotations)
    # What kvinject recorded: the named containers, else every container in spec.containers.
    assert req.recorded == (req.containers or tuple(c["name"] for c in pod["spec"]["containers"]))
    assert plan.csi(once, req, SPC, env) == []  # re-admitting our own output: no patch
    chosen = targets.select(once, req).targets
    assert chosen, "at least one target"
    for target in chosen:
        mounts = [m for m in target.container["volumeMounts"] if m["name"] == kvnames.VOLUME_NAME]
        assert mounts == [{"name": kvnames.VOLUME_NAME, "mountPath": req.mount_path, "readOnly": True}]
        assert [e for e in target.container.get("env", []) if e["name"] == "DB"] == [e.entry() for e in env]
    others = [c for c in once["spec"]["containers"] if c["name"] not in {t.name for t in chosen}]
    for c in others:
        assert "volumeMounts" not in c or all(m["name"] != kvnames.VOLUME_NAME for m in c["volumeMounts"])
    volumes = [v for v in once["spec"]["volumes"] if v["name"] == kvnames.VOLUME_NAME]
    assert volumes == [plan.csi_volume(SPC)]
    assert once["metadata"]["annotations"][kvnames.STATUS] == "injected"
    # What was there before is untouched and in place.
    before = pod["spec"].get("volumes") or []
    assert once["spec"].get("volumes", [])[: len(before)] == before
    inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
    assert [c["name"] for c in once["spec"].get("initContainers") or []] == inits


def test_plan_preserves_existing_items_order() -> None:
    pod = controller_pod(containers=[{**APP, "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}])
    once = apply(pod, ops_for(pod, BASIC, ENV_DB))
    assert [e["name"] for e in once["spec"]["containers"][0]["env"]] == ["A", "B", "DB"]


def test_ops_add_to_missing_lists_in_one_operation() -> None:
    pod = controller_pod(containers=[dict(APP)])
    ops = ops_for(pod, BASIC, [EnvSource("A", SPC, "db"), EnvSource("B", SPC, "db")])
    assert [o["path"] for o in ops] == [
        "/spec/volumes",
        "/spec/containers/0/volumeMounts",
        "/spec/containers/0/env",
        "/metadata/annotations/kvinject.io~1injected-containers",
        "/metadata/annotations/kvinject.io~1status",
    ]
    assert [e["name"] for e in ops[2]["value"]] == ["A", "B"]


def test_patch_appends_with_dash_when_list_exists() -> None:
    pod = controller_pod(containers=[{**APP, "env": []}], volumes=[])
    ops = ops_for(pod, BASIC, ENV_DB)
    assert {"op": "add", "path": "/spec/volumes/-", "value": plan.csi_volume(SPC)} in ops
    assert any(o["path"] == "/spec/containers/0/env/-" for o in ops)


COLLISIONS = [
    (
        "volume-name",
        controller_pod(containers=[dict(APP)], volumes=[{"name": "kvinject-secrets", "emptyDir": {}}]),
        "the pod already has a volume named 'kvinject-secrets' that kvinject did not add",
    ),
    (
        "volume-other-class",
        controller_pod(containers=[dict(APP)], volumes=[plan.csi_volume("kvinject-other")]),
        "the pod already has a volume named 'kvinject-secrets' that kvinject did not add",
    ),
    (
        "mount-path",
        controller_pod(containers=[{**APP, "volumeMounts": [{"name": "data", "mountPath": "/mnt/secrets"}]}]),
        "container 'app' already mounts 'data' at /mnt/secrets: choose another kvinject.io/mount-path",
    ),
    (
        "env-var",
        controller_pod(containers=[{**APP, "env": [{"name": "DB", "value": "hard-coded"}]}]),
        "container 'app' already defines env 'DB': remove it or the kvinject.io/env-DB annotation",
    ),
    (
        "mount-our-volume-elsewhere",
        controller_pod(containers=[{**APP, "volumeMounts": [{"name": "kvinject-secrets", "mountPath": "/other"}]}]),
        "container 'app' already mounts volume 'kvinject-secrets' at /other",
    ),
]


@pytest.mark.parametrize(("pod", "message"), [c[1:] for c in COLLISIONS], ids=[c[0] for c in COLLISIONS])
def test_collisions_are_denials_naming_the_collision(pod: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as err:
        ops_for(pod, BASIC, ENV_DB)
    assert message in err.value.problems


def test_all_collisions_and_unknown_containers_reported_together() -> None:
    pod = controller_pod(
        containers=[
            {**APP, "env": [{"name": "DB", "value": "x"}], "volumeMounts": [{"name": "d", "mountPath": "/mnt/secrets"}]}
        ],
        volumes=[{"name": "kvinject-secrets", "emptyDir": {}}],
    )
    req = request({**BASIC, K + "containers": "app,ghost"})
    with pytest.raises(PlanError) as err:
        plan.csi(pod, req, SPC, ENV_DB)
    assert len(err.value.problems) == 3
    # A named container not in the pod yet is no collision: a later webhook may add it (see test_targets).
    assert targets.pending_problem(targets.select(pod, req)) == (
        "kvinject.io/containers: no container named ghost in the pod (containers: app)"
    )


def test_escape_json_pointer() -> None:
    assert plan.escape("kvinject.io/status") == "kvinject.io~1status"
    assert plan.escape("a~b/c") == "a~0b~1c"


def test_plan_does_not_modify_its_input() -> None:
    pod = controller_pod(containers=[dict(APP)])
    snapshot = repr(pod)
    ops_for(pod, BASIC, ENV_DB)
    assert repr(pod) == snapshot


# -- mode init -----------------------------------------------------------------------------------

SPEC = AzureProvider().init_spec(
    Identity("cid", "tid"),
    Settings(init_image="kvinject:test", authority_host="https://login.example/", vault_dns_suffix="vault.azure.net"),
)
INIT = {K + "mode": "init", K + "secret-db": "db", K + "secret-tls.pem": "cert:other-kv/tls"}

INIT_SHAPES: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("bare", controller_pod(containers=[dict(APP)]), INIT),
    (
        "existing-init-and-volumes",
        controller_pod(
            containers=[dict(APP)],
            volumes=[{"name": "c", "emptyDir": {}}],
            initContainers=[{"name": "migrate", "image": "m"}],
        ),
        INIT,
    ),
    (
        "init-last",
        controller_pod(containers=[dict(APP)], initContainers=[{"name": "migrate", "image": "m"}]),
        {**INIT, K + "init-first": "false"},
    ),
    (
        "init-target-shifted",
        controller_pod(containers=[dict(APP)], initContainers=[{"name": "migrate", "image": "m"}]),
        {**INIT, K + "containers": "migrate"},
    ),
    ("fs-group", controller_pod(containers=[dict(APP)], securityContext={"fsGroup": 2000}), INIT),
]


@pytest.mark.parametrize(("pod", "annotations"), [s[1:] for s in INIT_SHAPES], ids=[s[0] for s in INIT_SHAPES])
def test_init_plan_applies_and_is_idempotent(pod: dict[str, Any], annotations: dict[str, str]) -> None:
    req = request(annotations)
    once = apply(pod, plan.init(pod, req, SPEC))
    assert plan.init(once, readmitted(once, annotations), SPEC) == []
    inits = once["spec"]["initContainers"]
    names = [c["name"] for c in inits]
    assert names.count(kvnames.INIT_CONTAINER) == 1
    assert names.index(kvnames.INIT_CONTAINER) == (0 if req.init_first else len(names) - 1)
    fetch = inits[names.index(kvnames.INIT_CONTAINER)]
    env = {e["name"]: e["value"] for e in fetch["env"]}
    assert env["AZURE_CLIENT_ID"] == "cid" and env["AZURE_TENANT_ID"] == "tid"
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == f"{kvnames.TOKEN_DIR}/{kvnames.TOKEN_FILE}"
    assert [o["alias"] for o in orjson.loads(env["KVINJECT_OBJECTS"])] == ["db", "tls.pem"]
    fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    assert env.get("KVINJECT_FS_GROUP") == (str(fs_group) if fs_group else None)
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": kvnames.VOLUME_NAME, "mountPath": kvnames.OUTPUT_DIR} in fetch["volumeMounts"]
    volumes = {v["name"]: v for v in once["spec"]["volumes"]}
    assert volumes[kvnames.VOLUME_NAME]["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Mi"}
    token = volumes[kvnames.TOKEN_VOLUME]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "api://AzureADTokenExchange"
    chosen = targets.select(once, readmitted(once, annotations)).targets
    assert [t.name for t in chosen] == list(req.containers or [c["name"] for c in pod["spec"]["containers"]])
    for target in chosen:
        assert {"name": kvnames.VOLUME_NAME, "mountPath": "/mnt/secrets", "readOnly": True} in target.container[
            "volumeMounts"
        ]
    # The token is only for kvinject-fetch.
    for c in once["spec"]["containers"] + [c for c in inits if c["name"] != kvnames.INIT_CONTAINER]:
        assert all(m["name"] != kvnames.TOKEN_VOLUME for m in c.get("volumeMounts", []))
        assert all(not e["name"].startswith("AZURE_") for e in c.get("env", []))


INIT_COLLISIONS = [
    (
        "foreign-init-container",
        controller_pod(containers=[dict(APP)], initContainers=[{"name": "kvinject-fetch", "image": "x"}]),
        "the pod already has an init container named 'kvinject-fetch' that kvinject did not add",
    ),
    (
        "token-volume-name",
        controller_pod(containers=[dict(APP)], volumes=[{"name": "kvinject-azure-token", "emptyDir": {}}]),
        "the pod already has a volume named 'kvinject-azure-token' that kvinject did not add",
    ),
    (
        "output-volume-name",
        controller_pod(containers=[dict(APP)], volumes=[{"name": "kvinject-secrets", "emptyDir": {}}]),
        "the pod already has a volume named 'kvinject-secrets' that kvinject did not add",
    ),
]


@pytest.mark.parametrize(("pod", "message"), [c[1:] for c in INIT_COLLISIONS], ids=[c[0] for c in INIT_COLLISIONS])
def test_init_collisions(pod: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as err:
        plan.init(pod, request(INIT), SPEC)
    assert message in err.value.problems
