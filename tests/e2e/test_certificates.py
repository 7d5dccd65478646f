"""kvinject's certificates on the real control plane (docs/certificates.md).

- Mode self: two kvinject replicas keep one CA in their Secret, publish the caBundle into the shipped webhook
  configurations themselves, and rotate CA and leaf in seconds, while the apiserver admits pods through them without
  a single failure. They run as the shipped ServiceAccount (its Role and ClusterRole are what they may do). The
  mutating webhook calls one replica and the validating webhooks the other, so every admission needs both replicas'
  leaves to be trusted by what the apiserver holds at that moment.
- The cert-manager overlay, applied as shipped with cert-manager's own controller and cainjector running: a CA chain
  is issued, the CA injected, and renewing the serving certificate leaves the caBundle as it was. Its objects are
  also checked against the current cert-manager release's CRD schemas by the apiserver.
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness import (
    MANIFESTS,
    ControlPlane,
    K,
    Process,
    apply_docs,
    cache_dir,
    dry_run,
    federated_namespace,
    free_port,
    get_json,
    install,
    pick,
    pod_manifest,
    read_versions,
    rendered_manifests,
    service_account_kubeconfig,
    unavailable,
    wait_for,
)
from tests.harness.kube import answered
from tests.harness.serve import KvinjectServer
from webhook.rotation import signed_by as rotation_signed_by

SECRET = "kvinject-tls"
NAMESPACE = "kvinject"
CONFIGS = (
    ("mutatingwebhookconfiguration", "kvinject"),
    ("validatingwebhookconfiguration", "kvinject"),
    ("validatingwebhookconfiguration", "kvinject-provider-classes"),
)
# A CA lives 40 s and is replaced 25 s before its end; each step waits 6 s for the apiserver and the other replica
# (checks every second); a leaf lives 12 s. Bootstrap, then a full rotation every ~15 s.
FAST_ROTATION = {
    "KVINJECT_CERT_MODE": "self",
    "KVINJECT_POD_NAMESPACE": NAMESPACE,
    "KVINJECT_CERT_HOSTS": '["127.0.0.1"]',
    "KVINJECT_CERT_CA_LIFETIME_SECONDS": "40",
    "KVINJECT_CERT_CA_RENEW_BEFORE_SECONDS": "25",
    "KVINJECT_CERT_LEAF_LIFETIME_SECONDS": "12",
    "KVINJECT_CERT_LEAF_RENEW_BEFORE_SECONDS": "4",
    "KVINJECT_CERT_PROPAGATION_SECONDS": "6",
    "KVINJECT_CERT_CHECK_SECONDS": "1",
    "KVINJECT_CERT_RELOAD_SECONDS": "0.2",
    "KVINJECT_LOG_LEVEL": "INFO",
}


class SelfCertServer(KvinjectServer):
    """kvinject in certificate mode self: it serves a leaf of the CA in its Secret, not the harness's."""

    def trust(self) -> ssl.SSLContext:
        # Only the harness's readiness probe uses this (it reads a status code); what the replica serves is checked
        # by the apiserver against the published caBundle, and by served_leaf() below.
        return _unverified()


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def served_leaf(port: int) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        _unverified().wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def key_id(cert: x509.Certificate, *, issuer: bool) -> bytes:
    """The CA a leaf names as its issuer (issuer=True), or a CA's own key id."""
    if issuer:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        assert aki is not None
        return aki
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


@dataclass
class Observed:
    """What the test saw while the load ran."""

    admitted: int = 0
    failures: list[str] = field(default_factory=list)
    bundles: list[frozenset[bytes]] = field(default_factory=list)  # each distinct caBundle, in order (CA key ids)
    issuers: dict[int, list[bytes]] = field(default_factory=dict)  # per replica port: issuing CAs of its leaves
    leaves: dict[int, set[int]] = field(default_factory=dict)  # per replica port: serial numbers served
    errors: list[str] = field(default_factory=list)
    untrusted: list[str] = field(default_factory=list)  # a replica served a leaf whose CA was not in the bundle


def _record(seq: list[Any], value: Any) -> None:
    if not seq or seq[-1] != value:
        seq.append(value)


