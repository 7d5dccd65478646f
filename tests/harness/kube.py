"""kvinject on the e2e control plane as the shipped manifests install it, and the helpers that talk to the API.

- the shipped base (CRDs, Namespace, ServiceAccount, ClusterRole, bindings, policies) is applied from
  `manifests/` (`install`), and kvinject runs with a kubeconfig holding a token of that ServiceAccount (not
  admin), so the ClusterRole is proven sufficient (`serve_as_shipped`);
- the shipped webhook configurations are registered with only their clientConfig rewritten to
  `url: https://127.0.0.1:PORT/...` and the generated caBundle (`point_webhooks_at`), and the harness waits
  until the apiserver calls them (`wait_for_kvinject_webhooks`).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.harness.builders import CLIENT_ID, ROOT, TENANT_ID
from tests.harness.controlplane import ControlPlane
from tests.harness.serve import KvinjectServer, ServeProcess
from tests.harness.waiting import wait_for
from webhook.names import PREFIX

MANIFESTS = ROOT / "manifests"
K = PREFIX


def rendered_manifests(cp: ControlPlane) -> list[dict[str, Any]]:
    """`kubectl kustomize manifests/` with the built kubectl."""
    out = cp.kubectl("kustomize", str(MANIFESTS)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def pick(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") in kinds]


def apply_docs(cp: ControlPlane, docs: list[dict[str, Any]]) -> None:
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs))


def service_account_kubeconfig(cp: ControlPlane, path: Path, namespace: str, name: str) -> Path:
    """A kubeconfig that authenticates as namespace/name with a TokenRequest token."""
    token = cp.kubectl("create", "token", name, "-n", namespace, "--duration", "4h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sa",
        "clusters": [{"name": "e2e", "cluster": {"server": cp.url, "certificate-authority": str(cp.ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": "sa"}}],
    }
    path.write_text(yaml.safe_dump(config))
    os.chmod(path, 0o600)
    return path


def install(cp: ControlPlane) -> None:
    """The whole shipped base, for real (the API validates every object): `kubectl apply -k manifests/`. Without a
    kubelet its Deployment never runs; a local `kvinject serve` stands in for it (`serve_as_shipped`)."""
    cp.kubectl("apply", "-k", str(MANIFESTS))
    cp.kubectl("wait", "--for=condition=Established", "crd/secretaccesspolicies.kvinject.io")


def serve_as_shipped(cp: ControlPlane, workdir: Path, env: dict[str, str] | None = None) -> KvinjectServer:
    """A started `kvinject serve` authenticated as the shipped ServiceAccount kvinject/kvinject."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = service_account_kubeconfig(cp, workdir / "kvinject.kubeconfig", "kvinject", "kvinject")
    return KvinjectServer(workdir / "kvinject", kubeconfig, env=env).start()


@contextmanager
def serving_in_place_of(
    cp: ControlPlane, session: ServeProcess, workdir: Path, env: dict[str, str]
) -> Iterator[KvinjectServer]:
    """A kvinject serving as shipped with `env`, registered in place of the session's server, which gets the
    webhooks back afterwards; its log must hold no traceback."""
    server = serve_as_shipped(cp, workdir, env)
    point_webhooks_at(cp, server)
    try:
        yield server
    finally:
        point_webhooks_at(cp, session)
        server.stop()
        assert "Traceback" not in server.logs()


def webhook_configurations(docs: list[dict[str, Any]], url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Every shipped webhook configuration, pointed at a local URL; everything else as shipped."""
    configs = pick(docs, "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
    for config in configs:
        for hook in config["webhooks"]:
            path = hook["clientConfig"]["service"].get("path", "")
            hook["clientConfig"] = {"url": url + path, "caBundle": ca_bundle}
    return configs


def service_account(namespace: str, name: str, client_id: str) -> dict[str, Any]:
    """A ServiceAccount carrying a workload identity (client id) for kvinject to find."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"azure.workload.identity/client-id": client_id},
        },
    }


def get_json(cp: ControlPlane, *args: str) -> Any:
    return yaml.safe_load(cp.kubectl("get", *args, "-o", "json").stdout)


