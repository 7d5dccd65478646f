"""The CI smoke of the fuzz target (tests/fuzz/run_fuzz.py): a fixed, derandomized sample, well under a minute.

Every input goes through the real ASGI app; a test collects every failure and reports them all at the end
(with the smallest failing body per distinct failure) rather than stopping at the first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.edges import check_retention, edge_inputs
from tests.fuzz.harness import Harness, Input
from tests.fuzz.mutate import ByteMutator
from tests.fuzz.strategies import Case, admission_reviews, encode

STRUCTURED_EXAMPLES = 300
BYTE_INPUTS = 2000

SMOKE = settings(
    max_examples=STRUCTURED_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # every failure is reported with its body; no shrinking in CI
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def harness() -> Iterator[Harness]:
    with Harness() as h:
        yield h


def report(harness: Harness) -> str:
    lines = [harness.stats.summary()]
    for signature, failure in sorted(harness.stats.smallest.items()):
        lines.append(f"--- {signature}\n{failure.input.endpoint} {failure.input.label} body[:600]=")
        lines.append(repr(failure.input.body[:600]))
        lines += [f"  {p[:400]}" for p in failure.problems[:3]]
    return "\n".join(lines)


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
def test_structured_inputs(harness: Harness, endpoint: str) -> None:
    @SMOKE
    @given(admission_reviews())
    def fuzz(case: Case) -> None:
        harness.run(Input(case.kind, endpoint, encode(case)))

    fuzz()
    assert sum(harness.stats.inputs.values()) >= STRUCTURED_EXAMPLES
    assert harness.stats.failures == 0, report(harness)


def test_byte_mutated_fixtures(harness: Harness) -> None:
    mutator = ByteMutator(seed=0)
    for index in range(BYTE_INPUTS):
        _, body = mutator.next()
        harness.run(Input("bytes", ("/mutate", "/validate")[index % 2], body))
    assert harness.stats.inputs["bytes"] == BYTE_INPUTS
    assert harness.stats.failures == 0, report(harness)


def test_edge_inputs(harness: Harness) -> None:
    for inp in edge_inputs():
        harness.run(inp)
    assert harness.stats.failures == 0, report(harness)


def test_memory_held_does_not_grow_with_requests(harness: Harness) -> None:
    problems = check_retention(harness)
    assert not problems and harness.stats.failures == 0, report(harness)
