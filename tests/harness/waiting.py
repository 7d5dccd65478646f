"""The one way the harness and the tests wait: poll a probe until it holds.

The timeout is a hang guard, never a speed check: it only stops a run that would otherwise hang, so it is
generous, and no test asserts how long anything took."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

HANG_GUARD = 120.0  # seconds a wait may last before it fails: a guard against hangs, not a speed check


class WaitTimeout(AssertionError):
    """A probe never held within the hang guard (the message says what was awaited and why it may not have)."""


def wait_for(
    probe: Callable[[], T],
    what: str,
    *,
    timeout: float = HANG_GUARD,
    interval: float = 0.2,
    alive: Callable[[], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    context: Callable[[], str] | None = None,
) -> T:
    """Call `probe` every `interval` seconds until it returns something truthy, and return that.

    `alive` runs before each try and raises when what is awaited can no longer come (a process exited);
    exceptions of the `ignore` types from `probe` count as "not yet" (the last one is reported). On timeout,
    WaitTimeout names `what` and appends `context()` (a log tail, say)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        if alive is not None:
            alive()
        try:
            value = probe()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g}s waiting for {what}"
            if last is not None:
                message += f" (last error: {type(last).__name__}: {last})"
            if context is not None:
                message += f"\n{context()}"
            raise WaitTimeout(message)
        time.sleep(interval)
