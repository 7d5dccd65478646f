"""While `kvinject serve` drains (after SIGTERM) it still answers, and closes each keep-alive connection after the
answer, so that clients holding connections to it (the apiserver, behind a ClusterIP) move to other replicas
before it exits (tests/node/test_ha.py shows the effect on a real node)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.harness import EXAMPLES, HANG_GUARD, ServeProcess, trust, wait_for


def test_draining_answers_close_their_connection(tmp_path: Path) -> None:
    env = {"KVINJECT_SHUTDOWN_DRAIN_SECONDS": "3600"}  # only the second signal ends it
    with ServeProcess(tmp_path, ["--cluster", str(EXAMPLES / "cluster.yaml")], env, log_level="INFO") as server:
        assert server.proc is not None
        with httpx.Client(verify=trust(server.issued.ca_file), timeout=10) as client:
            serving = client.get(server.url + "/healthz")
            assert serving.status_code == 200 and "connection" not in serving.headers  # keep-alive
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: client.get(server.url + "/readyz").status_code == 503, "readiness to go false")
            draining = client.get(server.url + "/healthz")
            assert draining.status_code == 200, "still serving"
            assert draining.headers["connection"] == "close"
        server.proc.send_signal(signal.SIGTERM)  # the second signal stops it now
        server.proc.wait(HANG_GUARD)
