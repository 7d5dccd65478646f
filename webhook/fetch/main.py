"""`kvinject fetch`: read everything, then write everything (or nothing); the exit code says which."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from webhook import names, providers
from webhook.fetch.config import ENVIRONMENT, STORES, ConfigError, FetchConfig, load_config, termination_log_path
from webhook.fetch.files import WriteError, remove_stale_temps, write_all
from webhook.fetch.reading import Clock, ReadOutcome, fetch_all
from webhook.fetch.report import fail, log
from webhook.providers.reading import Reader

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

ReaderFactory = Callable[[FetchConfig], Reader]


def _report_reads(outcomes: Sequence[ReadOutcome], stderr: TextIO) -> list[str]:
    for outcome in outcomes:
        status = "read, not written (another object failed)" if outcome.ok else f"FAILED: {outcome.reason}"
        log(stderr, f"{outcome.obj.label}: {status}")
    return [f"{o.obj.label}: {o.reason}" for o in outcomes if not o.ok]


def fetch(config: FetchConfig, reader: Reader, stderr: TextIO, clock: Clock | None = None) -> int:
    """Read everything, then write everything (or nothing); returns the exit code."""
    started = time.monotonic()
    outcomes = fetch_all(reader, config, clock)
    if not all(o.ok for o in outcomes):
        lines = _report_reads(outcomes, stderr)
        return fail(config.termination_log, lines, stderr, EXIT_FAILED)
    remove_stale_temps(config.output_dir)
    files = [(o.obj.alias, o.content) for o in outcomes if o.content is not None]
    try:
        write_all(config.output_dir, files, config.fs_group)
    except WriteError as exc:
        label = next(o.label for o in config.objects if o.alias == exc.alias)
        log(stderr, f"{label}: FAILED: {exc.message}; nothing written")
        return fail(config.termination_log, [f"{label}: {exc.message}"], stderr, EXIT_FAILED)
    for obj in config.objects:
        log(stderr, f"{obj.label}: written to {config.output_dir / obj.alias}")
    log(stderr, f"{len(files)} object(s) written in {time.monotonic() - started:.2f}s")
    return EXIT_OK


def run(
    env: Mapping[str, str],
    reader_factory: ReaderFactory | None = None,
    *,
    stderr: TextIO | None = None,
    clock: Clock | None = None,
) -> int:
    """`kvinject fetch` against an explicit environment and reader (tests pass their own)."""
    err = stderr or sys.stderr
    try:
        config = load_config(env)
    except ConfigError as exc:
        lines = [f"configuration: {problem}" for problem in exc.problems]
        for line in lines:
            log(err, line)
        return fail(termination_log_path(env), lines, err, EXIT_CONFIG)
    try:
        provider = providers.get(config.store)
        reader = reader_factory(config) if reader_factory else provider.reader(config.access, config.timeout)
    except ValueError as exc:  # the SDK refused the identity settings
        line = f"configuration: cannot set up the workload identity credential: {exc}"
        log(err, line)
        return fail(config.termination_log, [line], err, EXIT_CONFIG)
    try:
        return fetch(config, reader, err, clock)
    finally:
        with contextlib.suppress(Exception):
            reader.close()


DESCRIPTION = "The kvinject-fetch init container: read every object, then write them all (or none)."


def epilog() -> str:
    """The environment `kvinject fetch` reads: kvinject's own and each store's (the webhook sets all of them)."""
    tables = {"environment (set by the webhook on the kvinject-fetch init container):": ENVIRONMENT}
    for store in STORES:
        tables[f"\nwith {names.ENV_STORE}={store}, also:"] = providers.get(store).environment_help
    width = max(len(n) for rows in tables.values() for n in rows)
    lines = []
    for title, rows in tables.items():
        lines += [title, *(f"  {name.ljust(width)}  {text}" for name, text in rows.items())]
    return (
        "\n".join(lines) + "\n\nexit codes: 0 every object written, 1 a read failed (reasons in the termination log),"
        " 2 unusable environment"
    )


def _parser() -> argparse.ArgumentParser:
    """`kvinject fetch`'s own parser: the console script reaches it without webhook.cli (the kvinject-fetch image
    has none of the server's packages); webhook.cli's `fetch` subcommand shows the same help."""
    return argparse.ArgumentParser(
        prog="kvinject fetch",
        description=DESCRIPTION,
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), reported as a return code
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    return run(os.environ)
