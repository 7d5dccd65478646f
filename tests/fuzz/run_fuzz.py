"""The dedicated fuzz target: `python tests/fuzz/run_fuzz.py --inputs 100000`.

Runs the hand-made edge inputs and the retention probe, then alternates rounds of structured inputs (hypothesis
`@given` over `admission_reviews()`, each example sent to /mutate and /validate, a fresh seed per round so that
hypothesis' memory stays bounded) and byte-mutated golden fixtures (alternating endpoints), until at least
`--inputs` inputs ran. Prints the figures; on failure writes one reproducer per distinct failure to `--out`
and exits 1. `--replay FILE.json` sends one reproducer again.

CPU time is bounded here, never in tests: each input may cost at most `--cpu-ratio` times a normal request at
the body limit, both measured in this run (see `Calibration`); the worst ratio is reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `tests` and `webhook` importable
    sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from tests.fuzz.edges import check_retention, edge_inputs  # noqa: E402
from tests.fuzz.harness import ENDPOINTS, Harness, Input, replay, write_reproducers  # noqa: E402
from tests.fuzz.mutate import ByteMutator  # noqa: E402
from tests.fuzz.strategies import Case, admission_reviews, encode  # noqa: E402

ROUND = 1000  # inputs per round of each kind
CPU_RATIO = 20.0  # the costliest accepted body against a normal pod at the body limit


def structured_round(harness: Harness, round_seed: int, examples: int) -> None:
    @seed(round_seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(admission_reviews())
    def fuzz(case: Case) -> None:
        raw = encode(case)
        for endpoint in ENDPOINTS:
            harness.run(Input(case.kind, endpoint, raw))

    fuzz()


def bytes_round(harness: Harness, mutator: ByteMutator, count: int) -> None:
    for index in range(count):
        _, raw = mutator.next()
        harness.run(Input("bytes", ENDPOINTS[index % 2], raw))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000, help="run at least this many inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--structured-share", type=float, default=0.5, help="share of structured inputs")
    parser.add_argument(
        "--cpu-ratio", type=float, default=CPU_RATIO, help="CPU bound per input, as a multiple of a normal request"
    )
    parser.add_argument("--edges-only", action="store_true", help="run the edge inputs and the retention probe only")
    parser.add_argument("--out", type=Path, default=None, help="directory for reproducers (default: a temp dir)")
    parser.add_argument("--replay", type=Path, default=None, help="send one reproducer (its .json) again")
    args = parser.parse_args(argv)

    if args.replay is not None:
        inp, problems = replay(args.replay)
        print(f"{inp.kind} {inp.endpoint} {len(inp.body)} bytes: " + ("; ".join(problems) or "passes"))
        return 1 if problems else 0

    started = time.perf_counter()
    with Harness(cpu_ratio=args.cpu_ratio) as harness:
        stats = harness.stats
        for inp in edge_inputs():
            harness.run(inp)
        check_retention(harness)
        mutator = ByteMutator(args.seed)
        structured_per_round = max(2, round(2 * ROUND * args.structured_share))
        bytes_per_round = max(1, 2 * ROUND - structured_per_round)
        round_index = harness_errors = 0
        while not args.edges_only and sum(stats.inputs.values()) < args.inputs:
            left = args.inputs - sum(stats.inputs.values())
            round_seed = args.seed * 1_000_003 + round_index
            try:
                structured_round(harness, round_seed, max(1, min(structured_per_round, left) // 2))
            except Exception:  # a bug of the generators, not of the app: say so, go on
                harness_errors += 1
                print(f"generator error in round {round_index} (seed {round_seed}):", file=sys.stderr)
                traceback.print_exc()
            left = args.inputs - sum(stats.inputs.values())
            if left > 0:
                bytes_round(harness, mutator, min(bytes_per_round, left))
            round_index += 1
            elapsed = time.perf_counter() - started
            total = sum(stats.inputs.values())
            print(
                f"[{elapsed:7.0f} s] {total} inputs, {stats.failures} failures, {total / elapsed:.0f} inputs/s",
                file=sys.stderr,
                flush=True,
            )
        elapsed = time.perf_counter() - started
        total = sum(stats.inputs.values())
        print(stats.summary())
        print(f"elapsed: {elapsed:.0f} s ({total / elapsed:.0f} inputs/s)")
        if harness_errors:
            print(f"generator errors: {harness_errors} rounds cut short (tracebacks on stderr)")
        if stats.failures:
            out = args.out or Path(tempfile.mkdtemp(prefix="kvinject-fuzz-"))
            files = write_reproducers(stats, out)
            print(f"reproducers ({len(files)}, the smallest input per failure): {out}")
            for signature, failure in sorted(stats.smallest.items()):
                print(f"  {signature}: {failure.problems[0][:200]}")
            return 1
    return 1 if harness_errors else 0


if __name__ == "__main__":
    sys.exit(main())
