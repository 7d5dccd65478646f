"""The bypass classes of an app team with namespace `edit` rights, judged over ASGI (the e2e tier replays them
on the real apiserver): pod volume attributes over the class, service-principal credentials, a squatted or
edited generated class, enforcement labels that loosen."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.api.test_validate import CSI_ENV, csi_volume, hand_written, injected, post
from tests.harness import admission_review, controller_pod, golden_cluster
from webhook.cluster import FileCluster
from webhook.settings import Settings

OTHER_CLIENT = "99999999-8888-7777-6666-555555555555"


def with_attributes(**attributes: str) -> dict[str, Any]:
    volume = csi_volume("payments-shared")
    volume["csi"]["volumeAttributes"].update(attributes)
    return volume


ATTRIBUTE_ATTACKS = [
    ("node-identity", {"useVMManagedIdentity": "true"}),
    ("user-assigned-identity", {"useVMManagedIdentity": "true", "userAssignedIdentityID": OTHER_CLIENT}),
    ("other-vault", {"keyvaultName": "other-team-kv"}),
    ("other-objects", {"objects": "array:\n  - |\n    objectName: their-secret\n"}),
    ("other-client-id", {"clientID": OTHER_CLIENT}),
    ("other-tenant", {"tenantID": "00000000-0000-0000-0000-000000000009"}),
    ("other-cloud", {"cloudName": "AzureStackCloud", "cloudEnvFileName": "/etc/kubernetes/evil.json"}),
    ("pod-identity", {"usePodIdentity": "true"}),
    ("harmless-looking", {"csi.storage.k8s.io/ephemeral": "true"}),
]


@pytest.mark.parametrize("attributes", [a[1] for a in ATTRIBUTE_ATTACKS], ids=[a[0] for a in ATTRIBUTE_ATTACKS])
async def test_volume_attributes_beside_the_class_are_denied(attributes: dict[str, str]) -> None:
    answer = await post("/validate", admission_review(hand_written(volumes=[with_attributes(**attributes)])))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert f"volume secrets sets volumeAttributes {', '.join(sorted(attributes))}:" in message, message
    assert "only secretProviderClass is allowed" in message
    assert "/etc/kubernetes/evil.json" not in message  # names of fields and objects, never other values


async def test_volume_attributes_are_judged_merged_over_the_class_when_allowed() -> None:
    settings = Settings(allow_volume_attributes=True)
    same = await post(
        "/validate",
        admission_review(hand_written(volumes=[with_attributes(keyvaultName="payments-kv")])),
        settings=settings,
    )
    assert same["allowed"] is True, same
    other = await post(
        "/validate",
        admission_review(hand_written(volumes=[with_attributes(useVMManagedIdentity="true")])),
        settings=settings,
    )
    assert other["allowed"] is False
    assert "reads with the node's managed identity (useVMManagedIdentity)" in other["status"]["message"]
    vault = await post(
        "/validate",
        admission_review(hand_written(volumes=[with_attributes(keyvaultName="other-team-kv")])),
        settings=settings,
    )
    assert vault["allowed"] is False and "other-team-kv/shared-config" in vault["status"]["message"], vault


async def test_node_publish_secret_is_denied_unless_allowed() -> None:
    volume = csi_volume("payments-shared")
    volume["csi"]["nodePublishSecretRef"] = {"name": "sp-credentials"}
    pod = hand_written(volumes=[volume])
    answer = await post("/validate", admission_review(pod))
    assert answer["allowed"] is False
    assert "volume secrets sets nodePublishSecretRef" in answer["status"]["message"]
    allowed = await post("/validate", admission_review(pod), settings=Settings(allow_node_publish_secret=True))
    assert allowed["allowed"] is True, allowed


async def test_injected_pod_with_added_attributes_is_denied() -> None:
    cluster = golden_cluster()
    final = await injected(controller_pod(annotations=dict(CSI_ENV)), cluster=cluster)
    (volume,) = [v for v in final["spec"]["volumes"] if "csi" in v]
    volume["csi"]["volumeAttributes"]["keyvaultName"] = "other-team-kv"
    answer = await post("/validate", admission_review(final), cluster)
    assert answer["allowed"] is False
    assert "sets volumeAttributes keyvaultName" in answer["status"]["message"]


def generated_class(cluster: FileCluster) -> dict[str, Any]:
    (created,) = cluster.created
    return copy.deepcopy(created)


SQUATS = [
    (
        "other-objects",
        lambda c: c["spec"]["parameters"].update(objects="array:\n  - |\n    objectName: theirs\n"),
        "spec.parameters.objects",
    ),
    (
        "node-identity",
        lambda c: c["spec"]["parameters"].update(useVMManagedIdentity="true"),
        "spec.parameters.useVMManagedIdentity",
    ),
    (
        "extra-parameter",
        lambda c: c["spec"]["parameters"].update(userAssignedIdentityID=OTHER_CLIENT),
        "spec.parameters.userAssignedIdentityID",
    ),
    ("other-provider", lambda c: c["spec"].update(provider="vault"), "spec.provider"),
    ("synced-secret", lambda c: c["spec"].update(secretObjects=[]), "spec.secretObjects"),
    ("unlabelled", lambda c: c["metadata"].pop("labels"), "metadata.labels[app.kubernetes.io/managed-by]"),
]


@pytest.mark.parametrize(("change", "field"), [s[1:] for s in SQUATS], ids=[s[0] for s in SQUATS])
@pytest.mark.parametrize("dry_run", [False, True], ids=["create", "dry-run"])
async def test_a_squatted_generated_class_is_denied_at_mutate(change: Any, field: str, dry_run: bool) -> None:
    """The name is learnt with a dry run; the class is created first with other content."""
    learn = golden_cluster()
    pod = controller_pod(annotations=dict(CSI_ENV))
    await injected(pod, cluster=learn)
    squat = generated_class(learn)
    change(squat)
    victim = golden_cluster()
    victim.apply("ADDED", squat)
    answer = await post("/mutate", admission_review(pod, dry_run=dry_run), victim)
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert (
        f"SecretProviderClass payments/{squat['metadata']['name']} exists with content kvinject did not write"
        in message
    )
    assert f"({field}" in message or f", {field}" in message, message
    assert "theirs" not in message and OTHER_CLIENT not in message  # field names only
    assert victim.created == []


@pytest.mark.parametrize(("change", "field"), [s[1:] for s in SQUATS], ids=[s[0] for s in SQUATS])
async def test_a_generated_class_edited_later_is_denied_at_validate(change: Any, field: str) -> None:
    cluster = golden_cluster()
    final = await injected(controller_pod(annotations=dict(CSI_ENV)), cluster=cluster)
    edited = generated_class(cluster)
    change(edited)
    cluster.apply("MODIFIED", edited)
    answer = await post("/validate", admission_review(final), cluster)
    assert answer["allowed"] is False
    assert "exists with content kvinject did not write" in answer["status"]["message"]
    assert field in answer["status"]["message"]


async def test_the_generated_class_must_exist_unless_dry_run() -> None:
    made = golden_cluster()
    final = await injected(controller_pod(annotations=dict(CSI_ENV)), cluster=made)
    answer = await post("/validate", admission_review(final), golden_cluster())
    assert answer["allowed"] is False
    assert "which does not exist" in answer["status"]["message"]
    dry = await post("/validate", admission_review(final, dry_run=True), golden_cluster())
    assert dry["allowed"] is True, dry


async def test_the_untouched_generated_class_is_admitted_again() -> None:
    cluster = golden_cluster()
    pod = controller_pod(annotations=dict(CSI_ENV))
    await injected(pod, cluster=cluster)
    again = await post("/mutate", admission_review(pod), cluster)  # a second replica of the same Deployment
    assert again["allowed"] is True and len(cluster.created) == 1


def ephemeral_update(pod: dict[str, Any], *containers: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview `kubectl debug` causes: UPDATE of pods/ephemeralcontainers."""
    after = copy.deepcopy(pod)
    after["metadata"]["name"] = "api-7d9f8c6b5-x1"
    after["spec"].setdefault("ephemeralContainers", []).extend(containers)
    doc = admission_review(after, operation="UPDATE")
    doc["request"]["subResource"] = "ephemeralcontainers"
    before = copy.deepcopy(pod)
    before["metadata"]["name"] = "api-7d9f8c6b5-x1"
    doc["request"]["oldObject"] = before
    return doc


