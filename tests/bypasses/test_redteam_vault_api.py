"""Red team of the HashiCorp Vault store (issue 16) over ASGI: an app team with namespace `edit` rights writes
`provider: vault` SecretProviderClasses and pods mounting them, and tries to make the Vault CSI provider read a
secret no SecretAccessPolicy grants its ServiceAccount's role.

What the provider reads is taken from its source (hashicorp/vault-csi-provider v1.7.4, internal/config/config.go
and internal/client/client.go): parameters by exact name, `objects` decoded by gopkg.in/yaml.v3 v3.0.1 into its
Secret struct, `secretPath` sent as `/v1/<secretPath>` after `path.Join`, and the login body
`{role: roleName, jwt}` where the jwt is the `csi.storage.k8s.io/serviceAccount.tokens` entry for the audience
if the parameters carry one, else a TokenRequest for the pod's ServiceAccount.

Tests named `test_hole_*` fail while the hole exists; `test_blocked_*` hold attacks kvinject already refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.api.test_validate import csi_volume, hand_written, post
from tests.bypasses.test_bypasses_api import debugger, ephemeral_update
from tests.harness import RELAXABLE, ROOT, admission_review, apply, golden_cluster
from webhook import review
from webhook.cluster import FileCluster
from webhook.policy import Enforcement
from webhook.settings import Settings

ADDRESS = "https://vault.example:8200"
SETTINGS = Settings(
    relaxable_namespaces=RELAXABLE,
    hashicorp_vault_address=ADDRESS,
    not_opted_in_enforcement=Enforcement.ENFORCE,
)
ALLOWED = "secret/data/payments/db"  # granted to role payments for ServiceAccount payments/vapi
FORBIDDEN = "secret/data/billing/db"  # granted to no role of namespace payments


VAPI = {
    "apiVersion": "v1",
    "kind": "ServiceAccount",
    "metadata": {
        "name": "vapi",
        "namespace": "payments",
        "uid": "vapi-uid",
        "annotations": {"vault.kvinject.io/role": "payments"},
    },
}
POLICY = {
    "apiVersion": "kvinject.io/v1",
    "kind": "SecretAccessPolicy",
    "metadata": {"name": "payments-vault"},
    "spec": {
        "identity": {"vault": {"authMount": "kubernetes", "role": "payments"}},
        "federatedServiceAccounts": [{"namespace": "payments", "name": "vapi"}],
        "allow": [{"path": "secret/payments/*", "keys": ["password"]}],
    },
}


def vault_cluster() -> FileCluster:
    """The golden cluster plus: ServiceAccount payments/vapi annotated with role payments, and a
    SecretAccessPolicy letting it read secret/payments/* key password (and nothing of secret/billing)."""
    cluster = golden_cluster()
    cluster.apply("ADDED", VAPI)
    cluster.apply("ADDED", POLICY)
    return cluster


def vault_class(parameters: dict[str, str], name: str = "team-vault") -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": "payments"},
        "spec": {"provider": "vault", "parameters": parameters},
    }


def objects(path: str = ALLOWED, key: str | None = "password") -> str:
    entry = f'- objectName: "db"\n  secretPath: "{path}"\n'
    return entry + (f'  secretKey: "{key}"\n' if key is not None else "")


def params(objects_yaml: str | None = None, **extra: str) -> dict[str, str]:
    return {"roleName": "payments", "vaultAddress": ADDRESS, "objects": objects_yaml or objects(), **extra}


def class_write(parameters: dict[str, str], operation: str = "CREATE") -> dict[str, Any]:
    doc = admission_review(None, operation=operation)
    request = doc["request"]
    request["kind"] = {"group": "secrets-store.csi.x-k8s.io", "version": "v1", "kind": "SecretProviderClass"}
    request["resource"] = {"group": "secrets-store.csi.x-k8s.io", "version": "v1", "resource": "secretproviderclasses"}
    request["name"] = "team-vault"
    request["object"] = vault_class(parameters)
    return doc


async def pod_mounting(
    parameters: dict[str, str],
    attributes: dict[str, str] | None = None,
    account: str = "vapi",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """/validate's answer for a hand-written pod of `account` mounting a class with `parameters`."""
    cluster = vault_cluster()
    cluster.apply("ADDED", vault_class(parameters))
    volume = csi_volume("team-vault")
    volume["csi"]["volumeAttributes"].update(attributes or {})
    pod = hand_written(service_account=account, volumes=[volume])
    pod["metadata"]["annotations"] = annotations or {}
    settings = SETTINGS
    if attributes:
        settings = Settings(**{**SETTINGS.model_dump(), "allow_volume_attributes": True})
    return await post("/validate", admission_review(pod), cluster, settings)


async def test_the_baseline_is_admitted_and_the_forbidden_path_denied() -> None:
    """The fixture works: the granted path is admitted, the other team's path denied, by policy."""
    assert (await pod_mounting(params()))["allowed"] is True
    denied = await pod_mounting(params(objects(FORBIDDEN)))
    assert denied["allowed"] is False
    assert "may not read secret/billing/db#password" in denied["status"]["message"], denied


# --- holes --------------------------------------------------------------------------------------------------

# YAML merge keys whose value is a list of maps: the YAML merge spec (and gopkg.in/yaml.v3, the provider's
# parser) lets maps EARLIER in the list win; PyYAML's safe_load lets the LAST win. kvinject judges the allowed
# path, the provider reads the forbidden one. Checked against the provider's own config.Parse (v1.7.4, built
# from github.com/hashicorp/vault-csi-provider with a main in its module tree): SecretPath secret/data/billing/db.
MERGE_LIST = (
    f'- objectName: "db"\n  secretKey: "password"\n  <<: [{{secretPath: {FORBIDDEN}}}, {{secretPath: {ALLOWED}}}]\n'
)


TWO_PATHS = f"[{{secretPath: {FORBIDDEN}}}, {{secretPath: {ALLOWED}}}]"
# The same merge spelt otherwise (a fix that looks for a plain `<<` key must catch these too).
MERGE_SPELLINGS = [
    ("plain", MERGE_LIST),
    (
        "merge-tag-quoted",
        f"- {{objectName: db, secretKey: password, !!merge '<<': {TWO_PATHS}}}\n",
    ),
    (
        "explicit-key",
        f"- {{objectName: db, secretKey: password, ? <<\n   : {TWO_PATHS}}}\n",
    ),
]


@pytest.mark.parametrize("merge", [m[1] for m in MERGE_SPELLINGS], ids=[m[0] for m in MERGE_SPELLINGS])
async def test_hole_yaml_merge_list_pod_reads_what_kvinject_did_not_judge(merge: str) -> None:
    answer = await pod_mounting(params(merge))
    assert answer["allowed"] is False, "a merge-key list is read as secret/billing/db by the Vault CSI provider"


async def test_hole_yaml_merge_list_class_write() -> None:
    answer = await post("/validate", class_write(params(MERGE_LIST)), vault_cluster(), SETTINGS)
    assert answer["allowed"] is False, "the class reads secret/billing/db as the provider parses it"


# The same on secretKey, within the path the policy (and so the mirrored Vault ACL, which is per path) allows:
# the key-level restriction is kvinject's alone (Vault ACLs cannot name keys), and the provider reads key api-key,
# or, with an empty key, the whole secret as JSON (checked against config.Parse too).
MERGE_KEYS = [
    (
        "other-key",
        f'- objectName: "db"\n  secretPath: "{ALLOWED}"\n  <<: [{{secretKey: api-key}}, {{secretKey: password}}]\n',
    ),
    (
        "whole-secret",
        f'- objectName: "db"\n  secretPath: "{ALLOWED}"\n  <<: [{{secretKey: ""}}, {{secretKey: password}}]\n',
    ),
]


@pytest.mark.parametrize("objects_yaml", [m[1] for m in MERGE_KEYS], ids=[m[0] for m in MERGE_KEYS])
async def test_hole_yaml_merge_list_on_the_key(objects_yaml: str) -> None:
    answer = await pod_mounting(params(objects_yaml))
    assert answer["allowed"] is False, "the provider reads another key of secret/payments/db than password"


# The driver copies spec.parameters, then the volume's attributes, then (only when the CSIDriver has
# tokenRequests) the tokens: a class parameter csi.storage.k8s.io/serviceAccount.tokens reaches the provider
# unchanged on a driver without tokenRequests, and the provider logs in with the JWT in it instead of a token
# of the pod's ServiceAccount. kvinject refuses the key as a volume attribute, not as a class parameter.
TOKENS = {"csi.storage.k8s.io/serviceAccount.tokens": '{"vault":{"token":"eyJhbGciOi.not-a-real.jwt"}}'}


async def test_hole_class_parameter_speaks_for_the_pod() -> None:
    answer = await pod_mounting(params(**TOKENS))
    assert answer["allowed"] is False, "the provider would log in with the JWT stored in the class"
    assert "eyJhbGciOi" not in str(answer)


async def test_hole_class_parameter_speaks_for_the_pod_class_write() -> None:
    answer = await post("/validate", class_write(params(**TOKENS)), vault_cluster(), SETTINGS)
    assert answer["allowed"] is False, "a class carrying a ServiceAccount token is admitted"
    assert "eyJhbGciOi" not in str(answer)


# Azure classes are capped (64 KiB of objects, 256 entries) and refuse anchors/aliases before parsing; Vault
# classes are parsed whole by PyYAML's pure-Python safe_load, once per class write and again for every pod
# admission mounting them, synchronously on the event loop. Measured here (not asserted): ~1.5 MB of aliases
# ~11 s, ~1.6 MB of 18000 distinct entries (which the provider accepts) ~4.5 s, per class write and per pod,
# during which no other team's admission is answered.
def alias_flood(entries: int) -> str:
    head = f'- &a {{objectName: "db", secretPath: "{ALLOWED}", secretKey: "password"}}\n'
    return head + "- *a\n" * entries


def many_objects(entries: int) -> str:
    return "".join(
        f'- objectName: "db{i}"\n  secretPath: "{ALLOWED}{i}"\n  secretKey: "password"\n' for i in range(entries)
    )


FLOODS = [
    ("aliases", alias_flood(3)),
    ("more-than-256-objects", many_objects(300)),
    ("larger-than-64KiB", many_objects(1200)),
]


@pytest.mark.parametrize("flood", [f[1] for f in FLOODS], ids=[f[0] for f in FLOODS])
async def test_hole_unbounded_objects_class_write(flood: str) -> None:
    answer = await post("/validate", class_write(params(flood)), vault_cluster(), SETTINGS)
    assert answer["allowed"] is False, "Vault objects have no size cap and accept aliases (Azure's do not)"
    assert "objects" in answer["status"]["message"]


@pytest.mark.parametrize("flood", [f[1] for f in FLOODS], ids=[f[0] for f in FLOODS])
async def test_hole_unbounded_objects_pod(flood: str) -> None:
    answer = await pod_mounting(params(flood))
    assert answer["allowed"] is False, "Vault objects have no size cap and accept aliases (Azure's do not)"


# --- blocked (regressions) ----------------------------------------------------------------------------------

BLOCKED_CLASSES: list[tuple[str, dict[str, str], str]] = [
    ("forbidden-path", params(objects(FORBIDDEN)), "may not read secret/billing/db#password"),
    ("other-key", params(objects(ALLOWED, "api-key")), "may not read secret/payments/db#api-key"),
    ("whole-secret-without-key-glob-star", params(objects(ALLOWED, None)), "may not read secret/payments/db#*"),
    ("dot-dot", params(objects("secret/data/payments/../billing/db")), "cannot be judged"),
    ("percent-encoded-slash", params(objects("secret/data/payments%2F..%2Fbilling/db")), "cannot be judged"),
    ("double-slash", params(objects("secret/data//billing/db")), "cannot be judged"),
    ("trailing-slash", params(objects("secret/data/billing/db/")), "cannot be judged"),
    ("leading-slash", params(objects("/secret/data/billing/db")), "cannot be judged"),
    ("v1-prefix", params(objects("v1/secret/data/billing/db")), "cannot be judged"),
    ("query-version", params(objects(f"{ALLOWED}?version=1")), "cannot be judged"),
    ("metadata-endpoint", params(objects("secret/metadata/billing/db")), "cannot be judged"),
    ("kv1-style", params(objects("secret/billing/db")), "cannot be judged"),
    ("mount-case", params(objects("Secret/data/payments/db")), "may not read Secret/payments/db#password"),
    ("fragment-in-path", params(objects(f"{ALLOWED}#x")), "cannot be judged"),
    (
        "multi-document",
        params(objects() + "---\n" + objects(FORBIDDEN)),
        "objects has a document marker",
    ),
    ("binary-tag", params("- {objectName: db, secretPath: !!binary c2VjcmV0, secretKey: password}\n"), "cannot"),
    ("local-tag", params(f"- {{objectName: db, secretPath: !x {FORBIDDEN}, secretKey: password}}\n"), "cannot"),
    ("null-key", params(f"- {{objectName: db, secretPath: {ALLOWED}, secretKey: ~}}\n"), "cannot be judged"),
    ("secret-args", params(objects() + "  secretArgs: {version: 1}\n"), "secretArgs"),
    ("method-post", params(objects() + "  method: POST\n"), "uses method 'POST'"),
    ("lookalike-field", params(objects() + "  SecretPath: x\n"), "unknown fields SecretPath"),
    ("other-role", params(roleName="billing"), "logs in as role 'billing'"),
    ("other-mount", params(vaultAuthMountPath="k8s-east"), "logs in on auth mount 'k8s-east'"),
    (
        "both-mounts",
        params(vaultAuthMountPath="k8s-east", vaultKubernetesMountPath="kubernetes"),
        "sets both vaultKubernetesMountPath and vaultAuthMountPath",
    ),
    ("other-address", params(vaultAddress="https://evil.example:8200"), "reads from Vault at"),
    ("skip-tls", params(vaultSkipTLSVerify="1"), "vaultSkipTLSVerify"),
    ("token-file", params(KubernetesServiceAccountPath="/var/run/x/token"), "KubernetesServiceAccountPath"),
    ("enterprise-namespace", params(vaultNamespace="billing"), "vaultNamespace"),
]


@pytest.mark.parametrize(
    ("parameters", "message"), [b[1:] for b in BLOCKED_CLASSES], ids=[b[0] for b in BLOCKED_CLASSES]
)
async def test_blocked_hand_written_class(parameters: dict[str, str], message: str) -> None:
    answer = await pod_mounting(parameters)
    assert answer["allowed"] is False, answer
    assert message in answer["status"]["message"], answer["status"]["message"]


async def test_blocked_role_case_is_vaults_own() -> None:
    # Vault's Kubernetes auth stores and looks up roles lowercased (vault-plugin-auth-kubernetes backend.go
    # role(): strings.ToLower), so PAYMENTS is role payments there too: admitting it is exact, not a bypass.
    assert (await pod_mounting(params(roleName="PAYMENTS")))["allowed"] is True


ATTRIBUTES = [
    ("role", {"roleName": "billing"}, "logs in as role 'billing'"),
    ("objects", {"objects": objects(FORBIDDEN)}, "may not read secret/billing/db#password"),
    ("address", {"vaultAddress": "https://evil.example:8200"}, "reads from Vault at"),
    ("pod-info", {"csi.storage.k8s.io/serviceAccount.name": "billing"}, "would speak for the pod"),
    ("tokens", TOKENS, "would speak for the pod"),
]


@pytest.mark.parametrize(("attributes", "message"), [a[1:] for a in ATTRIBUTES], ids=[a[0] for a in ATTRIBUTES])
async def test_blocked_volume_attributes_even_when_allowed(attributes: dict[str, str], message: str) -> None:
    answer = await pod_mounting(params(), attributes=attributes)
    assert answer["allowed"] is False, answer
    assert message in answer["status"]["message"]
    assert "eyJhbGciOi" not in str(answer)


async def test_blocked_pod_role_annotation_for_a_role_not_federated() -> None:
    # The pod names role billing and a class of role billing: no policy for billing lists payments/vapi.
    answer = await pod_mounting(
        params(objects(FORBIDDEN), roleName="billing"), annotations={"kvinject.io/vault-role": "billing"}
    )
    assert answer["allowed"] is False
    assert "no SecretAccessPolicy grants role billing" in answer["status"]["message"], answer


async def test_blocked_service_account_without_a_role() -> None:
    answer = await pod_mounting(params(), account="api")
    assert answer["allowed"] is False
    assert "has no vault.kvinject.io/role annotation" in answer["status"]["message"]


# The same merge-key list through the other routes that read a hand-written Vault class: kvinject's own
# (enforced) route, a pod of store vault naming the class with kvinject.io/provider-class, and a Secret the
# class syncs, read by a pod's env.
def opted_in_pod(annotations: dict[str, str]) -> dict[str, Any]:
    pod = hand_written(service_account="vapi")
    pod["metadata"]["labels"] = {"kvinject.io/inject": "true"}
    pod["metadata"]["annotations"] = {"kvinject.io/store": "vault", **annotations}
    return pod


async def test_hole_yaml_merge_list_through_provider_class_annotation() -> None:
    cluster = vault_cluster()
    cluster.apply("ADDED", vault_class(params(MERGE_LIST)))
    pod = opted_in_pod({"kvinject.io/provider-class": "team-vault"})
    baseline = vault_cluster()
    baseline.apply("ADDED", vault_class(params(objects(FORBIDDEN))))
    refused = await post("/mutate", admission_review(pod), baseline, SETTINGS)
    assert refused["allowed"] is False, "the fixture: a class reading secret/billing/db is refused at /mutate"
    answer = await post("/mutate", admission_review(pod), cluster, SETTINGS)
    assert answer["allowed"] is False, "kvinject injects a class the provider reads as secret/billing/db"


async def test_hole_yaml_merge_list_through_a_synced_secret() -> None:
    cluster = vault_cluster()
    synced = vault_class(params(MERGE_LIST))
    synced["spec"]["secretObjects"] = [
        {"secretName": "team-db", "type": "Opaque", "data": [{"objectName": "db", "key": "password"}]}
    ]
    cluster.apply("ADDED", synced)
    env = [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "team-db", "key": "password"}}}]
    pod = hand_written(service_account="vapi", volumes=[csi_volume("team-vault")], env=env)
    answer = await post("/validate", admission_review(pod), cluster, SETTINGS)
    assert answer["allowed"] is False, "the synced Secret holds secret/billing/db as the provider reads it"


# A class changed after the pods reading it were admitted: the driver reads it again at the pod's first mount (a
# pod held Pending by spec.schedulingGates, which the app team removes afterwards, mounts only then) and at every
# rotation. kvinject judges a class write against the running pods of kvinject's that read through it; a pod
# that is not kvinject's (a hand-written Vault volume) is not among them, even with
# KVINJECT_NOT_OPTED_IN_ENFORCEMENT=enforce, so its class may be turned to any path of the role afterwards.
class Listed(FileCluster):
    """kvinject's seam `Cluster.namespace_pods`, answering with the pods given (as a listing of the namespace)."""

    pods: tuple[dict[str, Any], ...] = ()

    async def namespace_pods(self, namespace: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [dict(p) for p in self.pods if keep(p)]


def listed(*pods: dict[str, Any]) -> Listed:
    cluster = Listed.from_path(ROOT / "tests" / "golden" / "cluster-extra.yaml")
    assert isinstance(cluster, Listed)
    cluster.apply("ADDED", VAPI)
    cluster.apply("ADDED", POLICY)
    cluster.pods = pods
    return cluster


def running(pod: dict[str, Any], name: str) -> dict[str, Any]:
    pod["metadata"].update(name=name, namespace="payments")
    pod["status"] = {"phase": "Running"}
    return pod


async def test_blocked_class_turned_under_a_pod_of_kvinjects() -> None:
    pod = running(opted_in_pod({"kvinject.io/provider-class": "team-vault"}), "api-1")
    pod["spec"]["volumes"] = [csi_volume("team-vault", name="kvinject-secrets")]
    answer = await post("/validate", class_write(params(objects(FORBIDDEN)), "UPDATE"), listed(pod), SETTINGS)
    assert answer["allowed"] is False, answer
    assert "may not read secret/billing/db#password" in answer["status"]["message"]


async def test_hole_class_turned_under_a_hand_written_pod_when_enforced() -> None:
    pod = running(hand_written(service_account="vapi", volumes=[csi_volume("team-vault")]), "worker-1")
    assert (await pod_mounting(params()))["allowed"] is True  # the pod as admitted
    answer = await post("/validate", class_write(params(objects(FORBIDDEN)), "UPDATE"), listed(pod), SETTINGS)
    assert answer["allowed"] is False, "the running pod now reads secret/billing/db, under enforce"


# --- mode init: the kvinject-fetch init container of store vault, changed by the app team -------------------
INIT_SETTINGS = Settings(
    **{**SETTINGS.model_dump(), "init_image": "kvinject-fetch:test", "hashicorp_vault_ca_configmap": "vault-ca"}
)


async def injected_init() -> tuple[dict[str, Any], FileCluster]:
    cluster = vault_cluster()
    pod = opted_in_pod({"kvinject.io/mode": "init", "kvinject.io/secret-db": "secret/payments/db#password"})
    answer = await post("/mutate", admission_review(pod), cluster, INIT_SETTINGS)
    assert answer["allowed"] is True, answer
    final = apply(pod, review.decode_patch({"response": answer}))
    assert (await post("/validate", admission_review(final), cluster, INIT_SETTINGS))["allowed"] is True
    return final, cluster


def fetch(pod: dict[str, Any]) -> dict[str, Any]:
    (found,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "kvinject-fetch"]
    return found


def set_env(name: str, value: str) -> Any:
    def change(pod: dict[str, Any]) -> None:
        for e in fetch(pod)["env"]:
            if e["name"] == name:
                e["value"] = value

    return change


def add_env(name: str, value: str) -> Any:
    return lambda pod: fetch(pod)["env"].append({"name": name, "value": value})


INIT_TAMPERING = [
    ("other-role", set_env("KVINJECT_HASHICORP_VAULT_ROLE", "billing")),
    ("other-address", set_env("VAULT_ADDR", "https://evil.example:8200")),
    ("other-mount", set_env("KVINJECT_HASHICORP_VAULT_AUTH_MOUNT", "k8s-east")),
    ("store-azure", set_env("KVINJECT_STORE", "azure")),
    ("duplicate-role-last-wins", add_env("KVINJECT_HASHICORP_VAULT_ROLE", "billing")),
    ("vault-namespace", add_env("VAULT_NAMESPACE", "billing")),
    ("proxy", add_env("HTTPS_PROXY", "http://10.0.0.9:3128")),
    (
        "other-objects",
        set_env(
            "KVINJECT_OBJECTS",
            '[{"alias":"db","vault":"secret","name":"billing/db","type":"secret","version":"","key":"password"}]',
        ),
    ),
    ("env-from", lambda pod: fetch(pod).__setitem__("envFrom", [{"configMapRef": {"name": "mine"}}])),
    ("pod-role-annotation", lambda pod: pod["metadata"]["annotations"].__setitem__("kvinject.io/vault-role", "x")),
]


@pytest.mark.parametrize("change", [t[1] for t in INIT_TAMPERING], ids=[t[0] for t in INIT_TAMPERING])
async def test_blocked_init_container_tampering(change: Any) -> None:
    final, cluster = await injected_init()
    change(final)
    answer = await post("/validate", admission_review(final), cluster, INIT_SETTINGS)
    assert answer["allowed"] is False, answer
    assert "was changed after kvinject injected it" in answer["status"]["message"]


async def test_blocked_ephemeral_container_taking_the_vault_token() -> None:
    final, cluster = await injected_init()
    mounts = [{"name": "kvinject-azure-token", "mountPath": "/t", "readOnly": True}]
    doc = ephemeral_update(final, debugger(volumeMounts=mounts))
    answer = await post("/validate", doc, cluster, INIT_SETTINGS)
    assert answer["allowed"] is False, answer
    assert "kvinject-azure-token" in answer["status"]["message"]


TOKEN_FILE = "/var/run/secrets/kvinject/azure-token/azure-identity-token"
CA_FILE = "/var/run/secrets/kvinject/azure-token/ca.crt"


@pytest.mark.parametrize("path", [TOKEN_FILE, CA_FILE], ids=["token-file", "ca-file"])
async def test_observed_a_mount_over_kvinject_fetchs_token_or_ca_is_admitted(path: str) -> None:
    """Not a read outside policy (KVINJECT_OBJECTS, the role and VAULT_ADDR are fixed and judged), recorded as
    what kvinject admits today: another volume mounted over the file kvinject-fetch sends to Vault's login (a
    JWT of the team's choosing) or the CA it trusts (with spec.hostAliases, the pod's own token goes to a
    server of the team's choosing: a token the team can mint for itself anyway)."""
    final, cluster = await injected_init()
    final["spec"]["volumes"].append({"name": "mine", "secret": {"secretName": "mine"}})
    fetch(final)["volumeMounts"].append({"name": "mine", "mountPath": path, "subPath": "f", "readOnly": True})
    answer = await post("/validate", admission_review(final), cluster, INIT_SETTINGS)
    assert answer["allowed"] is True, answer


# PyYAML composes nested collections recursively: a few KiB of brackets in `objects` raise RecursionError, which
# is not a yaml.YAMLError, so it escapes classes._objects and reaches the app's last-resort handler (an
# "internal error" denial, status 500, and a stack trace in the webhook's log) on every write and every pod.
NESTED = [
    ("flow-lists", "[" * 3000 + "]" * 3000),
    ("flow-maps", "{a: " * 3000 + "x" + "}" * 3000),
    ("inside-an-entry", '- objectName: "db"\n  secretPath: ' + "[" * 3000 + "]" * 3000),
]


@pytest.mark.parametrize("nested", [n[1] for n in NESTED], ids=[n[0] for n in NESTED])
async def test_hole_deep_nesting_is_an_internal_error(nested: str) -> None:
    for answer in (
        await post("/validate", class_write(params(nested)), vault_cluster(), SETTINGS),
        await pod_mounting(params(nested)),
    ):
        assert answer["allowed"] is False
        assert "internal error" not in answer["status"]["message"], answer["status"]
        assert "cannot be judged as the Vault CSI provider reads it" in answer["status"]["message"]
