"""The real `kvinject serve` process over TLS: chain verification, TLS floor, certificate hot reload."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography import x509

from tests.harness import (
    EXAMPLES,
    ServeProcess,
    admission_review,
    controller_pod,
    free_port,
    served_certificate,
    trust,
    wait_for,
)
from webhook import certs


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, certs.Issued, Path]]:
    proc = ServeProcess(
        tmp_path,
        ["--cluster", str(EXAMPLES / "cluster.yaml")],
        {"KVINJECT_CERT_RELOAD_SECONDS": "0.2"},
        log_level="INFO",
    ).start()
    yield proc.port, proc.issued, proc.log_path
    proc.stop()


def test_serves_admission_over_verified_tls(server: tuple[int, certs.Issued, Path]) -> None:
    port, issued, _ = server
    with httpx.Client(verify=ssl.create_default_context(cafile=str(issued.ca_file))) as client:
        doc = admission_review(controller_pod(), uid="tls-1")
        resp = client.post(
            f"https://127.0.0.1:{port}/mutate", content=orjson.dumps(doc), headers={"Content-Type": "application/json"}
        )
    assert resp.status_code == 200
    assert resp.json()["response"]["uid"] == "tls-1" and resp.json()["response"]["allowed"] is True


def test_untrusted_client_fails_verification(server: tuple[int, certs.Issued, Path], tmp_path: Path) -> None:
    port, _, _ = server
    other = certs.issue(tmp_path / "other", ["x"], reuse_ca=False)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust(other.ca_file))


def test_refuses_tls_below_1_2(server: tuple[int, certs.Issued, Path]) -> None:
    port, _, _ = server
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client really offer TLS 1.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises((ssl.SSLError, OSError)),
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw),
    ):
        pass


def test_certificate_hot_reload(server: tuple[int, certs.Issued, Path]) -> None:
    port, issued, log_file = server
    before = served_certificate(port, issued.ca_file)
    renewed = certs.issue(issued.cert_file.parent, ["kvinject.kvinject.svc"], ips=["127.0.0.1"])
    expected = x509.load_pem_x509_certificate(renewed.cert_file.read_bytes())
    assert expected.serial_number != before.serial_number
    wait_for(
        lambda: served_certificate(port, issued.ca_file).serial_number == expected.serial_number,
        "the renewed certificate to be served",  # the reload interval is 0.2 s
        interval=0.1,
        context=log_file.read_text,
    )
    assert "reloaded serving certificate" in log_file.read_text()


def test_unreachable_api_means_not_ready_and_clear_denials(tmp_path: Path) -> None:
    """Cold start with the apiserver down: /readyz is 503 and admissions are denied with the reason, never hang."""
    dead = free_port()  # nothing listens here
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{dead}', insecure-skip-tls-verify: true}}}}]\n"
        "users: [{name: u, user: {token: not-a-real-token}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    proc = ServeProcess(tmp_path / "serve", ["--kubeconfig", str(kubeconfig)])
    try:
        proc.start(probe="/healthz")
        assert proc.get("/readyz").status_code == 503
        resp = httpx.post(
            f"{proc.url}/mutate",
            verify=proc.trust(),
            timeout=60,  # a hang guard: a dead port refuses at once
            content=orjson.dumps(admission_review(controller_pod(), uid="cold")),
            headers={"Content-Type": "application/json"},
        )
        answer = resp.json()["response"]
        assert answer["uid"] == "cold" and answer["allowed"] is False and answer["status"]["code"] == 503
        assert "could not read Namespace payments: the Kubernetes API did not answer" in answer["status"]["message"]
    finally:
        proc.stop()
    output = proc.logs()
    assert "not-a-real-token" not in output
