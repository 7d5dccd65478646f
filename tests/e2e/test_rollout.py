"""Installing kvinject on a cluster that already runs Secrets Store CSI workloads, on a control plane of this
module's own (it installs kvinject from nothing): no creation fails before, while or after the shipped manifests
are applied (kvinject unreachable first, then ready); kvinject's pods fail closed while it is unreachable and the
others do not; once it is ready the violating workloads are admitted with KvinjectWouldDeny events and metrics;
kvinject.io/ annotations without the opt-in label are warned about; a namespace labelled enforce, and separately
KVINJECT_NOT_OPTED_IN_ENFORCEMENT=enforce, deny the violating pod (docs/rollout.md, step by step)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import (
    CLIENT_ID,
    MANIFESTS,
    TENANT_ID,
    Binaries,
    ControlPlane,
    K,
    KvinjectServer,
    access_policy,
    apply_docs,
    dry_run,
    get_json,
    hygiene,
    pick,
    rendered_manifests,
    service_account_kubeconfig,
    wait_for,
    webhook_configurations,
)
from tests.harness.kube import answered
from webhook.names import EVENT_DENIED, EVENT_IGNORED, EVENT_WOULD_DENY

NOT_OPTED_IN = "KVINJECT_NOT_OPTED_IN_ENFORCEMENT"
ENFORCE_ALL = MANIFESTS / "overlays" / "enforce-all"
NODE_IDENTITY = "reads with the node's managed identity (useVMManagedIdentity), which is not allowed"
OBJECTS = "array:\n  - |\n    objectName: db\n    objectType: secret\n"


def provider_class(namespace: str, name: str, **parameters: str) -> dict[str, Any]:
    params = {"keyvaultName": "team-kv", "tenantId": TENANT_ID, "objects": OBJECTS, **parameters}
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"provider": "azure", "parameters": params},
    }


def csi(provider_class: str) -> dict[str, Any]:
    attributes = {"secretProviderClass": provider_class}
    return {
        "name": "secrets",
        "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": True, "volumeAttributes": attributes},
    }


def pod_spec(provider_class: str | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"serviceAccountName": "api", "containers": [{"name": "app", "image": "a:1"}], **extra}
    if provider_class:
        spec["volumes"] = [csi(provider_class)]
    return spec


def pod(
    namespace: str, spec: dict[str, Any], labels: dict[str, str] | None = None, **annotations: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {"generateName": "manual-", "namespace": namespace}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": name}}, "spec": pod_spec("node-spc")}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template},
    }


class Creator(threading.Thread):
    """A team that keeps creating its hand-written CSI pods (one that its policy allows, one that kvinject would
    deny) while the platform installs kvinject; every failure is kept, with the phase it happened in."""

    def __init__(self, cp: ControlPlane, namespace: str):
        super().__init__(name="creator", daemon=True)
        from kubernetes import client, config

        self.api = client.CoreV1Api(config.new_client_from_config(config_file=str(cp.kubeconfig)))
        self.docs = [pod(namespace, pod_spec("own")), pod(namespace, pod_spec("node-spc"))]
        self.namespace = namespace
        self.phase = "before"
        self.created: dict[str, int] = {}
        self.failures: list[tuple[str, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while not self.stopping.is_set():
            for doc in self.docs:
                phase = self.phase
                try:
                    self.api.create_namespaced_pod(self.namespace, doc)
                except ApiException as exc:
                    self.failures.append((phase, f"{exc.status} {exc.body}"))
                else:
                    self.created[phase] = self.created.get(phase, 0) + 1
            self.stopping.wait(0.05)  # pacing on a shared machine, not a measurement

    def more(self, phase: str, count: int = 4) -> None:
        """Until `count` more pods were created in `phase` (it is the current one)."""
        self.phase = phase
        wait_for(lambda: self.created.get(phase, 0) >= count or self.failures, f"{count} creations while {phase}")

    def stop(self) -> None:
        self.stopping.set()
        self.join()


@dataclass
class Installed:
    cp: ControlPlane
    team: str
    server: KvinjectServer
    creator: Creator
    configs: list[dict[str, Any]]
    while_unreachable: dict[str, str] = field(default_factory=dict)  # probe -> "" when admitted, else the error


def kvinjects_probes(team: str) -> dict[str, dict[str, Any]]:
    """Pods that are kvinject's (webhook/rollout.py): sent to webhooks that fail closed."""
    reads_synced = {"containers": [{"name": "a", "image": "a", "envFrom": [{"secretRef": {"name": "kvinject-x"}}]}]}
    return {
        "opted-in": pod(team, pod_spec(), {K + "inject": "true"}, **{K + "secret-db": "team-kv/db"}),
        "inject-yes": pod(team, pod_spec(), {K + "inject": "yes"}),
        "mounts-generated-class": pod(team, pod_spec("kvinject-api-0000")),
        "reads-synced-secret": pod(team, pod_spec(**reads_synced)),
    }


