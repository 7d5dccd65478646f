"""A real `kvinject serve` process on 127.0.0.1, for tests and benchmarks."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import httpx

from tests.harness.pki import ServesTls, loopback
from tests.harness.process import Process, free_port

NOT_OPTED_IN = "KVINJECT_NOT_OPTED_IN_ENFORCEMENT"


class ServeProcess(ServesTls, Process):
    """`kvinject serve` on 127.0.0.1 with its own CA; `source` is --cluster FILE or --kubeconfig FILE.

    start() returns when `probe` answers 200. `log_level` None keeps kvinject's default, `inherit_kvinject_env`
    False drops the KVINJECT_* variables of this environment, `wrapper` prefixes the command (`taskset -c 0`)."""

    instances: list[ServeProcess] = []  # every server of the session, for the e2e hygiene scan

    def __init__(
        self,
        workdir: Path,
        source: list[str],
        env: dict[str, str] | None = None,
        log_level: str | None = "DEBUG",
        *,
        probe: str = "/readyz",
        wrapper: Sequence[str] = (),
        inherit_kvinject_env: bool = True,
        cwd: Path | None = None,
    ):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.port = free_port()
        self.probe = probe
        self.issued = loopback(workdir / "certs", "kvinject.kvinject.svc")
        inherited = {k: v for k, v in os.environ.items() if inherit_kvinject_env or not k.startswith("KVINJECT_")}
        level = {"KVINJECT_LOG_LEVEL": log_level} if log_level is not None else {}
        args = [*wrapper, sys.executable, "-m", "webhook", "serve", *source, "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--cert-file", str(self.issued.cert_file)]
        args += ["--key-file", str(self.issued.key_file)]
        super().__init__(
            "kvinject",
            args,
            workdir / "kvinject.log",
            # Hand-written pods are judged with enforce, as the bypass tests expect, unless a test says otherwise.
            env={NOT_OPTED_IN: "enforce", **inherited, **level, **(env or {})},
            cwd=cwd,
            readiness=f"{probe} 200",
        )
        ServeProcess.instances.append(self)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def mutate_url(self) -> str:
        return f"{self.url}/mutate"

    def start(self, probe: str | None = None) -> Self:
        """Start, and wait until `probe` (default: the constructor's) answers 200."""
        if probe is not None:
            self.probe, self.readiness = probe, f"{probe} 200"
        return super().start()

    def ready(self) -> bool:
        return self.get(self.probe).status_code == 200

    def wait_ready(self, probe: str = "/readyz") -> None:
        """Until `probe` answers 200 (after start(), e.g. once the API it waited for is back)."""
        self.wait_until(lambda: self.get(probe).status_code == 200, f"{probe} 200")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, verify=self.trust(), timeout=2)


class KvinjectServer(ServeProcess):
    """`kvinject serve` reading the API through `kubeconfig` (kvinject's own ServiceAccount token)."""

    def __init__(self, workdir: Path, kubeconfig: Path, env: dict[str, str] | None = None):
        super().__init__(workdir, ["--kubeconfig", str(kubeconfig)], env)
        self.kubeconfig = kubeconfig
