"""How admission cost grows with the number of SecretAccessPolicies (10 vs 10,000 by default).

Runs the real mutating and validating paths in-process (no network) against a file-backed
cluster, once with few and once with many policies of other identities, and prints the
per-request latency of each and their ratio. A flat ratio (close to 1.0) means the decision
uses the client-id index instead of scanning policies.

    .venv/bin/python bench/policy_scaling.py [--policies 10,10000] [--iterations 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import CLIENT_ID, TENANT_ID, admission_review, controller_pod
from webhook import review
from webhook.cluster import FileCluster
from webhook.mutation import Mutator
from webhook.settings import Settings
from webhook.validation import Validator

K = "kvinject.io/"


def cluster_with(policies: int) -> FileCluster:
    docs: list[dict[str, Any]] = [
        {"kind": "Namespace", "metadata": {"name": "payments", "uid": "ns"}},
        {
            "kind": "ServiceAccount",
            "metadata": {
                "name": "api",
                "namespace": "payments",
                "uid": "sa",
                "annotations": {
                    "azure.workload.identity/client-id": CLIENT_ID,
                    "azure.workload.identity/tenant-id": TENANT_ID,
                },
            },
        },
        {
            "kind": "SecretAccessPolicy",
            "metadata": {"name": "payments-api"},
            "spec": {
                "identity": {"clientId": CLIENT_ID, "tenantId": TENANT_ID},
                "federatedServiceAccounts": [{"namespace": "payments", "name": "api"}],
                "allow": [{"vault": "payments-kv", "objects": ["db-*", "cert:api-tls"]}],
            },
        },
    ]
    for i in range(policies - 1):
        docs.append(
            {
                "kind": "SecretAccessPolicy",
                "metadata": {"name": f"team-{i}"},
                "spec": {
                    "identity": {"clientId": str(uuid.UUID(int=i + 1)), "tenantId": TENANT_ID},
                    "federatedServiceAccounts": [{"namespace": f"ns-{i}", "name": "app"}],
                    "allow": [{"vault": f"vault-{i % 97:03d}", "objects": ["*"]}],
                },
            }
        )
    return FileCluster(docs)


def requests() -> tuple[review.Request, review.Request]:
    pod = controller_pod(
        annotations={
            K + "secret-db-password": "payments-kv/db-password",
            K + "secret-tls.pem": "cert:payments-kv/api-tls",
            K + "env-DB_PASSWORD": "db-password",
        }
    )
    mutate = review.decode_review(orjson.dumps(admission_review(pod, dry_run=True)))
    return mutate, mutate


async def measure(policies: int, iterations: int) -> dict[str, float]:
    cluster = cluster_with(policies)
    settings = Settings()
    mutator, validator = Mutator(settings, cluster), Validator(settings, cluster)
    request, _ = requests()
    outcome = await mutator.mutate(request)
    assert outcome.response["response"]["allowed"], outcome.response
    import jsonpatch

    final = jsonpatch.apply_patch(request.object, outcome.ops)
    validate = review.decode_review(orjson.dumps(admission_review(final, dry_run=True)))
    assert (await validator.validate(validate)).response["response"]["allowed"]
    result: dict[str, float] = {}
    for name, call in (("mutate", lambda: mutator.mutate(request)), ("validate", lambda: validator.validate(validate))):
        samples = []
        for _ in range(iterations):
            started = time.perf_counter_ns()
            await call()
            samples.append((time.perf_counter_ns() - started) / 1000)
        samples.sort()
        result[f"{name}_p50_us"] = statistics.median(samples)
        result[f"{name}_p99_us"] = samples[int(len(samples) * 0.99) - 1]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="10,10000", help="two comma-separated policy counts")
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    few, many = (int(n) for n in args.policies.split(","))
    small = asyncio.run(measure(few, args.iterations))
    large = asyncio.run(measure(many, args.iterations))
    print(f"policy scaling: {few} vs {many} SecretAccessPolicies, {args.iterations} requests each, in-process")
    print(f"{'metric':<18}{few:>12}{many:>12}{'ratio':>10}")
    for key in small:
        print(f"{key:<18}{small[key]:>12.1f}{large[key]:>12.1f}{large[key] / small[key]:>10.2f}")
    worst = max(large[k] / small[k] for k in small if k.endswith("p50_us"))
    print(f"ratio (p50, {many}/{few} policies, worst endpoint): {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
