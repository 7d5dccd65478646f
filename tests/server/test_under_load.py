"""The real `kvinject serve` under constant load: graceful shutdown and certificate rotation lose nothing.

The load is an open-model loop (requests start on a fixed schedule, whatever the answers) over TLS with
keep-alive, on a few connections that are recycled, so new handshakes keep happening."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.helpers import EXAMPLES
from tests.loadgen import Load, constant_load
from tests.server.test_tls_server import served_certificate, trust
from tests.serving import ServeProcess
from webhook import certs


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, certs.Issued, Path]]:
    env = {"KVINJECT_CERT_RELOAD_SECONDS": "0.2", "KVINJECT_SHUTDOWN_DRAIN_SECONDS": "2"}
    server = ServeProcess(tmp_path, ["--cluster", str(EXAMPLES / "cluster.yaml")], env, log_level="INFO").start(20)
    assert server.proc is not None
    yield server.proc, server.port, server.issued, server.log_path
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def test_sigterm_under_load_loses_no_request(serve: tuple[subprocess.Popen[bytes], int, certs.Issued, Path]) -> None:
    proc, port, issued, log_path = serve
    url = f"https://127.0.0.1:{port}"

    async def scenario() -> tuple[Load, float, float]:
        load = Load()
        running = asyncio.create_task(constant_load(url + "/mutate", issued.ca_file, 200, 30, load))
        await asyncio.sleep(2)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # As endpoints would: stop sending new requests once readiness is gone (checked every 100 ms).
        async with httpx.AsyncClient(verify=trust(issued.ca_file), timeout=2) as probe:
            while (await probe.get(url + "/readyz")).status_code == 200:
                await asyncio.sleep(0.1)
        not_ready = time.monotonic() - signalled
        await asyncio.sleep(0.5)  # the endpoints controller and the apiserver take a moment to notice
        load.stop.set()
        await running
        return load, not_ready, signalled

    load, not_ready, signalled = asyncio.run(scenario())
    assert proc.wait(15) == 0, log_path.read_text()
    exited = time.monotonic() - signalled
    assert not_ready < 0.5, "readiness must go false first"
    assert load.sent > 400 and load.failures == [] and load.ok == load.sent, (load.sent, load.ok, load.failures[:5])
    assert 2.0 <= exited < 10, exited  # the drain, then a prompt exit
    assert "not ready; serving 2.0s more" in log_path.read_text()


def test_certificate_rotation_under_load_loses_no_request(
    serve: tuple[subprocess.Popen[bytes], int, certs.Issued, Path],
) -> None:
    _, port, issued, log_path = serve
    serials: list[int] = []

    async def scenario() -> Load:
        load = Load()
        running = asyncio.create_task(constant_load(f"https://127.0.0.1:{port}/mutate", issued.ca_file, 200, 8, load))
        for _ in range(3):
            await asyncio.sleep(2)
            renewed = await asyncio.to_thread(
                certs.issue, issued.cert_file.parent, ["kvinject.kvinject.svc"], ["127.0.0.1"]
            )
            serials.append(x509.load_pem_x509_certificate(renewed.cert_file.read_bytes()).serial_number)
        await running
        return load

    load = asyncio.run(scenario())
    assert load.sent > 1000 and load.failures == [] and load.ok == load.sent, (load.sent, load.failures[:5])
    assert served_certificate(port, issued.ca_file).serial_number == serials[-1]
    assert log_path.read_text().count("reloaded serving certificate") == 3


def test_second_signal_stops_at_once(serve: tuple[subprocess.Popen[bytes], int, certs.Issued, Path]) -> None:
    proc, *_ = serve
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(5)
    assert time.monotonic() - started < 1.5
