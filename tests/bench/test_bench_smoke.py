"""The benchmarks still run (tiny sizes): they cannot rot between full runs."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.harness import ROOT


def test_policy_scaling_smoke() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "policy_scaling.py"), "--policies", "10,200", "--iterations", "50"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"ratio \(p50, 200/10 policies, worst endpoint\): (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) > 0
