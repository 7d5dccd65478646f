"""`kvinject fetch --refresh <interval>`: the refresh sidecar (kvinject.io/refresh, docs/rotation.md).

kvinject-fetch has written every object before this starts (a native sidecar starts after the init containers
before it). Every interval, with jitter, it reads each object that is not pinned to a version, and swaps the files
whose content changed, all in one atomic step (`files.write_all`). A store that can tell an object's version
without sending its value (`VersionProbe`) is asked that first. A failed read keeps the file as it is and is tried
again sooner; a throttled read (429) waits at least the store's Retry-After, and nothing more is sent to that vault
in that round. Values are held as bytes and digests, never formatted into a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from webhook.fetch.config import FetchConfig
from webhook.fetch.files import WriteError, remove_stale_temps, write_all
from webhook.fetch.main import ReaderFactory, run
from webhook.fetch.reading import Clock
from webhook.fetch.report import failure_reason, log, write_termination_log
from webhook.providers.reading import ObjectSpec, Reader, ReadError, RoundScoped, VersionedReader, VersionProbe

EXIT_OK = 0
JITTER = 0.1  # each wait is the interval times 1 ± this, so the pods of one workload drift apart
FIRST_RETRY = 5.0  # seconds before retrying a failed round; doubling up to the interval
THROTTLE_FLOOR = 1.0  # a 429 without a usable Retry-After still waits this long


@dataclass
class Known:
    """What a file holds now: the digest of its content, and the version it was read as ("" when unknown)."""

    digest: bytes = field(repr=False)
    version: str = ""


@dataclass
class Round:
    """The outcome of one pass over the objects."""

    changed: list[tuple[ObjectSpec, bytes, str]] = field(default_factory=list, repr=False)
    failures: list[str] = field(default_factory=list)
    throttled: float | None = None  # the longest Retry-After (seconds) of a 429 in this round

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class Counters:
    """What `kubectl logs` and the termination log tell: the sidecar has no metrics endpoint."""

    rounds: int = 0
    updated: int = 0
    failed_rounds: int = 0
    throttled: int = 0

    def line(self) -> str:
        return (
            f"refresh: {self.rounds} round(s), {self.updated} file update(s), {self.failed_rounds} failed round(s),"
            f" {self.throttled} throttled"
        )


def digest(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


def on_disk(config: FetchConfig) -> dict[str, Known]:
    """What kvinject-fetch wrote: the digests of the files there now (a missing file is written at the first round)."""
    known: dict[str, Known] = {}
    for obj in config.objects:
        with contextlib.suppress(OSError):
            known[obj.alias] = Known(digest((config.output_dir / obj.alias).read_bytes()))
    return known


def refreshable(config: FetchConfig) -> list[ObjectSpec]:
    """Objects pinned to a version never change: only the others are read again."""
    return [o for o in config.objects if not o.version]


def read_round(reader: Reader, objects: Sequence[ObjectSpec], known: Mapping[str, Known], config: FetchConfig) -> Round:
    """One attempt at each object, vault by vault; a 429 ends that vault's part of the round."""
    result = Round()
    throttled_vaults: set[str] = set()
    for obj in objects:
        if obj.vault in throttled_vaults:
            continue
        try:
            change = _read_one(reader, obj, known.get(obj.alias), config.timeout)
        except ReadError as error:
            result.failures.append(f"{obj.label}: {failure_reason(obj, error, 1, config.access.principal)}")
            if error.retry_after is not None or error.detail.startswith("HTTP 429"):
                throttled_vaults.add(obj.vault)
                wait = max(error.retry_after or 0.0, THROTTLE_FLOOR)
                result.throttled = max(result.throttled or 0.0, wait)
            continue
        except Exception as exc:  # a bug in a reader: the class only, its message could hold anything
            result.failures.append(f"{obj.label}: unexpected {type(exc).__name__}")
            continue
        if change is not None:
            result.changed.append((obj, *change))
    return result


def _read_one(reader: Reader, obj: ObjectSpec, before: Known | None, timeout: float) -> tuple[bytes, str] | None:
    """(content, version) when the object differs from its file; None when it is the same."""
    if _same_version(reader, obj, before, timeout):
        return None
    if isinstance(reader, VersionedReader):
        read = reader.read_versioned(obj, timeout)
        content, version = read.content, read.version
    else:
        content, version = reader.read(obj, timeout), ""
    if before is not None and before.digest == digest(content):
        before.version = version or before.version
        return None
    return content, version