def debugger(**fields: Any) -> dict[str, Any]:
    return {"name": "debugger", "image": "busybox:1", **fields}


EPHEMERAL = [
    ("no-secrets", hand_written("worker"), debugger(), None),
    (
        "reads-synced-secret-of-another-identity",
        hand_written("worker"),
        debugger(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "payments-shared", "key": "k"}}}]),
        "Secret payments-shared holds Key Vault objects synced by SecretProviderClass payments-shared",
    ),
    (
        "envfrom-synced-secret",
        hand_written("worker"),
        debugger(envFrom=[{"secretRef": {"name": "payments-shared"}}]),
        "Secret payments-shared holds Key Vault objects synced by SecretProviderClass payments-shared",
    ),
    (
        "mounts-node-identity-volume",
        hand_written("api", volumes=[csi_volume("node-identity", name="kv")]),
        debugger(volumeMounts=[{"name": "kv", "mountPath": "/x"}]),
        "reads with the node's managed identity",
    ),
    (
        "reads-own-synced-secret",
        hand_written("api"),
        debugger(envFrom=[{"secretRef": {"name": "payments-shared"}}]),
        None,
    ),
]


@pytest.mark.parametrize(("pod", "container", "message"), [e[1:] for e in EPHEMERAL], ids=[e[0] for e in EPHEMERAL])
async def test_ephemeral_containers_are_judged_when_added(
    pod: dict[str, Any], container: dict[str, Any], message: str | None
) -> None:
    answer = await post("/validate", ephemeral_update(pod, container))
    if message is None:
        assert answer["allowed"] is True, answer
    else:
        assert answer["allowed"] is False and message in answer["status"]["message"], answer