@pytest.fixture
def configurations_restored(control_plane: ControlPlane) -> Iterator[dict[str, Any]]:
    """kvinject installed, its webhook configurations restored afterwards as they were (the session's kvinject may
    own them), and its Secret absent before and after."""
    saved = []
    for kind, name in CONFIGS:
        found = control_plane.kubectl("get", kind, name, "-o", "json", check=False)
        if found.returncode == 0:
            config = yaml.safe_load(found.stdout)
            for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
                config["metadata"].pop(key, None)
            saved.append(config)
        # Pointed at a URL by the session's kvinject, they would not take the shipped `service` back by apply.
        control_plane.kubectl("delete", kind, name, "--ignore-not-found")
    install(control_plane)
    control_plane.kubectl("delete", "secret", SECRET, "-n", NAMESPACE, "--ignore-not-found")
    yield {"saved": saved}
    for kind, name in CONFIGS:
        control_plane.kubectl("delete", kind, name, "--ignore-not-found")
    # The base again over what a test applied (the cert-manager overlay's Secret volume): a later server-side
    # apply of the base (tests/node/test_ha.py) would keep a client-side apply's fields beside its own.
    install(control_plane)
    for kind, name in CONFIGS:
        control_plane.kubectl("delete", kind, name, "--ignore-not-found")
    if saved:
        control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump_all(saved))
        # Back in effect before the next test: an opted-in pod is refused (by kvinject, or for want of it).
        probe = pod_manifest("default", {K + "secret-probe": "!"}, serviceAccountName="default")
        wait_for(lambda: dry_run(control_plane, probe).returncode != 0, "the restored webhook configurations in effect")
    control_plane.kubectl("delete", "secret", SECRET, "-n", NAMESPACE, "--ignore-not-found")


