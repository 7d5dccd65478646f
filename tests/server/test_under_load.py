"""The real `kvinject serve` under constant load: graceful shutdown and certificate rotation lose nothing.

The load is an open-model loop (requests start on a fixed schedule, whatever the answers) over TLS with
keep-alive, on a few connections that are recycled, so new handshakes keep happening."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.harness import (
    EXAMPLES,
    HANG_GUARD,
    Load,
    ServeProcess,
    constant_load,
    served_certificate,
    trust,
    wait_for,
)
from webhook import certs

DRAIN_SECONDS = 5.0


async def until(predicate: Callable[[], bool], what: str) -> None:
    """wait_for in a thread, so that the load keeps running on this event loop meanwhile."""
    await asyncio.to_thread(wait_for, predicate, what, interval=0.05)


async def answers(load: Load, count: int, when: str) -> None:
    """Until `count` more requests are answered (or one failed: the test then reports it)."""
    target = load.ok + count
    await until(lambda: load.ok >= target or bool(load.failures), f"{count} answers {when}")


def start_server(tmp_path: Path, drain: float) -> ServeProcess:
    env = {"KVINJECT_CERT_RELOAD_SECONDS": "0.2", "KVINJECT_SHUTDOWN_DRAIN_SECONDS": str(drain)}
    return ServeProcess(tmp_path, ["--cluster", str(EXAMPLES / "cluster.yaml")], env, log_level="INFO").start()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    with start_server(tmp_path, DRAIN_SECONDS) as server:
        yield server


def test_sigterm_under_load_loses_no_request(serve: ServeProcess) -> None:
    """Readiness goes false while requests are still answered; every request sent until then succeeds.

    Driven by counts of answered requests, never by how many a second the machine manages.
    """
    proc, issued, log_path, url = serve.proc, serve.issued, serve.log_path, serve.url
    assert proc is not None

    async def scenario() -> tuple[Load, int, int]:
        load = Load()
        running = asyncio.create_task(constant_load(url + "/mutate", issued.ca_file, 200, HANG_GUARD, load))
        await until(lambda: load.ok >= 50, "50 answers before SIGTERM")
        proc.send_signal(signal.SIGTERM)
        # As endpoints would: stop sending new requests once readiness is gone.
        with httpx.Client(verify=trust(issued.ca_file), timeout=HANG_GUARD) as probe:
            await until(lambda: probe.get(url + "/readyz").status_code != 200, "readiness to go false")
        answered_when_not_ready = load.ok
        # The endpoints controller and the apiserver take a moment to notice: requests keep coming, and are answered.
        await until(lambda: load.ok >= answered_when_not_ready + 20 or bool(load.failures), "20 answers while draining")
        load.stop.set()
        await running
        return load, answered_when_not_ready, load.ok

    load, answered_when_not_ready, answered = asyncio.run(scenario())
    assert proc.wait(HANG_GUARD) == 0, log_path.read_text()
    assert load.failures == [] and load.ok == load.sent, (load.sent, load.ok, load.failures[:5])
    assert answered >= answered_when_not_ready + 20, "requests sent after readiness went false were answered"
    log = log_path.read_text()
    assert f"not ready; serving {DRAIN_SECONDS}s more" in log
    assert log.index(f"not ready; serving {DRAIN_SECONDS}s more") < log.index("Shutting down"), log


def test_certificate_rotation_under_load_loses_no_request(serve: ServeProcess) -> None:
    port, issued, log_path = serve.port, serve.issued, serve.log_path
    serials: list[int] = []

    async def scenario() -> Load:
        load = Load()
        running = asyncio.create_task(
            constant_load(f"https://127.0.0.1:{port}/mutate", issued.ca_file, 200, HANG_GUARD, load)
        )
        for rotation in range(1, 4):
            await answers(load, 100, "before a rotation")
            renewed = await asyncio.to_thread(
                certs.issue, issued.cert_file.parent, ["kvinject.kvinject.svc"], ["127.0.0.1"]
            )
            serials.append(x509.load_pem_x509_certificate(renewed.cert_file.read_bytes()).serial_number)
            await until(
                lambda n=rotation: log_path.read_text().count("reloaded serving certificate") >= n, f"reload {rotation}"
            )
        await answers(load, 100, "after the last rotation")
        load.stop.set()
        await running
        return load

    load = asyncio.run(scenario())
    assert load.failures == [] and load.ok == load.sent and load.ok >= 400, (load.sent, load.failures[:5])
    assert served_certificate(port, issued.ca_file).serial_number == serials[-1]
    assert log_path.read_text().count("reloaded serving certificate") == 3


def test_second_signal_stops_at_once(tmp_path: Path) -> None:
    """With a drain far longer than any hang guard, only the second signal can explain a prompt exit."""
    with start_server(tmp_path, drain=3600) as server:
        proc = server.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        wait_for(
            lambda: "not ready; serving 3600.0s more" in server.logs(), "the drain", interval=0.05, context=server.logs
        )
        assert proc.poll() is None, "the first signal only starts the drain"
        proc.send_signal(signal.SIGTERM)
        proc.wait(HANG_GUARD)