async def test_ephemeral_containers_already_there_are_not_judged_again() -> None:
    reader = debugger(envFrom=[{"secretRef": {"name": "payments-shared"}}])
    pod = hand_written("worker")
    pod["spec"]["ephemeralContainers"] = [reader]
    answer = await post("/validate", ephemeral_update(pod, debugger(name="second")))
    assert answer["allowed"] is True, answer


async def test_ephemeral_update_is_not_mutated() -> None:
    answer = await post("/mutate", ephemeral_update(controller_pod(annotations=dict(CSI_ENV)), debugger()))
    assert answer["allowed"] is True and "patch" not in answer


async def test_a_kvinject_named_secret_without_its_class_is_denied() -> None:
    pod = hand_written(
        "api", env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "kvinject-0123456789abcdef", "key": "k"}}}]
    )
    answer = await post("/validate", admission_review(pod))
    assert answer["allowed"] is False
    assert "Secret kvinject-0123456789abcdef has the name of a kvinject-synced Secret" in answer["status"]["message"]


async def test_a_synced_secret_whose_class_is_unreadable_is_denied() -> None:
    cluster = golden_cluster()
    cluster.apply(
        "ADDED",
        {
            "kind": "SecretProviderClass",
            "metadata": {"name": "broken", "namespace": "payments"},
            "spec": {
                "provider": "azure",
                "parameters": {
                    "clientID": "11111111-2222-3333-4444-555555555555",
                    "keyvaultName": "payments-kv",
                    "tenantID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                    "objects": "array: [: :",
                },
                "secretObjects": [
                    {"secretName": "team-config", "type": "Opaque", "data": [{"objectName": "a", "key": "a"}]}
                ],
            },
        },
    )
    pod = hand_written("api", env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "team-config", "key": "a"}}}])
    answer = await post("/validate", admission_review(pod), cluster)
    assert answer["allowed"] is False
    assert (
        "Secret team-config holds Key Vault objects synced by SecretProviderClass broken" in answer["status"]["message"]
    )
    assert "cannot be judged as the Azure provider reads it: objects" in answer["status"]["message"], answer


