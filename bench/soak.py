"""Soak: constant TLS load on a real `kvinject serve` for a long time; RSS must not creep.

Samples the server's RSS every 10 s; growth is measured from the end of the warm-up (first 5 minutes,
or a sixth of the run if shorter) to the end. Exit 1 if growth is 10% or more or any request failed.
The first 30-minute run (bench/RESULTS.md) showed the working set still filling until minute 3 under
connection churn, so a 2-minute warm-up measured the fill, not a leak.

    .venv/bin/python bench/soak.py --minutes 30 --rate 200        (make soak)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from tests.harness import EXAMPLES, Load, ServeProcess, constant_load


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample(pid: int, every: float, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    start = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - start, rss_mib(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args()
    seconds = args.minutes * 60
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServeProcess(Path(tmp), ["--cluster", str(EXAMPLES / "cluster.yaml")], log_level="WARNING") as server,
    ):

        async def run() -> tuple[Load, list[tuple[float, float]]]:
            load, samples, stop = Load(), [], asyncio.Event()
            sampler = asyncio.create_task(sample(server.pid, 10, samples, stop))
            await constant_load(f"{server.url}/mutate", server.ca_file, args.rate, seconds, load)
            stop.set()
            await sampler
            return load, samples

        load, samples = asyncio.run(run())
    warm = min(300.0, seconds / 6)
    after = [rss for t, rss in samples if t >= warm]
    base, end, peak = after[0], after[-1], max(after)
    growth = (end - base) / base * 100
    print(f"soak: {args.minutes:g} min at {args.rate:g} requests/s over TLS, keep-alive, connections recycled")
    print(f"requests sent {load.sent}, ok {load.ok}, failed {len(load.failures)}")
    print(f"RSS after warm-up {base:.1f} MiB, at end {end:.1f} MiB, peak {peak:.1f} MiB, growth {growth:+.1f}%")
    print(
        "RSS samples (min, MiB): "
        + ", ".join(f"{t / 60:.0f}:{r:.0f}" for t, r in samples[:: max(1, len(samples) // 12)])
    )
    return 0 if growth < 10 and not load.failures and load.ok == load.sent else 1


if __name__ == "__main__":
    sys.exit(main())