def pod_manifest(namespace: str, annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "probe-",
            "namespace": namespace,
            "labels": {K + "inject": "true"},
            "annotations": annotations,
        },
        "spec": {"serviceAccountName": "api", "containers": [{"name": "app", "image": "app:1"}], **spec},
    }


def create(cp: ControlPlane, doc: dict[str, Any], check: bool = True) -> Any:
    result = cp.kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(doc), check=check)
    return result if not check else yaml.safe_load(result.stdout)


def provider_classes(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cp, "secretproviderclasses", "-n", namespace)["items"]
    return items


def access_policy(
    name: str, accounts: list[tuple[str, str]], allow: dict[str, list[str]], client_id: str = CLIENT_ID
) -> dict[str, Any]:
    return {
        "apiVersion": "kvinject.io/v1alpha1",
        "kind": "SecretAccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "identity": {"clientId": client_id, "tenantId": TENANT_ID},
            "federatedServiceAccounts": [{"namespace": n, "name": a} for n, a in accounts],
            "allow": [{"vault": v, "objects": o} for v, o in allow.items()],
        },
    }


def federated_namespace(cp: ControlPlane, prefix: str, allow: dict[str, list[str]], client_id: str = CLIENT_ID) -> str:
    """A new namespace whose ServiceAccount `api` carries `client_id` (the test identity), granted `allow` by a
    policy."""
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", ns)
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "api",
            "namespace": ns,
            "annotations": {
                "azure.workload.identity/client-id": client_id,
                "azure.workload.identity/tenant-id": TENANT_ID,
            },
        },
    }
    apply_docs(cp, [account, access_policy(f"{prefix}-{ns}", [(ns, "api")], allow, client_id=client_id)])
    return ns


def dry_run(cp: ControlPlane, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cp.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(doc), check=False)


def wait_for_admission(
    cp: ControlPlane, doc: dict[str, Any], seen: Callable[[subprocess.CompletedProcess[str]], bool], what: str
) -> None:
    """The apiserver picks webhook configurations up asynchronously (an informer): instead of sleeping, dry-run
    `doc` until the answer shows the change took effect (or no longer does)."""
    wait_for(lambda: seen(dry_run(cp, doc)), what)


KVINJECT_PROBE_NAMESPACE = "default"


def _mutate_probe() -> dict[str, Any]:
    # The ServiceAccount admission plugin runs before webhooks: name one that exists.
    return pod_manifest(KVINJECT_PROBE_NAMESPACE, {K + "secret-probe": "!"}, serviceAccountName="default")


def _validate_probe() -> dict[str, Any]:
    pod = pod_manifest(KVINJECT_PROBE_NAMESPACE, {}, serviceAccountName="default")
    del pod["metadata"]["labels"]
    pod["spec"]["volumes"] = [
        {
            "name": "probe",
            "csi": {
                "driver": "secrets-store.csi.k8s.io",
                "readOnly": True,
                "volumeAttributes": {"secretProviderClass": "kvinject-webhook-probe-absent"},
            },
        }
    ]
    return pod


def answered(server: ServeProcess, endpoint: str) -> float:
    """How many admissions `server` has answered on `endpoint` (mutate or validate), from its own metrics."""
    prefix = f'kvinject_admissions_total{{endpoint="{endpoint}"'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in server.get("/metrics").text.splitlines() if line.startswith(prefix)
    )


CLASS_WEBHOOK = "kvinject-provider-classes"


def _class_probe() -> dict[str, Any]:
    """A node-identity SecretProviderClass: refused by kvinject's class webhook (dry runs only)."""
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "webhook-probe-class", "namespace": KVINJECT_PROBE_NAMESPACE},  # not reserved
        "spec": {"provider": "azure", "parameters": {"useVMManagedIdentity": "true", "keyvaultName": "probe-kv"}},
    }


@contextmanager
def class_webhook_removed(cp: ControlPlane) -> Iterator[None]:
    """The cluster as before kvinject was installed, for SecretProviderClasses only: classes that kvinject's class
    webhook refuses can be written (as they exist on clusters that had them first). Restored afterwards."""
    config = get_json(cp, "validatingwebhookconfiguration", CLASS_WEBHOOK)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        config["metadata"].pop(key, None)
    cp.kubectl("delete", "validatingwebhookconfiguration", CLASS_WEBHOOK)
    wait_for(lambda: dry_run(cp, _class_probe()).returncode == 0, f"{CLASS_WEBHOOK} to stop taking effect")
    try:
        yield
    finally:
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
        wait_for(lambda: dry_run(cp, _class_probe()).returncode != 0, f"{CLASS_WEBHOOK} to take effect again")


