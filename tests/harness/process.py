"""The one lifecycle of everything the harness runs, and the child process built on it.

`Lifecycle` gives start() / stop() / `with` to kvinject serve, the control plane and each of its processes,
the Azure Workload Identity webhook and the HTTPS test doubles: start() is idempotent and, when it fails
half way, undoes what it did; stop() is idempotent, and also runs at interpreter exit while started.

`Process` is one child process: output appended to its log after a `$ command` line, its own session,
terminated with this interpreter (Linux: PR_SET_PDEATHSIG), started when its readiness probe holds,
stopped with SIGTERM and, if it lingers, SIGKILL.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from tests.harness.waiting import HANG_GUARD, wait_for

LOG_TAIL_LINES = 40


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (tiny race with other processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log (a note if it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class Lifecycle:
    """start() / stop() / `with` for what the harness runs; subclasses implement _start() and _stop().

    _stop() must cope with a partial _start() (it runs when _start() raises). `start_seconds` is how long the
    last start took (reported, never asserted)."""

    start_seconds: float | None = None
    _running = False

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> Self:
        if self._running:
            return self
        self._running = True
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        atexit.unregister(self.stop)
        self._stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Linux: a preexec_fn making the child get SIGTERM if the thread that started it dies.

    libc is loaded here, in the parent, so the child runs only the prctl call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


class ProcessExited(RuntimeError):
    """A child process the harness started has exited (the message holds its log's tail)."""


class Process(Lifecycle):
    """A child process; start() returns once `ready()` holds (the `ready` callable, or a subclass's override).

    Start it from the thread that will stop it: PR_SET_PDEATHSIG follows the starting thread."""

    readiness = "readiness"  # what ready() checks, for the hang guard's message

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: Callable[[], Any] | None = None,
        readiness: str | None = None,
        start_timeout: float = HANG_GUARD,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self._ready = ready
        if readiness is not None:
            self.readiness = readiness
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def ready(self) -> Any:
        """Whether the process serves yet (exceptions count as not yet); ready at once without a probe."""
        return self._ready() if self._ready is not None else True

    def _start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {shlex.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),
            )
        self.wait_until(self.ready, f"{self.name} {self.readiness}", timeout=self.start_timeout)

    def _stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(self.stop_timeout)
        except ProcessLookupError:
            pass

    def check_alive(self) -> None:
        """Raise ProcessExited, with the log's tail, if the process has exited while started."""
        if self.running and self.proc is not None and (code := self.proc.poll()) is not None:
            raise ProcessExited(f"{self.name} exited with code {code}; last lines of {self.log_path}:\n{self.tail()}")

    def wait_until(self, probe: Callable[[], Any], what: str, timeout: float = HANG_GUARD) -> Any:
        """wait_for(probe) while this process lives; the log's tail tells why if it never holds."""
        return wait_for(
            probe,
            what,
            timeout=timeout,
            interval=0.1,
            alive=self.check_alive,
            ignore=(Exception,),
            context=lambda: f"last lines of {self.log_path}:\n{self.tail()}",
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)
