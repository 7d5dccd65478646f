"""Pod start latency on a real node: create → Ready with no injection, csi mode and init mode; and what a user
waits for when a pod may not read what it asks for (kvinject's denial against the first 403 of a stuck pod).

Starts the e2e control plane, a node (kubelet, containerd, the Secrets Store CSI driver and the Azure provider,
tests/harness/node.py), the test's own Azure cloud (tests/harness/cloud.py) and `kvinject serve` configured for
it, then creates pods one at a time and times each from the create call until its Ready condition is seen
(client-side, polled every 50 ms). Reports p50/p95 per mode, and the sizes of kvinject's two images.

    tests/isolated.sh .venv/bin/python bench/pod_start.py [--pods 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import (
    CLIENT_ID,
    Binaries,
    ControlPlane,
    install,
    kvinject_webhooks_removed,
    point_webhooks_at,
    serve_as_shipped,
)
from tests.harness.cloud import AzureCloud
from tests.harness.node import Node, NodeArtifacts
from tests.node.workloads import deployment, hand_written, pod_of, secret, team_namespace
from webhook.names import PREFIX

VAULT = "bench-kv"
POLL = 0.05


def ready(cp: ControlPlane, namespace: str, name: str) -> bool:
    found = cp.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return False
    conditions = json.loads(found.stdout).get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def start_times(cp: ControlPlane, namespace: str, make: Callable[[str], dict[str, Any]], count: int) -> list[float]:
    seconds = []
    for i in range(count):
        name = f"start-{i}"
        started = time.monotonic()
        cp.kubectl("create", "-f", "-", input=json.dumps(make(name)))
        while not ready(cp, namespace, name):
            if time.monotonic() - started > 300:
                raise RuntimeError(f"{namespace}/{name} not Ready after 300 s")
            time.sleep(POLL)
        seconds.append(time.monotonic() - started)
        cp.kubectl("delete", "pod", name, "-n", namespace, "--wait=true")
    return seconds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def report(results: dict[str, list[float]], pods: int) -> None:
    print(f"pod start latency, create -> Ready, {pods} pods each, one at a time (seconds):")
    for mode, values in results.items():
        print(
            f"  {mode:5s} p50 {statistics.median(values):6.2f}  p95 {percentile(values, 0.95):6.2f}"
            f"  (ratio to none: p50 {statistics.median(values) / statistics.median(results['none']):.2f})",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ControlPlane(Path(tmp) / "cp") as cp:
        cp.apply_crd(Binaries.locate().spc_crd)
        install(cp)
        with AzureCloud(Path(tmp) / "cloud", cp, [VAULT]) as cloud:
            provider_env = {"SSL_CERT_FILE": str(cloud.ca_bundle)}
            with Node(
                cp, Path(tmp) / "node", NodeArtifacts.locate(), hosts=cloud.hosts, provider_env=provider_env
            ) as node:
                env = cloud.kvinject_env(node.images["fetch"])
                server = serve_as_shipped(cp, Path(tmp) / "kvinject", env)
                point_webhooks_at(cp, server)
                ns = team_namespace(cp, cloud, "bench", {VAULT: ["db-password"]})
                cloud.vault.seed(VAULT, {"db-password": "bench-value"})
                cloud.vault.grant(VAULT, CLIENT_ID, "get")
                image = node.images["busybox"]
                csi = {secret("db-password"): f"{VAULT}/db-password"}
                init = {**csi, PREFIX + "mode": "init"}
                modes = {
                    "none": deployment(ns, "none", {}, image=image, host_aliases=[], inject=False),
                    "csi": deployment(ns, "csi", csi, image=image, host_aliases=[]),
                    "init": deployment(ns, "init", init, image=image, host_aliases=cloud.host_aliases),
                }
                results: dict[str, list[float]] = {}
                for mode, template in modes.items():
                    start_times(cp, ns, lambda n, t=template: pod_of(t, n), 3)  # warm: images, caches
                    results[mode] = start_times(cp, ns, lambda n, t=template: pod_of(t, n), args.pods)

                report(results, args.pods)
                # What a user waits for when the identity may not read an object: the policy does not allow it
                # (kvinject), and Key Vault refuses it (the provider).
                cloud.vault.seed(VAULT, {"forbidden-one": "never-read"})
                cloud.vault.revoke(VAULT, CLIENT_ID)
                forbidden = pod_of(
                    deployment(
                        ns,
                        "forbidden",
                        {secret("forbidden-one"): f"{VAULT}/forbidden-one"},
                        image=image,
                        host_aliases=[],
                    ),
                    "forbidden",
                )
                started = time.monotonic()
                refused = cp.kubectl("create", "-f", "-", input=json.dumps(forbidden), check=False)
                denied_after = time.monotonic() - started
                assert refused.returncode != 0 and "kvinject denied" in refused.stderr, refused.stderr
                first_403 = float("nan")
                with kvinject_webhooks_removed(cp, server):
                    hand, stuck = hand_written(cloud, ns, "stuck", image, VAULT, ["forbidden-one"])
                    cp.kubectl("apply", "-f", "-", input=json.dumps(hand))
                    started = time.monotonic()
                    cp.kubectl("create", "-f", "-", input=json.dumps(stuck))
                    while time.monotonic() - started < 300:
                        if any("RESPONSE 403" in e for e in node.events(ns, "stuck")):
                            first_403 = time.monotonic() - started
                            break
                        time.sleep(POLL)
                server.stop()
        images = NodeArtifacts.locate().images
    print(f"forbidden object: kvinject denies at create in {denied_after:.2f} s; without kvinject the pod waits in")
    print(f"  ContainerCreating and its first 403 event comes after {first_403:.1f} s (it never starts)")
    for name, shown in (("kvinject", "kvinject"), ("fetch", "kvinject-fetch (init mode)")):
        print(f"{shown} image: {images[name].tar.stat().st_size / 1e6:.0f} MB (docker-archive tar)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
