"""Admission latency and memory as the caches grow: 100 vs 100,000 ServiceAccounts, 10 vs 10,000 policies.

Each size runs in a fresh subprocess, so its RSS is its own: the caches are filled through the same
`Cluster.apply()` path the watch uses, then the real mutating path answers the same AdmissionReview
repeatedly. Prints per-size p50/p99 and RSS, and the ratios large/small.

    .venv/bin/python bench/growth.py [--iterations 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import CLIENT_ID, TENANT_ID, admission_review, controller_pod
from webhook import review
from webhook.cluster import FileCluster
from webhook.mutation import Mutator
from webhook.names import PREFIX
from webhook.settings import Settings

K = PREFIX


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fill(accounts: int, policies: int) -> FileCluster:
    cluster = FileCluster([])
    cluster.apply("ADDED", {"kind": "Namespace", "metadata": {"name": "payments"}})
    for i in range(accounts):
        name = "api" if i == 0 else f"sa-{i}"
        cluster.apply(
            "ADDED",
            {
                "kind": "ServiceAccount",
                "metadata": {
                    "name": name,
                    "namespace": "payments" if i == 0 else f"team-{i % 1000}",
                    "uid": str(uuid.uuid4()),
                    "annotations": {
                        "azure.workload.identity/client-id": CLIENT_ID if i == 0 else str(uuid.UUID(int=i)),
                        "azure.workload.identity/tenant-id": TENANT_ID,
                    },
                },
            },
        )
    for i in range(policies):
        client = CLIENT_ID if i == 0 else str(uuid.UUID(int=i))
        cluster.apply(
            "ADDED",
            {
                "kind": "SecretAccessPolicy",
                "metadata": {"name": f"p-{i}"},
                "spec": {
                    "identity": {"clientId": client, "tenantId": TENANT_ID},
                    "federatedServiceAccounts": [
                        {"namespace": "payments", "name": "api"}
                        if i == 0
                        else {"namespace": f"team-{i % 1000}", "name": f"sa-{i}"}
                    ],
                    "allow": [{"vault": "payments-kv", "objects": ["db-*"]}],
                },
            },
        )
    return cluster


async def run(accounts: int, policies: int, iterations: int) -> dict[str, float]:
    before = rss_kib()
    cluster = fill(accounts, policies)
    filled = rss_kib()
    gc.collect()
    gc.freeze()  # as `kvinject serve` does once its caches are filled
    mutator = Mutator(Settings(), cluster)
    pod = controller_pod(annotations={K + "secret-db-password": "payments-kv/db-password"})
    request = review.decode_review(json.dumps(admission_review(pod, dry_run=True)).encode())
    assert (await mutator.mutate(request)).response["response"]["allowed"]
    samples = []
    for _ in range(iterations):
        t = time.perf_counter_ns()
        await mutator.mutate(request)
        samples.append((time.perf_counter_ns() - t) / 1000)
    samples.sort()
    return {
        "p50_us": statistics.median(samples),
        "p99_us": samples[int(len(samples) * 0.99) - 1],
        "rss_mib": rss_kib() / 1024,
        "cache_mib": (filled - before) / 1024,
    }


CASES = {"accounts": [(100, 10), (100_000, 10)], "policies": [(100, 10), (100, 10_000)]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # "accounts,policies": measure in this process
    parser.add_argument("--max-accounts", type=int, default=100_000)
    args = parser.parse_args()
    if args.one:
        accounts, policies = (int(x) for x in args.one.split(","))
        print(json.dumps(asyncio.run(run(accounts, policies, args.iterations))))
        return 0
    print(f"growth: {args.iterations} dry-run admissions per size, in-process, each size in its own process")
    for name, sizes in CASES.items():
        results = []
        for accounts, policies in sizes:
            accounts = min(accounts, args.max_accounts)
            out = subprocess.run(
                [sys.executable, __file__, "--one", f"{accounts},{policies}", "--iterations", str(args.iterations)],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(((accounts, policies), json.loads(out.stdout)))
        (small_size, small), (large_size, large) = results
        print(
            f"\n{name}: {small_size[0]} accounts/{small_size[1]} policies vs"
            f" {large_size[0]} accounts/{large_size[1]} policies"
        )
        for key in ("p50_us", "p99_us", "rss_mib", "cache_mib"):
            ratio = large[key] / small[key] if small[key] > 0.05 else float("nan")
            print(f"  {key:<10}{small[key]:>10.1f}{large[key]:>12.1f}   ratio {ratio:.2f}")
        print(f"ratio ({name}, p50 large/small): {large['p50_us'] / small['p50_us']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
