"""Kubernetes API faults, on a control plane of this module's own (stopping it must not disturb others):
warm caches keep deciding while the apiserver is down or hung, watches resume and miss nothing, and a
cold start with the apiserver down is not ready and denies clearly within the timeout."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import (
    CLIENT_ID,
    HANG_GUARD,
    Binaries,
    ControlPlane,
    K,
    KvinjectServer,
    access_policy,
    admission_review,
    apply_docs,
    controller_pod,
    federated_namespace,
    install,
    serve_as_shipped,
    service_account_kubeconfig,
    wait_for,
)

OTHER = "99999999-8888-7777-6666-555555555555"


@pytest.fixture(scope="module")
def plane(e2e_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("faults"), binaries=e2e_binaries) as cp:
        cp.apply_crd(e2e_binaries.spc_crd)
        install(cp)
        yield cp


@pytest.fixture
def world(plane: ControlPlane) -> str:
    return federated_namespace(plane, "faults", {"fault-kv": ["db", "other"]})


@pytest.fixture
def server(plane: ControlPlane, world: str, tmp_path: Path) -> Iterator[KvinjectServer]:
    with serve_as_shipped(plane, tmp_path) as srv:
        yield srv
    assert "Traceback" not in srv.logs()


def admit(server: KvinjectServer, namespace: str, account: str = "api", obj: str = "db") -> dict[str, Any]:
    pod = controller_pod(annotations={K + "secret-x": f"fault-kv/{obj}"}, service_account=account)
    resp = httpx.post(
        f"{server.url}/mutate",
        verify=server.trust(),
        timeout=HANG_GUARD,  # kvinject answers misses within its API timeout; the message says which path ran
        headers={"Content-Type": "application/json"},
        content=orjson.dumps(admission_review(pod, namespace=namespace, dry_run=True)),
    )
    assert resp.status_code == 200
    answer: dict[str, Any] = resp.json()["response"]
    return answer


def test_apiserver_down_then_back(plane: ControlPlane, world: str, server: KvinjectServer) -> None:
    assert admit(server, world)["allowed"] is True
    plane.stop_apiserver()
    try:
        # Warm cache: decisions go on, and the process stays ready (it can still answer).
        assert admit(server, world)["allowed"] is True
        assert server.get("/readyz").status_code == 200
        unknown = admit(server, world, account="ghost")
        assert unknown["allowed"] is False and unknown["status"]["code"] == 503
        assert f"could not read ServiceAccount {world}/ghost" in unknown["status"]["message"]
    finally:
        plane.start_apiserver()
    # Changes right after the restart, while kvinject's watches are still reconnecting, must not be missed.
    plane.kubectl(
        "annotate", "--overwrite", "serviceaccount", "api", "-n", world, f"azure.workload.identity/client-id={OTHER}"
    )
    wait_for(
        lambda: (
            "no SecretAccessPolicy grants identity" in admit(server, world)["status"].get("message", "")
            if not admit(server, world)["allowed"]
            else False
        ),
        "the ServiceAccount change",
    )
    plane.kubectl(
        "annotate",
        "--overwrite",
        "serviceaccount",
        "api",
        "-n",
        world,
        f"azure.workload.identity/client-id={CLIENT_ID}",
    )
    wait_for(lambda: admit(server, world)["allowed"], "the ServiceAccount change back")
    apply_docs(plane, [access_policy(f"faults-{world}", [(world, "api")], {"fault-kv": ["other"]})])
    wait_for(lambda: not admit(server, world)["allowed"], "the policy change")
    assert "may not read fault-kv/db" in admit(server, world)["status"]["message"]


def test_hung_apiserver_keeps_warm_decisions_and_bounds_misses(
    plane: ControlPlane, world: str, server: KvinjectServer
) -> None:
    assert admit(server, world)["allowed"] is True
    pid = plane.apiserver_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        assert admit(server, world)["allowed"] is True
        unknown = admit(server, world, account="ghost")
        assert unknown["allowed"] is False and "could not read ServiceAccount" in unknown["status"]["message"]
    finally:
        os.kill(pid, signal.SIGCONT)
    apply_docs(plane, [access_policy(f"faults-{world}", [(world, "api")], {"fault-kv": ["other"]})])
    wait_for(lambda: not admit(server, world)["allowed"], "the policy change after the hang")


def test_cold_start_with_the_apiserver_down(plane: ControlPlane, world: str, tmp_path: Path) -> None:
    kubeconfig = service_account_kubeconfig(plane, tmp_path / "kubeconfig", "kvinject", "kvinject")
    plane.stop_apiserver()
    srv = KvinjectServer(tmp_path / "cold", kubeconfig)
    try:
        srv.start(probe="/healthz")
        assert srv.get("/readyz").status_code == 503
        answer = admit(srv, world)
        assert answer["allowed"] is False and answer["status"]["code"] == 503
        assert "the Kubernetes API did not answer" in answer["status"]["message"]
        plane.start_apiserver()
        srv.wait_ready("/readyz")  # no restart needed once the API is back
        assert admit(srv, world)["allowed"] is True
    finally:
        plane.start_apiserver()  # if the test stopped before it did
        srv.stop()
