"""A real, local Kubernetes control plane for kvinject's e2e tests.

Runs etcd, kube-apiserver and kube-controller-manager (no kubelet, no scheduler) as
child processes listening on 127.0.0.1 only, with a throwaway PKI (tests/harness/pki.py).
The binaries are the ones built and cached by
``tests/e2e/build_binaries.sh`` (versions pinned in ``tests/e2e/versions.env``).

Usable without pytest::

    from tests.harness import ControlPlane
    with ControlPlane(Path("/tmp/cp")) as cp:
        print(cp.kubectl("get", "ns").stdout)

Without a kubelet, pods stay Pending forever, but their stored (admitted/mutated) spec
can be read back, which is all an admission webhook test needs; a real node (kubelet,
scheduler, containerd: tests/harness/node.py) can join it, the apiserver reaching kubelets
with its kubelet-client certificate. The controller-manager
provides the ``default`` ServiceAccounts, ReplicaSets/Pods from Deployments, garbage
collection and namespace deletion.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.pki import PKI
from tests.harness.process import Lifecycle, Process, free_port

E2E_DIR = Path(__file__).resolve().parents[1] / "e2e"
VERSIONS_FILE = E2E_DIR / "versions.env"
BUILD_SCRIPT = "tests/e2e/build_binaries.sh"
SPC_CRD_FILENAME = "secrets-store.csi.x-k8s.io_secretproviderclasses.yaml"
SPCPS_CRD_FILENAME = "secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses.yaml"


class ControlPlaneError(RuntimeError):
    """The control plane failed to start, became unhealthy, or a kubectl call failed."""


class BinariesMissing(ControlPlaneError):
    """Cached binaries (or the CRD) are missing: run tests/e2e/build_binaries.sh."""


# --------------------------------------------------------------------------------------
# Versions and cached binaries
# --------------------------------------------------------------------------------------


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the KEY=value lines of versions.env (comments and blank lines ignored)."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: malformed line {raw!r}")
        versions[key.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    """The build cache: $KVINJECT_CACHE or ~/.cache/kvinject (same rule as the script)."""
    env = os.environ.get("KVINJECT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kvinject"


@dataclass(frozen=True)
class Binaries:
    """Paths of the cached artefacts, laid out as build_binaries.sh writes them."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    azwi_webhook: Path
    spc_crd: Path
    spcps_crd: Path  # the driver's per-pod status (restart-on-change)
    versions: dict[str, str]

    CONTROL_PLANE = ("etcd", "kube_apiserver", "kube_controller_manager", "kubectl")

    @classmethod
    def locate(cls, cache: Path | None = None, versions: dict[str, str] | None = None) -> Binaries:
        """Compute the paths (without checking they exist)."""
        cache = cache if cache is not None else cache_dir()
        v = versions if versions is not None else read_versions()
        k8s = cache / "bin" / f"kubernetes-{v['KUBERNETES_VERSION']}"
        return cls(
            etcd=cache / "bin" / f"etcd-{v['ETCD_VERSION']}" / "etcd",
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kubectl=k8s / "kubectl",
            azwi_webhook=cache / "bin" / f"azwi-{v['AZWI_VERSION']}" / "azwi-webhook",
            spc_crd=cache / "crds" / f"secrets-store-csi-driver-{v['SSCSI_VERSION']}" / SPC_CRD_FILENAME,
            spcps_crd=cache / "crds" / f"secrets-store-csi-driver-{v['SSCSI_VERSION']}" / SPCPS_CRD_FILENAME,
            versions=dict(v),
        )

    def missing(self, *names: str) -> list[Path]:
        """The paths among ``names`` (attribute names) that are absent."""
        out = []
        for name in names or self.CONTROL_PLANE:
            p: Path = getattr(self, name)
            if not p.is_file() or (name not in ("spc_crd", "spcps_crd") and not os.access(p, os.X_OK)):
                out.append(p)
        return out

    def require(self, *names: str) -> Binaries:
        """Raise BinariesMissing (naming the build script) unless all ``names`` exist."""
        missing = self.missing(*names)
        if missing:
            listing = "\n  ".join(str(p) for p in missing)
            raise BinariesMissing(
                f"e2e binaries missing; run `{BUILD_SCRIPT}` (takes a few minutes once, "
                f"then is cached in {cache_dir()}). Missing:\n  {listing}"
            )
        return self


# --------------------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------------------