INIT_POD = {"kvinject.io/mode": "init", "kvinject.io/secret-db-password": "db-password"}


async def injected_init(cluster: FileCluster) -> dict[str, Any]:
    return await injected(controller_pod(annotations=dict(INIT_POD)), cluster=cluster)


def fetch_container(pod: dict[str, Any]) -> dict[str, Any]:
    (fetch,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "kvinject-fetch"]
    return fetch


def set_env(name: str, value: str) -> Any:
    def change(pod: dict[str, Any]) -> None:
        for e in fetch_container(pod)["env"]:
            if e["name"] == name:
                e["value"] = value

    return change


INIT_TAMPERING = [
    (
        "objects-of-another-team",
        set_env(
            "KVINJECT_OBJECTS", '[{"alias":"x","vault":"other-team-kv","name":"theirs","type":"secret","version":""}]'
        ),
        "differs in env",
    ),
    ("other-client-id", set_env("AZURE_CLIENT_ID", OTHER_CLIENT), "differs in env"),
    ("other-authority", set_env("AZURE_AUTHORITY_HOST", "https://login.example.com/"), "differs in env"),
    ("other-image", lambda p: fetch_container(p).update(image="example.com/evil:1"), "differs in image"),
    ("other-command", lambda p: fetch_container(p).update(command=["sh", "-c", "kvinject fetch"]), "did not add"),
    ("added-args", lambda p: fetch_container(p).update(args=["--debug"]), "differs in args"),
    (
        "added-env-from",
        lambda p: fetch_container(p).update(envFrom=[{"secretRef": {"name": "x"}}]),
        "differs in envFrom",
    ),
    (
        "privileged",
        lambda p: fetch_container(p)["securityContext"].update(privileged=True),
        "differs in securityContext",
    ),
    (
        "token-audience",
        lambda p: next(v for v in p["spec"]["volumes"] if v["name"] == "kvinject-azure-token")["projected"]["sources"][
            0
        ]["serviceAccountToken"].update(audience="https://kubernetes.default.svc"),
        "volume named 'kvinject-azure-token' that kvinject did not add",
    ),
    (
        "output-on-disk",
        lambda p: next(v for v in p["spec"]["volumes"] if v["name"] == "kvinject-secrets").update(emptyDir={}),
        "volume named 'kvinject-secrets' that kvinject did not add",
    ),
]


@pytest.mark.parametrize(("change", "message"), [t[1:] for t in INIT_TAMPERING], ids=[t[0] for t in INIT_TAMPERING])
async def test_init_mode_injected_parts_must_equal_what_kvinject_injects(change: Any, message: str) -> None:
    cluster = golden_cluster()
    pod = await injected_init(cluster)
    untouched = await post("/validate", admission_review(pod), cluster)
    assert untouched["allowed"] is True, untouched
    change(pod)
    answer = await post("/validate", admission_review(pod), cluster)
    assert answer["allowed"] is False
    assert "the pod was changed after kvinject injected it" in answer["status"]["message"]
    assert message in answer["status"]["message"], answer["status"]["message"]


