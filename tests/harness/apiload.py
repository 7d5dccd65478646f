"""Constant admission load through the apiserver: threads creating one pod after another with server-side dry
run (kvinject's mutating webhook is sideEffects NoneOnDryRun), every answer checked and every failure kept.

A create counts as admitted when the apiserver answers 201 with the pod as kvinject mutated it (its status
annotation says injected): the mutating and the validating webhook both answered. Anything else (a webhook the
apiserver could not call, a denial, a timeout) is a failure, kept with when it happened and what was said.
Nothing here measures speed: the counts are correctness evidence, never bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.harness.controlplane import ControlPlane
from webhook.names import STATUS, STATUS_INJECTED


@dataclass
class AdmissionLoad:
    cp: ControlPlane
    pod: dict[str, Any]  # created again and again (generateName) in pod["metadata"]["namespace"]
    threads: int = 2
    admitted: int = 0
    failures: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # what the test did, on the failures' clock
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _started: float = 0.0

    @property
    def attempts(self) -> int:
        with self._lock:
            return self.admitted + len(self.failures)

    def _record(self, failure: str | None) -> None:
        with self._lock:
            if failure is None:
                self.admitted += 1
            else:
                self.failures.append(f"+{time.monotonic() - self._started:.2f}s {failure}")

    def _run(self) -> None:
        namespace = self.pod["metadata"]["namespace"]
        url = f"{self.cp.url}/api/v1/namespaces/{namespace}/pods?dryRun=All"
        # One client per thread, keep-alive: the load is the apiserver's, not the client's connection set-up.
        with httpx.Client(verify=self.cp.admin_ssl_context(), timeout=30) as client:
            while not self._stop.is_set():
                try:
                    resp = client.post(url, json=self.pod)
                except httpx.HTTPError as exc:
                    self._record(f"{type(exc).__name__}: {exc}")
                    continue
                self._record(_failure(resp))

    def start(self) -> AdmissionLoad:
        self._started = time.monotonic()
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"admission-load-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join()

    def note(self, event: str) -> None:
        with self._lock:
            self.events.append(f"+{time.monotonic() - self._started:.2f}s {event}")

    def mark(self) -> int:
        """How many creates were admitted so far (to wait for more after an event)."""
        with self._lock:
            return self.admitted


def _failure(resp: httpx.Response) -> str | None:
    if resp.status_code != 201:
        return f"HTTP {resp.status_code}: {resp.text[:400]}"
    annotations = resp.json()["metadata"].get("annotations") or {}
    if annotations.get(STATUS) != STATUS_INJECTED:
        return f"admitted but not injected: {STATUS}={annotations.get(STATUS)!r}"
    return None


@contextmanager
def admission_load(cp: ControlPlane, pod: dict[str, Any], threads: int = 2) -> Iterator[AdmissionLoad]:
    """AdmissionLoad running for the block (stopped and joined at its end, even when the block fails)."""
    load = AdmissionLoad(cp, pod, threads).start()
    try:
        yield load
    finally:
        load.stop()
