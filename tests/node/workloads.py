"""Workloads for the node scenarios: Deployments as app teams write them, and what a user sees of their pods."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.harness import CLIENT_ID, TENANT_ID, ControlPlane, apply_docs, federated_namespace, get_json, wait_for
from tests.harness.cloud import AzureCloud
from webhook.names import CLASS_ATTRIBUTE, CSI_DRIVER, INJECT_LABEL, PREFIX

APP_UID, FS_GROUP = 1000, 2000
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def team_namespace(
    cp: ControlPlane, cloud: AzureCloud, prefix: str, allow: dict[str, list[str]], client_id: str = CLIENT_ID
) -> str:
    """A namespace whose ServiceAccount `api` is federated to `client_id` and allowed `allow` by a policy, with the
    cloud's CA ConfigMap for kvinject-fetch."""
    ns = federated_namespace(cp, prefix, allow, client_id)
    apply_docs(cp, [cloud.ca_configmap(ns)])
    cloud.federate(ns, "api", client_id)
    return ns


def deployment(
    namespace: str,
    name: str,
    annotations: dict[str, str],
    *,
    image: str,
    host_aliases: list[dict[str, Any]],
    command: tuple[str, ...] = ("sh", "-c", "sleep 3600"),
    inject: bool = True,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One replica of `image` as a non-root user (pod fsGroup), opted in to kvinject unless `inject` is false."""
    labels = {"app": name, **({INJECT_LABEL: "true"} if inject else {})}
    container: dict[str, Any] = {
        "name": "app",
        "image": image,
        "imagePullPolicy": "Never",
        "command": list(command),
        "securityContext": {"runAsUser": APP_UID, "runAsGroup": APP_UID, **RESTRICTED},
    }
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict[str, Any] = {
        "serviceAccountName": "api",
        "terminationGracePeriodSeconds": 1,
        "hostAliases": host_aliases,
        "securityContext": {"runAsNonRoot": True, "fsGroup": FS_GROUP},
        "containers": [container],
    }
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec},
        },
    }


def secret(name: str) -> str:
    return PREFIX + "secret-" + name


def pods(cp: ControlPlane, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cp, "pods", "-n", namespace, "-l", f"app={app}")["items"]
    return items


def running_pod(cp: ControlPlane, namespace: str, app: str) -> str:
    """The name of the app's pod once every container is ready."""

    def ready() -> str | None:
        for pod in pods(cp, namespace, app):
            statuses = pod.get("status", {}).get("containerStatuses") or []
            if statuses and all(s.get("ready") for s in statuses):
                return str(pod["metadata"]["name"])
        return None

    return wait_for(ready, f"a ready pod of {namespace}/{app}", context=lambda: describe(cp, namespace, app))


def describe(cp: ControlPlane, namespace: str, app: str) -> str:
    return cp.kubectl("describe", "pods", "-n", namespace, "-l", f"app={app}", check=False).stdout[-4000:]


def events(cp: ControlPlane, namespace: str, pod: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={pod}"
    items: list[dict[str, Any]] = get_json(cp, "events", "-n", namespace, "--field-selector", selector)["items"]
    return items


def read(cp: ControlPlane, namespace: str, pod: str, *command: str, container: str = "app") -> str:
    return cp.kubectl("exec", "-n", namespace, pod, "-c", container, "--", *command).stdout


def secret_data(cp: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    found = cp.kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return {}
    data = json.loads(found.stdout).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def objects_parameter(*names: str) -> str:
    """The Azure provider's `objects` parameter for secrets `names`."""
    return "array:\n" + "".join(f"  - |\n    objectName: {n}\n    objectType: secret\n" for n in names)


def azure_class(
    cloud: AzureCloud, namespace: str, name: str, vault: str, object_names: list[str], **parameters: str
) -> dict[str, Any]:
    """A SecretProviderClass as a Secrets Store CSI user writes it: the pod's workload identity, the test's cloud,
    the secrets `object_names` of `vault` (`parameters`, an `objects` among them, over that)."""
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": "azure",
            "parameters": {
                "clientID": CLIENT_ID,
                "tenantID": TENANT_ID,
                "keyvaultName": vault,
                **cloud_parameters(cloud),
                "objects": objects_parameter(*object_names),
                **parameters,
            },
        },
    }


def hand_written(
    cloud: AzureCloud, namespace: str, name: str, image: str, vault: str, objects: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Secrets Store CSI user's own SecretProviderClass and a pod mounting it at /mnt/secrets: what a pod looks
    like without kvinject."""
    volume = {
        "name": "kv",
        "csi": {"driver": CSI_DRIVER, "readOnly": True, "volumeAttributes": {CLASS_ATTRIBUTE: name}},
    }
    mount = {"name": "kv", "mountPath": "/mnt/secrets", "readOnly": True}
    workload = deployment(
        namespace, name, {}, image=image, host_aliases=[], inject=False, volumes=[volume], mounts=[mount]
    )
    return azure_class(cloud, namespace, name, vault, objects), pod_of(workload, name)


def cloud_parameters(cloud: AzureCloud) -> dict[str, str]:
    return {"cloudName": "AzureStackCloud", "cloudEnvFileName": str(cloud.env_file)}


def pod_of(template: dict[str, Any], name: str) -> dict[str, Any]:
    """A bare pod of a Deployment's template."""
    spec = template["spec"]["template"]
    metadata = {**spec["metadata"], "name": name, "namespace": template["metadata"]["namespace"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec["spec"]}