class ControlPlane(Lifecycle):
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, each a harness Process.

    Files (PKI, kubeconfig, etcd data, logs) live under ``workdir``. ``start()`` blocks
    until the apiserver is ready and the ``default`` ServiceAccount of namespace
    ``default`` exists; ``stop()`` is idempotent. Also a context manager.
    """

    ADMIN_USER = "kvinject-e2e-admin"

    def __init__(
        self,
        workdir: Path,
        *,
        binaries: Binaries | None = None,
        api_audiences: Sequence[str] | None = None,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
        start_timeout: float = 120.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.binaries = binaries if binaries is not None else Binaries.locate()
        self._api_audiences = list(api_audiences) if api_audiences else None
        self._extra_apiserver_args = list(extra_apiserver_args)
        self._extra_kcm_args = list(extra_controller_manager_args)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._procs: list[Process] = []

        pki = self.workdir / "pki"
        self.pki_dir = pki
        self.ca_file = pki / "ca.crt"
        self.ca_key_file = pki / "ca.key"
        self.apiserver_cert = pki / "apiserver.crt"
        self.apiserver_key = pki / "apiserver.key"
        self.admin_cert = pki / "admin.crt"
        self.admin_key = pki / "admin.key"
        # How the apiserver authenticates to kubelets (logs, exec): a system:masters client certificate.
        self.kubelet_client_cert = pki / "kubelet-client.crt"
        self.kubelet_client_key = pki / "kubelet-client.key"
        self.sa_signing_key = pki / "sa.key"
        self.sa_public_key = pki / "sa.pub"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.log_dir = self.workdir / "logs"
        self.logs: dict[str, Path] = {
            name: self.log_dir / f"{name}.log" for name in ("etcd", "kube-apiserver", "kube-controller-manager")
        }
        self.pki: PKI | None = None
        self.etcd_url = ""
        self.apiserver_port = 0
        self.controller_manager_port = 0
        self.url = ""

    # -- public API ---------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The ServiceAccount token issuer: the apiserver's own URL (serves its JWKS)."""
        return self.url

    @property
    def api_audiences(self) -> list[str]:
        return self._api_audiences or [self.issuer]

    def _start(self) -> None:
        self.binaries.require(*Binaries.CONTROL_PLANE)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self._make_pki()
        self._start_etcd()
        self._start_apiserver()
        self._write_kubeconfig()
        self._start_controller_manager()
        self._wait_default_service_account()

    def _stop(self) -> None:
        """Terminate the processes in reverse start order (SIGTERM, then SIGKILL)."""
        procs, self._procs = self._procs, []
        for proc in reversed(procs):
            proc.stop()

    def check_alive(self) -> None:
        """Raise ProcessExited (with the log tail) if any process has exited."""
        for proc in self._procs:
            proc.check_alive()

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[Any]:
        """Run the built kubectl against this control plane; text in/out unless bytes input."""
        # Its discovery cache in the workdir, not ~/.kube/cache (one directory per apiserver port, never removed).
        cmd = [
            str(self.binaries.kubectl),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        result = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=not isinstance(input, bytes),
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed with code {result.returncode}:\n"
                f"{result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors='replace')}"
            )
        return result

    def apply_crd(self, path: Path | str, timeout: float = 60.0) -> list[str]:
        """Apply the CRD manifest(s) in ``path`` and wait until each is Established."""
        applied = self.kubectl(
            "apply", "--server-side", "--force-conflicts", "-o", "name", "-f", str(path)
        ).stdout.split()
        crds = [n for n in applied if n.startswith("customresourcedefinition")]
        if not crds:
            raise ControlPlaneError(f"{path} contains no CustomResourceDefinition (applied: {applied})")
        self.kubectl(
            "wait",
            "--for=condition=Established",
            f"--timeout={int(timeout)}s",
            *crds,
            timeout=timeout + 30,
        )
        return crds

    def api_get(self, path: str, timeout: float = 10.0) -> Any:
        """GET ``path`` from the apiserver as admin; returns decoded JSON (or text)."""
        req = urllib.request.Request(self.url + path, headers={"Accept": "application/json, */*"})
        with urllib.request.urlopen(req, context=self.admin_ssl_context(), timeout=timeout) as resp:
            body = resp.read().decode()
        try:
            return json.loads(body)
        except ValueError:
            return body

    def issue_cert(self, name: str, common_name: str, **kwargs: Any) -> tuple[Path, Path]:
        """Issue a certificate from the cluster CA (e.g. a webhook serving cert)."""
        if self.pki is None:
            raise ControlPlaneError("start() the control plane first")
        return self.pki.issue(name, common_name, **kwargs)

    # -- internals ----------------------------------------------------------------

    def _make_pki(self) -> None:
        self.pki = PKI(self.pki_dir)
        self.pki.issue(
            "apiserver",
            "kube-apiserver",
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ip_addresses=["127.0.0.1", "10.0.0.1"],
            server=True,
        )
        self.pki.issue("admin", self.ADMIN_USER, organizations=["system:masters"], client=True)
        self.pki.issue("kubelet-client", "kube-apiserver-kubelet-client", organizations=["system:masters"], client=True)
        self.pki.service_account_keys("sa")

    def _spawn(self, name: str, args: list[str], ready: Callable[[], Any], readiness: str) -> Process:
        """Start one of the control plane's processes and wait until `ready` holds."""
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        proc = Process(
            name,
            args,
            self.logs[name],
            env=env,
            ready=ready,
            readiness=readiness,
            start_timeout=self.start_timeout,
            stop_timeout=self.stop_timeout,
        )
        self._procs.append(proc)
        proc.start()
        return proc

    def _start_etcd(self) -> None:
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"

        def healthy() -> bool:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")

        self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=kvinject-e2e",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=kvinject-e2e={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            healthy,
            "/health",
        )

    def _process(self, name: str) -> Process:
        return next(p for p in self._procs if p.name == name)

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver (fault tests); etcd keeps the state, start_apiserver() resumes it."""
        self._process("kube-apiserver").stop()

    def start_apiserver(self) -> None:
        """Start kube-apiserver again on the same port, so every kubeconfig and client keeps working."""
        self._process("kube-apiserver").start()

    def apiserver_pid(self) -> int:
        return self._process("kube-apiserver").pid

    def _start_apiserver(self) -> None:
        self.apiserver_port = free_port()
        self.url = f"https://127.0.0.1:{self.apiserver_port}"

        def ready() -> bool:
            return bool(self.api_get("/readyz", timeout=5) == "ok")

        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--secure-port={self.apiserver_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The "kubernetes" Service endpoints may not be a loopback address.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={self.apiserver_cert}",
                f"--tls-private-key-file={self.apiserver_key}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={self.issuer}",
                f"--service-account-key-file={self.sa_public_key}",
                f"--service-account-signing-key-file={self.sa_signing_key}",
                f"--api-audiences={','.join(self.api_audiences)}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--profiling=false",
                # Logs, exec and port-forward through a kubelet (tests/harness/node.py): the kubelet serves a
                # certificate of the cluster CA for its InternalIP and trusts this client certificate.
                f"--kubelet-client-certificate={self.kubelet_client_cert}",
                f"--kubelet-client-key={self.kubelet_client_key}",
                f"--kubelet-certificate-authority={self.ca_file}",
                "--kubelet-preferred-address-types=InternalIP",
                *self._extra_apiserver_args,
            ],
            ready,
            f"{self.url}/readyz",
        )

    def _start_controller_manager(self) -> None:
        self.controller_manager_port = free_port()

        def healthy() -> bool:
            return healthz_ok(f"https://127.0.0.1:{self.controller_manager_port}/healthz")

        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                # No front-proxy CA here: take the client CA from the flag instead of
                # the extension-apiserver-authentication ConfigMap (avoids log spam).
                "--authentication-skip-lookup=true",
                f"--client-ca-file={self.ca_file}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.controller_manager_port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                f"--service-account-private-key-file={self.sa_signing_key}",
                f"--root-ca-file={self.ca_file}",
                f"--cluster-signing-cert-file={self.ca_file}",
                f"--cluster-signing-key-file={self.ca_key_file}",
                "--controllers=*",
                # Each controller acts as its own kube-system ServiceAccount, as in kubeadm and managed
                # clusters: admission sees the garbage collector and the namespace controller by name
                # (kvinject's ValidatingAdmissionPolicy lets exactly those two delete generated classes).
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--profiling=false",
                *self._extra_kcm_args,
            ],
            healthy,
            "/healthz",
        )

    def _wait_default_service_account(self) -> None:
        def exists() -> bool:
            try:
                self.api_get("/api/v1/namespaces/default/serviceaccounts/default", timeout=5)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return False
                raise
            return True

        self._process("kube-controller-manager").wait_until(
            exists, "ServiceAccount default/default", self.start_timeout
        )

    def admin_ssl_context(self) -> ssl.SSLContext:
        """A TLS client context trusting the cluster CA and presenting the admin's certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return ctx

    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(self.kubeconfig, self.admin_cert, self.admin_key, self.ADMIN_USER)

    def write_kubeconfig(self, path: Path, cert: Path, key: Path, user: str) -> Path:
        """A kubeconfig (mode 0600) for this apiserver authenticating with the client certificate `cert`/`key`."""

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        # JSON is valid YAML: no YAML library needed.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kvinject-e2e",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": b64(self.ca_file),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(cert),
                        "client-key-data": b64(key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "kvinject-e2e",
                    "context": {"cluster": "kvinject-e2e", "user": user},
                }
            ],
            "current-context": "kvinject-e2e",
            "preferences": {},
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path


def healthz_ok(url: str) -> bool:
    """Whether a Kubernetes component's /healthz at `url` answers ok (its self-signed serving certificate is not
    checked: loopback only)."""
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=insecure, timeout=2) as resp:
        return bool(resp.read().decode().strip() == "ok")


__all__ = [
    "BUILD_SCRIPT",
    "Binaries",
    "BinariesMissing",
    "ControlPlane",
    "ControlPlaneError",
    "cache_dir",
    "healthz_ok",
    "read_versions",
]