def register(cp: ControlPlane, mutate_url: str, validate_url: str) -> None:
    """The shipped webhook configurations with only the address changed, and NO caBundle: kvinject writes it."""
    configs = pick(rendered_manifests(cp), "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
    for config in configs:
        url = mutate_url if config["kind"] == "MutatingWebhookConfiguration" else validate_url
        for hook in config["webhooks"]:
            hook["clientConfig"] = {"url": url + hook["clientConfig"]["service"]["path"]}
    for kind, name in CONFIGS:
        cp.kubectl("delete", kind, name, "--ignore-not-found")
    cp.kubectl("create", "-f", "-", input=yaml.safe_dump_all(configs))


def bundle_ids(cp: ControlPlane) -> set[frozenset[bytes]]:
    """The CAs (key ids) in each webhook's caBundle, over the three configurations."""
    out = set()
    for kind, name in CONFIGS:
        for hook in get_json(cp, kind, name)["webhooks"]:
            pem = base64.b64decode(hook["clientConfig"].get("caBundle", ""))
            out.add(
                frozenset(key_id(c, issuer=False) for c in x509.load_pem_x509_certificates(pem)) if pem else frozenset()
            )
    return out


@pytest.fixture
def replicas(
    control_plane: ControlPlane, configurations_restored: dict[str, Any], tmp_path: Path
) -> Iterator[list[SelfCertServer]]:
    """Two replicas of one Deployment, not started: same Secret, same settings; each its own port (in a cluster, one
    Service). Stopped before the configurations are restored (they would write the Secret and caBundles again)."""
    kubeconfig = service_account_kubeconfig(control_plane, tmp_path / "kvinject.kubeconfig", NAMESPACE, "kvinject")
    servers = [SelfCertServer(tmp_path / f"replica-{i}", kubeconfig, env=FAST_ROTATION) for i in range(2)]
    yield servers
    for server in servers:
        server.stop()
        assert "Traceback" not in server.logs()


def test_two_replicas_rotate_their_own_ca_under_load_with_no_failed_admission(
    control_plane: ControlPlane, kube_api_client: client.ApiClient, replicas: list[SelfCertServer]
) -> None:
    cp = control_plane
    a, b = replicas
    for kind, name in CONFIGS:
        cp.kubectl("delete", kind, name, "--ignore-not-found")
    a.start(probe="/healthz")  # serving (its leaf is in the Secret and loaded), but with nowhere to publish yet:
    assert (a.get("/readyz").status_code, a.get("/readyz").text) == (503, "caBundle not published yet")
    register(cp, a.url, b.url)
    a.wait_ready()
    b.start()  # returns once /readyz is 200: its leaf loaded and its CA published in all three

    # Published by kvinject, not by the test: every webhook carries the Secret's CAs.
    assert all(ids for ids in bundle_ids(cp))

    namespace = federated_namespace(cp, "rotate", {"rotate-kv": ["*:*"]})
    core = client.CoreV1Api(kube_api_client)
    admission = client.AdmissionregistrationV1Api(kube_api_client)
    seen = Observed()
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        pod = pod_manifest(namespace, {K + "secret-db": "rotate-kv/db"})
        while not stop.is_set():
            try:
                created = core.create_namespaced_pod(namespace, pod, dry_run="All")
                meta = created.metadata
                injected = meta is not None and (meta.annotations or {}).get(K + "status") == "injected"
                with lock:
                    if injected:
                        seen.admitted += 1
                    else:
                        seen.failures.append("admitted without injection")
            except ApiException as exc:
                with lock:
                    seen.failures.append(f"HTTP {exc.status}: {exc.body}")

    def watch() -> None:
        while not stop.is_set():
            try:
                hooks = admission.read_mutating_webhook_configuration("kvinject").webhooks or []
                pem = base64.b64decode(hooks[0].client_config.ca_bundle or "")
                bundle = frozenset(key_id(c, issuer=False) for c in x509.load_pem_x509_certificates(pem))
                _record(seen.bundles, bundle)
                for replica in replicas:
                    leaf = served_leaf(replica.port)
                    issuer = key_id(leaf, issuer=True)
                    _record(seen.issuers.setdefault(replica.port, []), issuer)
                    if issuer not in bundle:  # what the apiserver would refuse, seen from outside
                        seen.untrusted.append(f"replica {replica.port} serves a leaf of {issuer.hex()[:8]}")
                    seen.leaves.setdefault(replica.port, set()).add(leaf.serial_number)
            except (OSError, ValueError, ApiException) as exc:
                seen.errors.append(f"{type(exc).__name__}: {exc}")
            stop.wait(0.1)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(2)] + [
        threading.Thread(target=watch, daemon=True)
    ]
    for thread in threads:
        thread.start()

    def generation() -> int:
        meta = core.read_namespaced_secret(SECRET, NAMESPACE).metadata
        return int(((meta.annotations if meta else None) or {}).get("kvinject.io/ca-generation", "0"))

    def rotated_twice() -> bool:
        for replica in replicas:
            replica.check_alive()
        # 1: bootstrap; each full rotation adds a CA (+1) and drops the old one (+1).
        return generation() >= 5 and all(len(seen.issuers.get(r.port, [])) >= 3 for r in replicas)

    try:
        wait_for(rotated_twice, "two full CA rotations served by both replicas", timeout=600)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    sys.stderr.write(
        f"\n[e2e] {seen.admitted} admitted, {len(seen.failures)} failed; bundles {[len(b) for b in seen.bundles]};"
        f" leaves {[len(v) for v in seen.leaves.values()]}; CAs {[len(v) for v in seen.issuers.values()]}\n"
    )
    assert seen.untrusted == []
    assert seen.failures == [], (
        f"{len(seen.failures)} failed admissions of {seen.admitted + len(seen.failures)}:\n"
        + "\n".join(seen.failures[:10])
    )
    assert seen.admitted > 0
    for replica in replicas:
        issuers = seen.issuers[replica.port]
        # The leaf served changed, to one of a new CA each time, and old and new CA were both trusted meanwhile.
        assert len(seen.leaves[replica.port]) >= 3
        for old, new in itertools.pairwise(issuers):
            assert any({old, new} <= bundle for bundle in seen.bundles), (old.hex(), new.hex())
    assert max(len(bundle) for bundle in seen.bundles) == 2  # the overlap, and never more than two
    assert any(len(bundle) == 1 for bundle in seen.bundles[1:])  # ... and the old CA dropped after it
    for replica in replicas:
        logs = replica.logs()
        assert "Traceback" not in logs and "PRIVATE KEY" not in logs
        # The shipped Role and ClusterRole were enough: no read, watch or write was refused.
        assert "HTTP 403" not in logs and "certificate round failed" not in logs, logs[-3000:]
    # Each step was taken by one replica or the other (no leader), and logged.
    steps = a.logs() + b.logs()
    assert all(f"certificates: {step}" in steps for step in ("bootstrap", "add-ca", "promote", "drop-ca"))
    # The apiserver called each replica for its webhook.
    assert answered(a, "mutate") > 0 and answered(b, "validate") > 0


# --------------------------------------------------------------------------------------------------------------------
# The cert-manager overlay
# --------------------------------------------------------------------------------------------------------------------

OVERLAY = MANIFESTS / "overlays" / "cert-manager"


@dataclass(frozen=True)
class CertManager:
    controller: Path
    cainjector: Path
    crds: Path  # the CRDs of the release that runs
    current_crds: Path  # the current release's CRDs (schema check)