def others_probes(team: str) -> dict[str, dict[str, Any]]:
    """Pods that are not kvinject's: sent to validate-others.kvinject.io, which fails open."""
    reads = {"containers": [{"name": "a", "image": "a", "envFrom": [{"secretRef": {"name": "db"}}]}]}
    return {
        "node-identity-class": pod(team, pod_spec("node-spc")),
        "reads-a-secret": pod(team, pod_spec(**reads)),
        "annotations-without-label": pod(team, pod_spec(), **{K + "secret-db": "team-kv/db"}),
    }


@pytest.fixture(scope="module")
def installed(e2e_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    workdir = tmp_path_factory.mktemp("rollout")
    with ControlPlane(workdir / "cp", binaries=e2e_binaries) as cp:
        cp.apply_crd(e2e_binaries.spc_crd)
        # A team's hand-written Secrets Store CSI workloads, before kvinject.
        team = f"team-{uuid.uuid4().hex[:6]}"
        cp.kubectl("create", "namespace", team)
        account = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": "api",
                "namespace": team,
                "annotations": {
                    "azure.workload.identity/client-id": CLIENT_ID,
                    "azure.workload.identity/tenant-id": TENANT_ID,
                },
            },
        }
        own = provider_class(team, "own", clientID=CLIENT_ID)
        node = provider_class(team, "node-spc", useVMManagedIdentity="true")
        apply_docs(cp, [account, own, node, deployment(team, "legacy", 1)])
        creator = Creator(cp, team)
        creator.start()
        try:
            creator.more("before")
            # kvinject's manifests, its webhooks sent to a server that does not run yet.
            # The shipped default for what is not kvinject's, whatever the test environment says.
            env = {"KVINJECT_TENANT_ID": TENANT_ID, NOT_OPTED_IN: "audit"}
            server = KvinjectServer(workdir / "kvinject", workdir / "kvinject.kubeconfig", env)
            docs = rendered_manifests(cp)
            configs = webhook_configurations(docs, server.url, server.ca_bundle)
            creator.phase = "installing"
            apply_docs(cp, docs)
            cp.kubectl("wait", "--for=condition=Established", "crd/secretaccesspolicies.kvinject.io")
            probes = kvinjects_probes(team)
            wait_for(
                lambda: "failed calling webhook" in dry_run(cp, probes["opted-in"]).stderr,
                "the apiserver calling kvinject's (unreachable) webhooks",
            )
            creator.more("unreachable")
            result = Installed(cp, team, server, creator, configs)
            for name, doc in {**probes, **others_probes(team)}.items():
                answer = dry_run(cp, doc)
                result.while_unreachable[name] = "" if answer.returncode == 0 else answer.stderr
            # The platform grants the team's identity what it reads, then kvinject starts.
            apply_docs(cp, [access_policy(f"team-{team}", [(team, "api")], {"team-kv": ["*"]})])
            service_account_kubeconfig(cp, server.kubeconfig, "kvinject", "kvinject")
            server.start()
            wait_for(lambda: answered(server, "validate") > 0, "the apiserver calling kvinject")
            creator.more("ready")
        finally:
            creator.stop()
        yield result
        server.stop()
        assert "Traceback" not in server.logs()
        # kvinject's events on this control plane hold names only (the session's hygiene scan covers its own).
        assert not hygiene.leaks("events", cp.kubectl("get", "events", "-A", "-o", "json").stdout)


def test_no_creation_failed_before_while_or_after_installing(installed: Installed) -> None:
    assert installed.creator.failures == []
    assert all(installed.creator.created.get(p, 0) >= 4 for p in ("before", "unreachable", "ready"))


