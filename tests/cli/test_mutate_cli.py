"""`kvinject mutate` and `kvinject certs`: output documents and exit codes (0 allowed, 1 denied, 2 unusable)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from tests.harness import EXAMPLES, admission_review, controller_pod

CLUSTER = str(EXAMPLES / "cluster.yaml")


def kvinject(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], capture_output=True, text=True, input=stdin, timeout=60
    )


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("Deployment", ["spec", "template"]),
        ("StatefulSet", ["spec", "template"]),
        ("DaemonSet", ["spec", "template"]),
        ("Job", ["spec", "template"]),
        ("CronJob", ["spec", "jobTemplate", "spec", "template"]),
    ],
    ids=["deployment", "statefulset", "daemonset", "job", "cronjob"],
)
def test_mutates_every_workload_kind(tmp_path: Path, kind: str, path: list[str]) -> None:
    pod = controller_pod()
    template: dict = {
        "metadata": {"labels": pod["metadata"]["labels"], "annotations": pod["metadata"]["annotations"]},
        "spec": pod["spec"],
    }
    for key in reversed(path):
        template = {key: template}
    doc = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "api", "namespace": "payments"}, **template}
    f = tmp_path / "w.yaml"
    f.write_text(yaml.safe_dump(doc))
    result = kvinject("mutate", str(f), "--cluster", CLUSTER)
    assert result.returncode == 0, result.stderr
    workload, spc = list(yaml.safe_load_all(result.stdout))
    node = workload
    for key in path:
        node = node[key]
    assert node["metadata"]["annotations"]["kvinject.io/status"] == "injected"
    assert "generateName" not in node["metadata"]
    assert node["spec"]["volumes"][0]["csi"]["volumeAttributes"]["secretProviderClass"] == spc["metadata"]["name"]
    assert spc["kind"] == "SecretProviderClass" and spc["metadata"]["namespace"] == "payments"


def test_example_deployment_and_patch_mode() -> None:
    result = kvinject("mutate", str(EXAMPLES / "deployment-csi.yaml"), "--cluster", CLUSTER, "--patch")
    assert result.returncode == 0, result.stderr
    ops, spc = list(yaml.safe_load_all(result.stdout))
    # Relative to the Deployment as given, so that the patch applies to it.
    assert {"op": "add", "path": "/spec/template/metadata/annotations/kvinject.io~1status", "value": "injected"} in ops
    assert spc["spec"]["secretObjects"][0]["data"] == [{"objectName": "db-password", "key": "db-password"}]


def test_admission_review_input_from_stdin() -> None:
    doc = admission_review(controller_pod())
    result = kvinject("mutate", "-", "--cluster", CLUSTER, stdin=orjson.dumps(doc).decode())
    assert result.returncode == 0, result.stderr
    pod = next(yaml.safe_load_all(result.stdout))
    assert pod["kind"] == "Pod" and pod["spec"]["volumes"][0]["name"] == "kvinject-secrets"


def test_denied_exits_1_with_reason_on_stderr() -> None:
    result = kvinject("mutate", str(EXAMPLES / "deployment-denied.yaml"), "--cluster", CLUSTER)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "kvinject denied pod report-* in namespace payments: 2 annotation problems" in result.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("a: [", "unusable input"),
        ("kind: ConfigMap\nmetadata: {name: x}\n", "no Pod, workload"),
        ("- just\n- a list\n", "document 1 is not an object"),
        ('{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no request object"),
    ],
    ids=["bad-yaml", "no-pod", "not-an-object", "bad-review"],
)
def test_unusable_input_exits_2(tmp_path: Path, content: str, fragment: str) -> None:
    f = tmp_path / "in.yaml"
    f.write_text(content)
    result = kvinject("mutate", str(f), "--cluster", CLUSTER)
    assert result.returncode == 2 and fragment in result.stderr


def test_missing_file_and_bad_cluster_exit_2(tmp_path: Path) -> None:
    assert kvinject("mutate", str(tmp_path / "nope.yaml"), "--cluster", CLUSTER).returncode == 2
    bad = tmp_path / "cluster.yaml"
    bad.write_text("- not\n- objects\n")
    result = kvinject("mutate", str(EXAMPLES / "deployment-csi.yaml"), "--cluster", str(bad))
    assert result.returncode == 2 and "are not Kubernetes objects" in result.stderr


def test_certs_writes_ca_and_serving_cert_with_sans(tmp_path: Path) -> None:
    result = kvinject("certs", "--out", str(tmp_path), "--namespace", "platform")
    assert result.returncode == 0, result.stderr
    ca_pem = (tmp_path / "ca.crt").read_bytes()
    assert base64.b64decode(result.stdout.strip()) == ca_pem
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert {"kvinject.platform.svc", "kvinject.platform.svc.cluster.local"} <= set(
        sans.get_values_for_type(x509.DNSName)
    )
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))


def test_serve_without_certificates_exits_2(tmp_path: Path) -> None:
    result = kvinject(
        "serve", "--cluster", CLUSTER, "--cert-file", str(tmp_path / "x.crt"), "--key-file", str(tmp_path / "x.key")
    )
    assert result.returncode == 2 and "run `kvinject certs`" in result.stderr
