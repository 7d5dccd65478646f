"""Smoke tests proving the e2e control plane is a real, working Kubernetes control plane."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness import ControlPlane, wait_for
from webhook.names import CLASS_GROUP

pytestmark = pytest.mark.e2e

T = TypeVar("T")

SPC_GROUP = CLASS_GROUP


@pytest.fixture
def core(kube_api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def _get_or_none(fn: Callable[..., T], *args: Any) -> T | None:
    try:
        return fn(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_new_namespace_gets_default_service_account(core: client.CoreV1Api, namespace: str) -> None:
    sa = wait_for(
        lambda: _get_or_none(core.read_namespaced_service_account, "default", namespace),
        f"ServiceAccount {namespace}/default",
    )
    assert sa.metadata.name == "default"
    # The root-ca-cert-publisher controller is running too.
    cm = wait_for(
        lambda: _get_or_none(core.read_namespaced_config_map, "kube-root-ca.crt", namespace),
        f"ConfigMap {namespace}/kube-root-ca.crt",
    )
    assert "BEGIN CERTIFICATE" in cm.data["ca.crt"]


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
  labels: {app: smoke}
spec:
  replicas: 2
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
    spec:
      containers:
      - name: main
        image: registry.invalid/kvinject/never-pulled:0
"""


def test_deployment_creates_replicaset_and_pending_pods(
    control_plane: ControlPlane, kube_api_client: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    # Pods need the namespace's default ServiceAccount (ServiceAccount admission plugin).
    wait_for(lambda: _get_or_none(core.read_namespaced_service_account, "default", namespace), "default SA")
    out = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    assert "deployment.apps/smoke" in out.stdout

    apps = client.AppsV1Api(kube_api_client)
    replicasets = wait_for(
        lambda: [
            rs
            for rs in apps.list_namespaced_replica_set(namespace).items
            if any(o.kind == "Deployment" and o.name == "smoke" for o in rs.metadata.owner_references or [])
        ],
        "a ReplicaSet owned by deployment smoke",
    )
    assert len(replicasets) == 1
    rs = replicasets[0]

    def two_pods_of_rs() -> list[client.V1Pod] | None:
        pods = [
            p
            for p in core.list_namespaced_pod(namespace, label_selector="app=smoke").items
            if any(o.uid == rs.metadata.uid for o in p.metadata.owner_references or [])
        ]
        return pods if len(pods) == 2 else None

    pods = wait_for(two_pods_of_rs, "2 pods owned by the ReplicaSet")
    for pod in pods:
        assert pod.metadata.generate_name == f"{rs.metadata.name}-"
        assert pod.metadata.name.startswith(pod.metadata.generate_name)
        assert pod.status.phase == "Pending"  # no kubelet, no scheduler
        assert pod.spec.node_name is None
        # ServiceAccount admission ran: default SA and the projected token volume.
        assert pod.spec.service_account_name == "default"
        projected = [v for v in pod.spec.volumes or [] if v.name.startswith("kube-api-access-")]
        assert projected and projected[0].projected is not None

    # kubectl sees the same thing.
    got = json.loads(control_plane.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
    assert len(got["items"]) == 2


def test_secret_provider_class_v1(kube_api_client: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(kube_api_client)
    body = {
        "apiVersion": f"{SPC_GROUP}/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "kv"},
        "spec": {
            "provider": "azure",
            "parameters": {
                "keyvaultName": "kv-smoke",
                "tenantId": "00000000-0000-0000-0000-000000000000",
                "clientID": "11111111-1111-1111-1111-111111111111",
                "objects": "array:\n  - |\n    objectName: db-password\n    objectType: secret\n",
            },
            "secretObjects": [
                {
                    "secretName": "db",
                    "type": "Opaque",
                    "data": [{"objectName": "db-password", "key": "password"}],
                }
            ],
        },
    }
    custom.create_namespaced_custom_object(SPC_GROUP, "v1", namespace, "secretproviderclasses", body)
    got = custom.get_namespaced_custom_object(SPC_GROUP, "v1", namespace, "secretproviderclasses", "kv")
    assert got["spec"]["provider"] == "azure"
    assert got["spec"]["parameters"]["keyvaultName"] == "kv-smoke"
    assert got["spec"]["secretObjects"][0]["data"][0]["key"] == "password"

    # The schema is enforced (structural CRD): provider must be a string.
    bad = dict(body, metadata={"name": "bad"}, spec=dict(body["spec"], provider=["not", "a", "string"]))
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(SPC_GROUP, "v1", namespace, "secretproviderclasses", bad)
    assert err.value.status == 422


def test_garbage_collector_deletes_orphaned_dependent(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="owner"))
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="dependent",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1",
                        kind="ServiceAccount",
                        name="owner",
                        uid=owner.metadata.uid,
                    )
                ],
            ),
            data={"k": "v"},
        ),
    )
    core.delete_namespaced_service_account("owner", namespace)
    wait_for(
        lambda: _get_or_none(core.read_namespaced_config_map, "dependent", namespace) is None,
        "ConfigMap 'dependent' to be garbage-collected",
    )


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def test_service_account_token_is_verifiable_with_issuer_jwks(
    control_plane: ControlPlane, core: client.CoreV1Api, namespace: str
) -> None:
    wait_for(lambda: _get_or_none(core.read_namespaced_service_account, "default", namespace), "default SA")
    audience = "api://AzureADTokenExchange"
    tr = core.create_namespaced_service_account_token(
        "default",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=3600)
        ),
    )
    header_b64, payload_b64, sig_b64 = tr.status.token.split(".")
    header = json.loads(_b64url(header_b64))
    claims = json.loads(_b64url(payload_b64))
    assert claims["iss"] == control_plane.issuer
    assert claims["aud"] == [audience]
    assert claims["sub"] == f"system:serviceaccount:{namespace}:default"

    discovery = control_plane.api_get("/.well-known/openid-configuration")
    assert discovery["issuer"] == control_plane.issuer
    assert discovery["jwks_uri"] == f"{control_plane.issuer}/openid/v1/jwks"
    jwks = control_plane.api_get("/openid/v1/jwks")
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    public_key = rsa.RSAPublicNumbers(
        int.from_bytes(_b64url(jwk["e"]), "big"), int.from_bytes(_b64url(jwk["n"]), "big")
    ).public_key()
    assert header["alg"] == "RS256"
    public_key.verify(
        _b64url(sig_b64),
        f"{header_b64}.{payload_b64}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