KVINJECT_WEBHOOKS = (
    ("mutatingwebhookconfiguration", "kvinject"),
    ("validatingwebhookconfiguration", "kvinject"),
    ("validatingwebhookconfiguration", CLASS_WEBHOOK),
)


@contextmanager
def kvinject_webhooks_removed(cp: ControlPlane, server: ServeProcess) -> Iterator[None]:
    """The cluster without kvinject (only the Secrets Store CSI driver, as before it was installed); kvinject's
    webhooks, sent to `server`, are back afterwards."""
    for kind, name in KVINJECT_WEBHOOKS:
        cp.kubectl("delete", kind, name)
    for probe in (_mutate_probe(), _validate_probe(), _class_probe()):
        wait_for(lambda probe=probe: dry_run(cp, probe).returncode == 0, "kvinject's webhooks to stop taking effect")
    try:
        yield
    finally:
        point_webhooks_at(cp, server, verb="create")


def wait_for_kvinject_webhooks(cp: ControlPlane, server: ServeProcess) -> None:
    """Until the apiserver sends every webhook's requests to `server` (after a configuration change)."""
    for endpoint, probe in (("mutate", _mutate_probe()), ("validate", _validate_probe()), ("validate", _class_probe())):

        def reached(endpoint: str = endpoint, probe: dict[str, Any] = probe) -> bool:
            before = answered(server, endpoint)
            dry_run(cp, probe)
            return answered(server, endpoint) > before

        wait_for(reached, f"the apiserver calling {server.url}/{endpoint}")


def wait_for_webhook_gone(cp: ControlPlane, probe: dict[str, Any], injected: Callable[[dict[str, Any]], bool]) -> None:
    """Until a deleted mutating webhook no longer changes `probe` (its `injected` test fails on the dry run)."""

    def gone() -> bool:
        result = dry_run(cp, probe)
        return result.returncode == 0 and not injected(json.loads(result.stdout))

    wait_for(gone, "a deleted webhook configuration to stop taking effect")


def point_webhooks_at(cp: ControlPlane, server: ServeProcess, verb: str = "replace") -> list[dict[str, Any]]:
    """The shipped webhook configurations, sent to `server` (`kubectl replace`, or `create` where they were
    deleted); returns once the apiserver calls `server` for each of them."""
    configs = webhook_configurations(rendered_manifests(cp), server.url, server.ca_bundle)
    cp.kubectl(verb, "-f", "-", input=yaml.safe_dump_all(configs))
    wait_for_kvinject_webhooks(cp, server)
    return configs


def mutating_configuration(
    name: str, webhook: str, url: str, ca_bundle: str, selector: dict[str, str], **settings: Any
) -> dict[str, Any]:
    """A MutatingWebhookConfiguration `name` calling `url` for the CREATE of pods labelled `selector`."""
    hook = {
        "name": webhook,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"url": url, "caBundle": ca_bundle},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        "objectSelector": {"matchLabels": selector},
        "failurePolicy": "Fail",
        "sideEffects": "None",
        **settings,
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [hook],
    }


@contextmanager
def mutating_webhook_in_effect(
    cp: ControlPlane, config: dict[str, Any], probe: dict[str, Any], changes: Callable[[dict[str, Any]], bool]
) -> Iterator[None]:
    """`config` applied and in effect until the block ends (a dry run of `probe` comes back as `changes` tells),
    then deleted and no longer in effect."""
    name = config["metadata"]["name"]
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
    try:
        wait_for(
            lambda: (r := dry_run(cp, probe)).returncode == 0 and changes(json.loads(r.stdout)),
            f"the mutating webhook configuration {name} in effect",
        )
        yield
    finally:
        cp.kubectl("delete", "mutatingwebhookconfiguration", name)
        wait_for_webhook_gone(cp, probe, changes)