def test_while_unreachable_kvinjects_pods_fail_closed_and_the_others_are_admitted(installed: Installed) -> None:
    seen = installed.while_unreachable
    for name in kvinjects_probes(installed.team):
        assert "failed calling webhook" in seen[name] and ".kvinject.io" in seen[name], (name, seen[name])
    assert {name: seen[name] for name in others_probes(installed.team)} == dict.fromkeys(others_probes(""), "")


def events(cp: ControlPlane, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in get_json(cp, "events", "-n", namespace)["items"] if e.get("reason") == reason]


def scale(cp: ControlPlane, namespace: str, name: str, replicas: int) -> None:
    cp.kubectl("scale", "deployment", name, "-n", namespace, f"--replicas={replicas}")


def test_once_ready_violations_are_admitted_with_events_and_metrics(installed: Installed) -> None:
    cp, team = installed.cp, installed.team

    # A bare pod: the event names the pod itself, with the uid the validating webhook saw.
    def on_a_pod() -> dict[str, Any] | None:
        return next((e for e in events(cp, team, EVENT_WOULD_DENY) if e["involvedObject"]["kind"] == "Pod"), None)

    event = wait_for(on_a_pod, "a KvinjectWouldDeny event on a hand-written pod")
    stored = get_json(cp, "pod", event["involvedObject"]["name"], "-n", team)
    assert event["involvedObject"].get("uid") == stored["metadata"]["uid"]
    assert NODE_IDENTITY in event["message"] and "(audit mode; enforce denies it)" in event["message"]
    assert event["type"] == "Warning" and event["source"]["component"] == "kvinject"

    # A Deployment's pods: one event on its ReplicaSet, counted.
    scale(cp, team, "legacy", 3)

    def on_the_replicaset() -> dict[str, Any] | None:
        found = [e for e in events(cp, team, EVENT_WOULD_DENY) if e["involvedObject"]["kind"] == "ReplicaSet"]
        return next((e for e in found if e.get("count", 0) >= 2), None)

    event = wait_for(on_the_replicaset, "a KvinjectWouldDeny event on the ReplicaSet, counting both pods")
    assert event["involvedObject"]["name"].startswith("legacy-") and NODE_IDENTITY in event["message"]
    wait_for(lambda: len(get_json(cp, "pods", "-n", team, "-l", "app=legacy")["items"]) == 3, "the Deployment's 3 pods")

    metrics = installed.server.get("/metrics").text
    line = f'kvinject_would_deny_total{{enforcement="audit",namespace="{team}",reason="provider-class"}} '
    assert any(x.startswith(line) and float(x.rsplit(" ", 1)[1]) >= 2 for x in metrics.splitlines()), metrics


def test_annotations_without_the_opt_in_label_are_warned_about(installed: Installed) -> None:
    cp, team = installed.cp, installed.team
    for labels, says in (({}, 'but not the label kvinject.io/inject: "true"'), ({K + "inject": "yes"}, "'yes'")):
        doc = pod(team, pod_spec(), labels, **{K + "secret-db": "team-kv/db"})
        created = cp.kubectl("create", "-o", "name", "-f", "-", input=yaml.safe_dump(doc))
        warnings = [line for line in created.stderr.splitlines() if line.startswith("Warning:")]
        assert any(says in w and "kvinject injects nothing" in w for w in warnings), created.stderr
    # A controller's pods: the warning goes nowhere, the event on the ReplicaSet says it.
    ignored = deployment(team, "ignored", 1)
    ignored["spec"]["template"]["spec"] = pod_spec()
    ignored["spec"]["template"]["metadata"]["annotations"] = {K + "secret-db": "team-kv/db"}
    apply_docs(cp, [ignored])
    wait_for(
        lambda: any(e["involvedObject"]["name"].startswith("ignored-") for e in events(cp, team, EVENT_IGNORED)),
        "a KvinjectAnnotationsIgnored event on the ReplicaSet",
    )


def violating_pod_refused(cp: ControlPlane, team: str) -> str:
    """Until the violating pod is refused (kvinject's caches follow the change); its error."""

    def refused() -> str:
        result = cp.kubectl("create", "-f", "-", input=yaml.safe_dump(pod(team, pod_spec("node-spc"))), check=False)
        return "" if result.returncode == 0 else result.stderr

    message = wait_for(refused, "the violating pod to be denied")
    assert 'admission webhook "validate-others.kvinject.io" denied the request' in message, message
    assert NODE_IDENTITY in message
    return message