@pytest.fixture(scope="module")
def cert_manager_build() -> CertManager:
    """cert-manager's controller and cainjector and CRDs from tests/e2e/build_cert_manager.sh (`make e2e-binaries`)."""
    versions, cache = read_versions(), cache_dir()
    built = CertManager(
        controller=cache / "bin" / f"cert-manager-{versions['CERT_MANAGER_VERSION']}" / "controller",
        cainjector=cache / "bin" / f"cert-manager-{versions['CERT_MANAGER_VERSION']}" / "cainjector",
        crds=cache / "crds" / f"cert-manager-{versions['CERT_MANAGER_VERSION']}",
        current_crds=cache / "crds" / f"cert-manager-{versions['CERT_MANAGER_CRDS_VERSION']}",
    )
    missing = [p for p in (built.controller, built.cainjector, built.crds, built.current_crds) if not p.exists()]
    if missing:
        unavailable(f"cert-manager not built; run tests/e2e/build_cert_manager.sh. Missing: {missing}")
    return built


def apply_crds(cp: ControlPlane, directory: Path, workdir: Path) -> None:
    """Every CRD in `directory`, without the Helm templating some releases leave in their labels."""
    workdir.mkdir(parents=True, exist_ok=True)
    for path in sorted(directory.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "CustomResourceDefinition"]
        for doc in docs:
            doc["metadata"].pop("labels", None)
        if docs:
            cleaned = workdir / path.name
            cleaned.write_text(yaml.safe_dump_all(docs))
            cp.apply_crd(cleaned)


def certificate_ready(cp: ControlPlane, name: str) -> bool:
    status = get_json(cp, "certificate", name, "-n", NAMESPACE).get("status") or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def secret_cert(cp: ControlPlane, name: str, key: str = "tls.crt") -> x509.Certificate:
    data = get_json(cp, "secret", name, "-n", NAMESPACE)["data"]
    return x509.load_pem_x509_certificate(base64.b64decode(data[key]))


def ca_bundles(cp: ControlPlane, names: tuple[tuple[str, str], ...] = CONFIGS) -> list[bytes]:
    return [
        base64.b64decode(hook["clientConfig"].get("caBundle", ""))
        for kind, name in names
        for hook in get_json(cp, kind, name)["webhooks"]
    ]


def renew(cp: ControlPlane, name: str) -> None:
    """What `cmctl renew` does: the Issuing condition, set by hand on the Certificate's status."""
    condition = {"type": "Issuing", "status": "True", "reason": "ManuallyTriggered", "message": "renewal by the test"}
    patch = [{"op": "add", "path": "/status/conditions/-", "value": condition}]
    cp.kubectl(
        "patch", "certificate", name, "-n", NAMESPACE, "--subresource=status", "--type=json", "-p", json.dumps(patch)
    )


