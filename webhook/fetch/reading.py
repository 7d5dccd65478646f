"""Reading every object through the provider's reader: retries with backoff inside one time budget, the vaults
concurrently, the objects of a vault one after another. Never raises; every object gets a `ReadOutcome`."""

from __future__ import annotations

import concurrent.futures
import functools
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from webhook.fetch.config import FetchConfig
from webhook.fetch.report import reason_for
from webhook.providers.reading import ATTEMPT_TIMEOUT_CAP, VAULT_WIDE, ObjectSpec, Reader, ReadError

BACKOFF_BASE = 0.5  # seconds before the first retry (before jitter)
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 10.0  # a server's Retry-After is honoured up to this
MIN_ATTEMPT_SECONDS = 0.5  # no attempt is started with less budget left than this
HARD_STOP_GRACE = 5.0  # a vault thread still busy this long after the budget is abandoned


@dataclass(frozen=True)
class ReadOutcome:
    obj: ObjectSpec
    content: bytes | None = field(default=None, repr=False)  # never in a repr, so never in a traceback
    reason: str = ""
    vault_wide: bool = False

    @property
    def ok(self) -> bool:
        return self.content is not None


class Deadline:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with jitter; a server's Retry-After wins, up to a cap."""

    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP
    retry_after_cap: float = RETRY_AFTER_CAP

    def delay(self, retry: int, error: ReadError, jitter: float) -> float:
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.retry_after_cap)
        return min(self.cap, self.base * 2.0 ** (retry - 1)) * (0.5 + jitter / 2)


@dataclass
class Clock:
    """Time, sleep and jitter in one place so tests can replace them."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random


def read_with_retries(
    reader: Reader, obj: ObjectSpec, config: FetchConfig, deadline: Deadline, clock: Clock, backoff: Backoff
) -> ReadOutcome:
    """Read one object; transient errors are retried up to `config.retries` times within the deadline."""
    attempts, last = 0, None
    while deadline.remaining() >= MIN_ATTEMPT_SECONDS:
        attempts += 1
        try:
            return ReadOutcome(obj, content=reader.read(obj, min(ATTEMPT_TIMEOUT_CAP, deadline.remaining())))
        except ReadError as error:
            last = error
        except Exception as exc:  # a bug in a reader: report the class only, its message could hold anything
            return ReadOutcome(obj, reason=f"unexpected {type(exc).__name__}")
        if not last.transient or attempts > config.retries:
            return _failed(obj, last, attempts, config)
        pause = backoff.delay(attempts, last, clock.jitter())
        if pause + MIN_ATTEMPT_SECONDS > deadline.remaining():
            break
        clock.sleep(pause)
    if last is None:
        return ReadOutcome(obj, reason=f"gave up: the {config.timeout:g}s budget was spent before this object was read")
    return _failed(obj, last, attempts, config, out_of_time=True)


def _failed(
    obj: ObjectSpec, error: ReadError, attempts: int, config: FetchConfig, out_of_time: bool = False
) -> ReadOutcome:
    reason = reason_for(obj, error, attempts, config.access, out_of_time)
    return ReadOutcome(obj, reason=reason, vault_wide=error.kind in VAULT_WIDE)


def fetch_vault(
    reader: Reader, objects: Sequence[ObjectSpec], config: FetchConfig, deadline: Deadline, clock: Clock
) -> list[ReadOutcome]:
    """The objects of one vault, in order; a vault-wide failure (token, unreachable) fails the rest untried."""
    outcomes: list[ReadOutcome] = []
    backoff = Backoff()
    for obj in objects:
        wide = next((o for o in outcomes if o.vault_wide), None)
        if wide is not None:
            outcomes.append(ReadOutcome(obj, reason=wide.reason, vault_wide=True))
        else:
            outcomes.append(read_with_retries(reader, obj, config, deadline, clock, backoff))
    return outcomes


def _run_in_daemon_thread(
    name: str, work: Callable[[], list[ReadOutcome]]
) -> concurrent.futures.Future[list[ReadOutcome]]:
    # Daemon threads (not a ThreadPoolExecutor, whose workers are joined at exit) so that a vault stuck past the
    # budget cannot keep the init container alive.
    future: concurrent.futures.Future[list[ReadOutcome]] = concurrent.futures.Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name=f"fetch:{name}", daemon=True).start()
    return future


def fetch_all(reader: Reader, config: FetchConfig, clock: Clock | None = None) -> list[ReadOutcome]:
    """Read every object: vaults concurrently, the objects of a vault sequentially. Never raises."""
    clock = clock or Clock()
    deadline = Deadline(config.timeout, clock.monotonic)
    futures = {
        vault: _run_in_daemon_thread(vault, functools.partial(fetch_vault, reader, objs, config, deadline, clock))
        for vault, objs in config.by_vault().items()
    }
    concurrent.futures.wait(futures.values(), timeout=config.timeout + HARD_STOP_GRACE)
    by_alias: dict[str, ReadOutcome] = {}
    for vault, future in futures.items():
        for outcome in _vault_outcomes(vault, future, config):
            by_alias[outcome.obj.alias] = outcome
    return [by_alias[o.alias] for o in config.objects]


def _vault_outcomes(
    vault: str, future: concurrent.futures.Future[list[ReadOutcome]], config: FetchConfig
) -> list[ReadOutcome]:
    objects = config.by_vault()[vault]
    if not future.done():
        reason = f"gave up: vault {vault} did not answer within the {config.timeout:g}s budget"
        return [ReadOutcome(obj, reason=reason) for obj in objects]
    error = future.exception()
    if error is not None:
        return [ReadOutcome(obj, reason=f"unexpected {type(error).__name__}") for obj in objects]
    return future.result()