def _same_version(reader: Reader, obj: ObjectSpec, before: Known | None, timeout: float) -> bool:
    """A store that tells versions without values (VersionProbe) says the file is current."""
    if before is None or not before.version or not isinstance(reader, VersionProbe):
        return False
    return reader.current_version(obj, timeout) == before.version


def next_wait(interval: float, jitter: float, result: Round | None, failed_in_a_row: int) -> float:
    """Seconds until the next round: the interval with jitter; sooner after a failure (never sooner than a
    Retry-After); a Retry-After longer than the interval is honoured whole."""
    regular = interval * (1 - JITTER + 2 * JITTER * jitter)
    if result is None or result.ok:
        return regular
    retry = min(regular, FIRST_RETRY * 2.0 ** max(failed_in_a_row - 1, 0))
    return max(retry, result.throttled or 0.0)


def apply(config: FetchConfig, result: Round, known: dict[str, Known], stderr: TextIO) -> int:
    """Swap the changed files in one step; returns how many were written (0 when the write failed: files kept)."""
    if not result.changed:
        return 0
    remove_stale_temps(config.output_dir)
    try:
        write_all(config.output_dir, [(obj.alias, content) for obj, content, _ in result.changed], config.fs_group)
    except WriteError as exc:
        log(stderr, f"refresh: {exc.alias}: FAILED: {exc.message}; the files are unchanged")
        result.failures.append(f"{exc.alias}: {exc.message}")
        return 0
    for obj, content, version in result.changed:
        known[obj.alias] = Known(digest(content), version)
        log(stderr, f"refresh: {obj.label}: changed" + (f" to version {version}" if version else "") + ", written")
    return len(result.changed)


def refresh(
    config: FetchConfig,
    reader: Reader,
    interval: float,
    stderr: TextIO,
    clock: Clock | None = None,
    stop: threading.Event | None = None,
    rounds: int | None = None,
    wait: Callable[[float], bool] | None = None,
) -> int:
    """Re-read and swap until `stop` is set (SIGTERM), or after `rounds` rounds (tests). `wait(seconds)` returns
    True when stopped meanwhile (by default `stop.wait`; tests pass their own and take no time)."""
    clock = clock or Clock()
    stop = stop or threading.Event()
    wait = wait or stop.wait
    objects = refreshable(config)
    known = on_disk(config)
    counters = Counters()
    log(stderr, f"refresh: every {interval:g}s (±{JITTER:.0%}), {len(objects)} of {len(config.objects)} object(s)")
    result: Round | None = None
    failed_in_a_row = 0
    while rounds is None or counters.rounds < rounds:
        if wait(next_wait(interval, clock.jitter(), result, failed_in_a_row)):
            break
        started = clock.monotonic()
        result = read_round(reader, objects, known, config)
        if isinstance(reader, RoundScoped):
            reader.new_round()  # nothing remembered, no session held, until the next round
        counters.updated += apply(config, result, known, stderr)
        counters.rounds += 1
        if result.ok:
            failed_in_a_row = 0
        else:
            failed_in_a_row += 1
            counters.failed_rounds += 1
            counters.throttled += result.throttled is not None
            for line in result.failures:
                log(stderr, f"refresh: {line}; the file is unchanged")
            if result.throttled is not None:
                log(stderr, f"refresh: throttled: the next round waits at least {result.throttled:g}s (Retry-After)")
        if result.changed or not result.ok:
            write_termination_log(config.termination_log, [counters.line(), *result.failures], stderr)
        log(stderr, f"refresh: round {counters.rounds} in {clock.monotonic() - started:.2f}s")
    write_termination_log(config.termination_log, [counters.line()], stderr)
    log(stderr, counters.line())
    return EXIT_OK


def stop_on_sigterm() -> threading.Event:
    """The kubelet stops a sidecar with SIGTERM when the pod ends: finish the wait at once, exit 0."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def run_refresh(
    env: Mapping[str, str],
    interval: float,
    reader_factory: ReaderFactory | None = None,
    *,
    stderr: TextIO | None = None,
    clock: Clock | None = None,
    stop: threading.Event | None = None,
    rounds: int | None = None,
    wait: Callable[[float], bool] | None = None,
) -> int:
    """`kvinject fetch --refresh`: set up as `kvinject fetch` is (the same configuration, store and reader), then
    loop instead of reading once."""

    def loop(config: FetchConfig, reader: Reader, err: TextIO, clock: Clock | None) -> int:
        return refresh(config, reader, interval, err, clock, stop, rounds, wait)

    return run(env, reader_factory, stderr=stderr, clock=clock, action=loop)