def test_a_namespace_labelled_enforce_denies_its_violating_pods(installed: Installed) -> None:
    cp, team = installed.cp, installed.team
    cp.kubectl("label", "namespace", team, f"{K}enforcement=enforce")
    try:
        violating_pod_refused(cp, team)
        # Where a Deployment's denial shows: the ReplicaSet's FailedCreate, and kvinject's own event beside it.
        scale(cp, team, "legacy", 4)

        def failed_create() -> list[dict[str, Any]]:
            return [
                e
                for e in events(cp, team, "FailedCreate")
                if "validate-others.kvinject.io" in e["message"] and NODE_IDENTITY in e["message"]
            ]

        wait_for(failed_create, "the ReplicaSet's FailedCreate naming kvinject's denial")

        # (the bare pod refused above has one too, on the pod by name: it never existed)
        def on_the_replicaset() -> list[dict[str, Any]]:
            found = events(cp, team, EVENT_DENIED)
            return [e for e in found if e["involvedObject"]["kind"] == "ReplicaSet" and NODE_IDENTITY in e["message"]]

        (denied, *_) = wait_for(on_the_replicaset, "kvinject's KvinjectDenied event on the ReplicaSet")
        assert denied["involvedObject"]["name"].startswith("legacy-") and denied["source"]["component"] == "kvinject"
        on_the_pod = [e for e in events(cp, team, EVENT_DENIED) if e["involvedObject"]["kind"] == "Pod"]
        assert on_the_pod and all(NODE_IDENTITY in e["message"] for e in on_the_pod)
    finally:
        scale(cp, team, "legacy", 3)
        cp.kubectl("label", "namespace", team, f"{K}enforcement-")


def test_the_server_setting_enforces_everywhere(installed: Installed, tmp_path: Path) -> None:
    """docs/rollout.md's last step, manifests/overlays/enforce-all: KVINJECT_NOT_OPTED_IN_ENFORCEMENT=enforce, and
    the webhooks for what is not kvinject's fail closed."""
    cp, team = installed.cp, installed.team
    overlay = [d for d in yaml.safe_load_all(cp.kubectl("kustomize", str(ENFORCE_ALL)).stdout) if d]
    ((container,),) = [d["spec"]["template"]["spec"]["containers"] for d in pick(overlay, "Deployment")]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[NOT_OPTED_IN] == "enforce"
    kubeconfig = service_account_kubeconfig(cp, tmp_path / "kubeconfig", "kvinject", "kvinject")
    with KvinjectServer(
        tmp_path / "kvinject", kubeconfig, {"KVINJECT_TENANT_ID": TENANT_ID, NOT_OPTED_IN: env[NOT_OPTED_IN]}
    ) as enforcing:
        configs = webhook_configurations(overlay, enforcing.url, enforcing.ca_bundle)
        assert {h["failurePolicy"] for c in configs for h in c["webhooks"]} == {"Fail"}
        apply_docs(cp, configs)
        try:
            violating_pod_refused(cp, team)
            created = cp.kubectl("create", "-o", "name", "-f", "-", input=yaml.safe_dump(pod(team, pod_spec("own"))))
            assert created.stdout.startswith("pod/")
        finally:
            apply_docs(cp, installed.configs)
            # Back to the audit-first kvinject: the violating pod is admitted again.
            wait_for(
                lambda: dry_run(cp, pod(team, pod_spec("node-spc"))).returncode == 0,
                "the audit-first kvinject again",
            )
    assert "Traceback" not in enforcing.logs()


def test_the_rendered_base_is_what_was_installed(installed: Installed) -> None:
    """The split the tests above exercise is the shipped one (nothing but clientConfig rewritten)."""
    names = [h["name"] for c in pick(installed.configs, "ValidatingWebhookConfiguration") for h in c["webhooks"]]
    assert sorted(names) == sorted(
        [
            "validate.kvinject.io",
            "validate-others.kvinject.io",
            "validate-classes.kvinject.io",
            "validate-classes-others.kvinject.io",
        ]
    )