def test_cert_manager_overlay_issues_a_ca_chain_and_leaf_renewal_keeps_the_ca_bundle(
    control_plane: ControlPlane,
    cert_manager_build: CertManager,
    configurations_restored: dict[str, Any],
    tmp_path: Path,
) -> None:
    cp, cm = control_plane, cert_manager_build
    apply_crds(cp, cm.crds, tmp_path / "crds")
    kubeconfig = str(cp.kubeconfig)
    controllers = (
        "issuers,certificaterequests-approver,certificaterequests-issuer-ca,certificaterequests-issuer-selfsigned,"
        "certificates-trigger,certificates-issuing,certificates-key-manager,certificates-request-manager,"
        "certificates-readiness,certificates-revision-manager"
    )
    processes = [
        Process(
            "cert-manager-controller",
            [
                str(cm.controller),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                f"--controllers={controllers}",
                f"--metrics-listen-address=127.0.0.1:{free_port()}",
            ],
            tmp_path / "cert-manager-controller.log",
        ),
        Process(
            "cert-manager-cainjector",
            [str(cm.cainjector), f"--kubeconfig={kubeconfig}", "--leader-elect=false"],
            tmp_path / "cert-manager-cainjector.log",
        ),
    ]
    overlay = [d for d in yaml.safe_load_all(cp.kubectl("kustomize", str(OVERLAY)).stdout) if d]
    (deployment,) = pick(overlay, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "KVINJECT_CERT_MODE", "value": "files"} in container["env"]
    assert {"name": "certs", "secret": {"secretName": SECRET}} in pod["volumes"]

    def alive() -> None:
        for process in processes:
            process.check_alive()

    with processes[0], processes[1]:
        # As a user switching from the base would: `kubectl apply -k` (the volume changes type).
        cp.kubectl("apply", "-k", str(OVERLAY))
        for name in ("kvinject-ca", "kvinject-serving"):
            wait_for(lambda name=name: certificate_ready(cp, name), f"Certificate {name} Ready", alive=alive)
        ca = secret_cert(cp, "kvinject-ca")
        # A proper chain: a self-signed CA, and a serving certificate it signed (not its own CA any more).
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
        assert ca.issuer == ca.subject
        leaf = secret_cert(cp, SECRET)
        assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        assert rotation_signed_by(leaf, ca) and leaf.issuer == ca.subject
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [
            "kvinject.kvinject.svc",
            "kvinject.kvinject.svc.cluster.local",
        ]
        ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        assert secret_cert(cp, SECRET, "ca.crt") == ca

        # cainjector puts the CA (not the leaf) into every webhook of the three configurations.
        wait_for(
            lambda: all(b == ca_pem for b in ca_bundles(cp)), "the CA injected into kvinject's webhooks", alive=alive
        )

        renew(cp, "kvinject-serving")
        wait_for(
            lambda: secret_cert(cp, SECRET).serial_number != leaf.serial_number,
            "the serving certificate renewed",
            alive=alive,
        )
        renewed = secret_cert(cp, SECRET)
        assert rotation_signed_by(renewed, ca) and renewed.public_key() != leaf.public_key()  # rotationPolicy: Always

        # cainjector has caught up past the renewal once it injects a configuration made after it ...
        probe = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {
                "name": "cert-manager-probe",
                "annotations": {"cert-manager.io/inject-ca-from": "kvinject/kvinject-ca"},
            },
            "webhooks": [
                {
                    "name": "probe.kvinject.io",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {"url": "https://127.0.0.1:1/probe"},
                    "rules": [
                        {
                            "apiGroups": ["kvinject.io"],
                            "apiVersions": ["*"],
                            "operations": ["CREATE"],
                            "resources": ["nothing"],
                        }
                    ],
                    "sideEffects": "None",
                    "failurePolicy": "Ignore",
                }
            ],
        }
        apply_docs(cp, [probe])
        try:
            probed = (("validatingwebhookconfiguration", "cert-manager-probe"),)
            wait_for(
                lambda: ca_bundles(cp, probed) == [ca_pem], "cainjector to inject a later configuration", alive=alive
            )
            # ... and kvinject's caBundle is still the CA: the leaf's renewal changed nothing the apiserver trusts.
            assert all(b == ca_pem for b in ca_bundles(cp))
        finally:
            cp.kubectl("delete", "validatingwebhookconfiguration", "cert-manager-probe", "--ignore-not-found")
        for name in ("kvinject-ca", "kvinject-serving"):
            cp.kubectl("delete", "certificate", name, "-n", NAMESPACE)
        cp.kubectl("delete", "issuer", "kvinject-ca", "kvinject-selfsigned", "-n", NAMESPACE)
        cp.kubectl("delete", "secret", "kvinject-ca", "-n", NAMESPACE, "--ignore-not-found")
    for process in processes:
        assert "panic" not in process.logs()


def test_cert_manager_overlay_objects_match_the_current_release_schemas(
    control_plane: ControlPlane, cert_manager_build: CertManager, tmp_path: Path
) -> None:
    """The overlay's cert-manager objects, validated by the apiserver against the current release's CRDs (server-side
    dry run); a wrong field is refused, so the check is the schema's."""
    cp = control_plane
    apply_crds(cp, cm_crds := cert_manager_build.current_crds, tmp_path / "crds")
    assert cm_crds.name.endswith(read_versions()["CERT_MANAGER_CRDS_VERSION"])
    cp.kubectl("create", "namespace", NAMESPACE, check=False)
    objects = [
        d for d in yaml.safe_load_all((MANIFESTS / "components" / "cert-manager" / "certificate.yaml").read_text()) if d
    ]
    assert sorted(d["kind"] for d in objects) == ["Certificate", "Certificate", "Issuer", "Issuer"]
    result = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objects), check=False)
    assert result.returncode == 0, result.stderr
    broken = json.loads(json.dumps(next(d for d in objects if d["metadata"]["name"] == "kvinject-ca")))
    broken["spec"]["privateKey"]["algorithm"] = "DSA"
    refused = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert refused.returncode != 0 and "algorithm" in refused.stderr
