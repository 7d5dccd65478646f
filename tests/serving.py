"""A real `kvinject serve` process on 127.0.0.1 for tests and benchmarks."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

from webhook import certs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ServeProcess:
    """A `kvinject serve` subprocess on 127.0.0.1 with its own CA; `source` is --cluster FILE or --kubeconfig FILE."""

    instances: list[ServeProcess] = []  # every server of the session, for the e2e hygiene scan

    def __init__(self, workdir: Path, source: list[str], env: dict[str, str] | None = None, log_level: str = "DEBUG"):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.port = free_port()
        self.issued = certs.issue(workdir / "certs", ["kvinject.kvinject.svc"], ips=["127.0.0.1"])
        self.log_path = workdir / "kvinject.log"
        self.env = {**os.environ, "KVINJECT_LOG_LEVEL": log_level, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        ServeProcess.instances.append(self)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.issued.ca_file.read_bytes()).decode()

    def start(self, timeout: float = 60.0, probe: str = "/readyz") -> Self:
        """Start and wait until `probe` answers 200 (a hang guard, not a speed check: keep it generous)."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webhook",
                "serve",
                *self.source,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--cert-file",
                str(self.issued.cert_file),
                "--key-file",
                str(self.issued.key_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        self.wait_ready(timeout, probe)
        return self

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.issued.ca_file))

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, verify=self.trust(), timeout=2)

    def wait_ready(self, timeout: float, probe: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvinject exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                if self.get(probe).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kvinject {probe} not 200 after {timeout}s:\n{tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")
