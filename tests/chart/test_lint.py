"""`helm lint --strict`: the chart and its values.schema.json accept what users set and refuse what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.helm import CHART, Helm

pytestmark = pytest.mark.e2e

VALID = [
    ("defaults", {}),
    ("rollout-enforce", {"rollout": "enforce", "enforcement": "warn"}),
    ("cert-manager", {"certificates": {"mode": "cert-manager"}}),
    ("secret-with-ca", {"certificates": {"mode": "secret", "caBundle": "TFMwdExTMUNSVWRKVGc9PQ=="}}),
    ("live-verification", {"liveVerification": {"enabled": True}}),
    ("pdb-max-unavailable", {"podDisruptionBudget": {"maxUnavailable": "50%"}}),
    ("monitoring-and-network", {"serviceMonitor": {"enabled": True}, "networkPolicy": {"enabled": True}}),
    ("digests", {"image": {"digest": "sha256:" + "a" * 64, "fetchDigest": "sha256:" + "b" * 64}}),
    (
        "custom-cloud",
        {
            "cloud": {
                "name": "AzureStackCloud",
                "envFile": "/etc/kubernetes/azurestack.json",
                "envFileConfigMap": "azurestack",
            }
        },
    ),
]

# (id, values, what the error names)
INVALID = [
    ("unknown-top-level-key", {"replicas": 3}, "additional properties 'replicas' not allowed"),
    ("unknown-rollout", {"rollout": "later"}, "/rollout"),
    ("unknown-enforcement", {"enforcement": "deny"}, "/enforcement"),
    ("unknown-cert-mode", {"certificates": {"mode": "vault"}}, "/certificates/mode"),
    ("secret-mode-without-ca", {"certificates": {"mode": "secret"}}, "/certificates/caBundle"),
    ("timeout-above-30", {"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
    ("tenant-not-a-guid", {"tenantId": "contoso"}, "/tenantId"),
    ("digest-not-sha256", {"image": {"digest": "latest"}}, "/image/digest"),
    ("negative-replicas", {"replicaCount": -1}, "/replicaCount"),
    ("env-file-relative", {"cloud": {"envFile": "stack.json", "envFileConfigMap": "x"}}, "/cloud/envFile"),
    ("bad-interval", {"serviceMonitor": {"interval": "often"}}, "/serviceMonitor/interval"),
]


def lint(helm: Helm, values: dict[str, Any]) -> tuple[int, str]:
    result = helm.run("lint", "--strict", str(CHART), *helm.values_args(values), check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("values", [v for _, v in VALID], ids=[i for i, _ in VALID])
def test_lint_strict_accepts(helm: Helm, values: dict[str, Any]) -> None:
    code, out = lint(helm, values)
    assert code == 0, out
    assert "[ERROR]" not in out and "[WARNING]" not in out


@pytest.mark.parametrize(("values", "error"), [(v, e) for _, v, e in INVALID], ids=[i for i, _, _ in INVALID])
def test_lint_strict_refuses(helm: Helm, values: dict[str, Any], error: str) -> None:
    code, out = lint(helm, values)
    assert code != 0, f"lint accepted {json.dumps(values)}"
    assert error in out, out


def test_template_refuses_what_lint_refuses(helm: Helm) -> None:
    """The schema guards install and template too, not only lint."""
    result = helm.run("template", "kvinject", str(CHART), *helm.values_args({"rollout": "later"}), check=False)
    assert result.returncode != 0 and "/rollout" in result.stderr
