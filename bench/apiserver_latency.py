"""Pod-create latency through the real kube-apiserver, without and with kvinject registered.

Starts the e2e control plane (etcd, kube-apiserver, kube-controller-manager from their Go modules),
then creates the same opted-in pods through the API (HTTP/1.1 keep-alive, one at a time) first
with no webhook, then with kvinject's shipped Mutating and Validating configurations pointing at a
local `kvinject serve` (its own ServiceAccount and ClusterRole). Reports client-side p50/p99 and
the apiserver's own `apiserver_admission_webhook_admission_duration_seconds` for kvinject's hooks.

    tests/isolated.sh .venv/bin/python bench/apiserver_latency.py [--pods 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Binaries, ControlPlane, K, federated_namespace, install, point_webhooks_at, serve_as_shipped


def pod(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "bench-",
            "labels": {K + "inject": "true", "run": str(i)},
            "annotations": {K + "secret-db-password": "bench-kv/db-password"},
        },
        "spec": {"serviceAccountName": "api", "containers": [{"name": "app", "image": "app:1"}]},
    }


def timings(client: httpx.Client, namespace: str, count: int) -> list[float]:
    out = []
    for i in range(count):
        started = time.perf_counter()
        resp = client.post(f"/api/v1/namespaces/{namespace}/pods", json=pod(i))
        out.append((time.perf_counter() - started) * 1000)
        assert resp.status_code == 201, resp.text
    return out


def webhook_histogram(client: httpx.Client) -> dict[str, tuple[float, float]]:
    """name -> (count, sum seconds) of apiserver_admission_webhook_admission_duration_seconds."""
    result: dict[str, list[float]] = {}
    for line in client.get("/metrics").text.splitlines():
        for suffix in ("_count", "_sum"):
            prefix = f"apiserver_admission_webhook_admission_duration_seconds{suffix}{{"
            if line.startswith(prefix) and 'name="' in line:
                name = line.split('name="', 1)[1].split('"', 1)[0]
                entry = result.setdefault(name, [0.0, 0.0])
                entry[0 if suffix == "_count" else 1] += float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in result.items()}


def summary(ms: list[float]) -> tuple[float, float]:
    s = sorted(ms)
    return statistics.median(s), s[max(0, int(len(s) * 0.99) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ControlPlane(Path(tmp) / "cp") as cp:
        cp.apply_crd(Binaries.locate().spc_crd)
        install(cp)
        ns = federated_namespace(cp, "bench", {"bench-kv": ["*"]})
        # No webhook yet: the shipped configurations were applied but point at a Service with no
        # endpoints; delete them for the baseline.
        cp.kubectl("delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration", "kvinject")
        with httpx.Client(base_url=cp.url, verify=cp.admin_ssl_context(), timeout=30) as client:
            timings(client, ns, 20)  # warm-up
            baseline = timings(client, ns, args.pods)
            with serve_as_shipped(cp, Path(tmp), env={"KVINJECT_LOG_LEVEL": "WARNING"}) as server:
                point_webhooks_at(cp, server, verb="apply")  # returns once the apiserver calls kvinject
                timings(client, ns, 20)  # warm-up: connections, caches
                before = webhook_histogram(client)
                with_kvinject = timings(client, ns, args.pods)
                after = webhook_histogram(client)
    b50, b99 = summary(baseline)
    k50, k99 = summary(with_kvinject)
    print(
        f"pod create through kube-apiserver {cp.binaries.versions['KUBERNETES_VERSION']}, {args.pods} pods each,"
        " sequential, keep-alive"
    )
    print(f"{'':<22}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'no webhook':<22}{b50:>10.2f}{b99:>10.2f}")
    print(f"{'kvinject registered':<22}{k50:>10.2f}{k99:>10.2f}")
    print(
        f"added by kvinject (client side): p50 {k50 - b50:+.2f} ms, p99 {k99 - b99:+.2f} ms; ratio p50 {k50 / b50:.2f}"
    )
    for name in sorted(after):
        count = after[name][0] - before.get(name, (0.0, 0.0))[0]
        total = after[name][1] - before.get(name, (0.0, 0.0))[1]
        if count:
            print(
                f"apiserver_admission_webhook_admission_duration_seconds {name}: mean {total / count * 1000:.2f} ms"
                f" over {int(count)} calls"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