async def test_kvinject_parts_without_the_marker_are_denied() -> None:
    cluster = golden_cluster()
    pod = await injected_init(cluster)
    pod["metadata"]["annotations"] = {}
    pod["metadata"]["labels"] = {"app": "x"}  # not opted in either
    answer = await post("/validate", admission_review(pod), cluster)
    assert answer["allowed"] is False
    assert "carries kvinject's init container kvinject-fetch, volume kvinject-secrets" in answer["status"]["message"]


async def test_init_objects_are_judged_for_the_current_policy() -> None:
    cluster = golden_cluster()
    pod = await injected_init(cluster)
    for policy in list(cluster.policies_for("11111111-2222-3333-4444-555555555555")):
        cluster.apply("DELETED", {"kind": "SecretAccessPolicy", "metadata": {"name": policy.name}})
    answer = await post("/validate", admission_review(pod), cluster)
    assert answer["allowed"] is False
    assert "init container kvinject-fetch: " in answer["status"]["message"], answer


def class_review(parameters: dict[str, str], operation: str = "UPDATE", provider: str = "azure") -> dict[str, Any]:
    doc = admission_review(None, operation=operation)
    request = doc["request"]
    request["kind"] = {"group": "secrets-store.csi.x-k8s.io", "version": "v1", "kind": "SecretProviderClass"}
    request["resource"] = {"group": "secrets-store.csi.x-k8s.io", "version": "v1", "resource": "secretproviderclasses"}
    request["object"] = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "team-spc", "namespace": "payments"},
        "spec": {"provider": provider, "parameters": parameters},
    }
    return doc


WORKLOAD = {
    "clientID": "11111111-2222-3333-4444-555555555555",
    "tenantID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "keyvaultName": "payments-kv",
    "objects": "array:\n  - |\n    objectName: db-password\n    objectType: secret\n",
}
CLASS_WRITES = [
    ("workload-identity", {}, None),
    ("node-identity", {"useVMManagedIdentity": "true"}, "reads with the node's managed identity"),
    ("node-identity-spelt-t", {"useVMManagedIdentity": " t "}, "reads with the node's managed identity"),
    ("pod-identity", {"usePodIdentity": "TRUE"}, "uses aad-pod-identity"),
    ("service-principal", {"clientID": ""}, "sets no clientID"),
    ("bad-boolean", {"usePodIdentity": "yes"}, "cannot be judged as the Azure provider reads it"),
    ("alias-bomb", {"objects": "a: &a [x, x]\narray: *a\n"}, "cannot be judged as the Azure provider reads it"),
    ("lookalike-key", {"clientId": "x"}, "cannot be judged as the Azure provider reads it"),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in CLASS_WRITES], ids=[c[0] for c in CLASS_WRITES])
@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
async def test_class_writes_are_judged_on_their_own(
    change: dict[str, str], message: str | None, operation: str
) -> None:
    answer = await post("/validate", class_review({**WORKLOAD, **change}, operation))
    if message is None:
        assert answer["allowed"] is True, answer
    else:
        assert answer["allowed"] is False and message in answer["status"]["message"], answer
        assert "SecretProviderClass payments/team-spc" in answer["status"]["message"]


async def test_class_writes_follow_settings_and_enforcement() -> None:
    node = class_review({**WORKLOAD, "useVMManagedIdentity": "true"})
    assert (await post("/validate", node, settings=Settings(allow_node_identity=True)))["allowed"] is True
    other_provider = class_review({"secrets": "- resourceName: x"}, provider="gcp")  # a store kvinject has not
    assert (await post("/validate", other_provider))["allowed"] is True
    vault = await post("/validate", class_review({"roleName": "x"}, provider="vault"))  # one it has: judged
    assert vault["allowed"] is False
    assert "cannot be judged as the Vault CSI provider reads it: objects is not a list" in vault["status"]["message"]
    node["request"]["namespace"] = "sandbox"  # warn mode, on the allowlist
    answer = await post("/validate", node)
    assert answer["allowed"] is True and any("would deny" in w for w in answer["warnings"]), answer
