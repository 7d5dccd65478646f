"""A real, local Kubernetes control plane for kvinject's e2e tests.

Runs etcd, kube-apiserver and kube-controller-manager (no kubelet, no scheduler) as
child processes listening on 127.0.0.1 only, with a throwaway PKI made with the
``cryptography`` package. The binaries are the ones built and cached by
``tests/e2e/build_binaries.sh`` (versions pinned in ``tests/e2e/versions.env``).

Usable without pytest::

    from tests.e2e.controlplane import ControlPlane
    with ControlPlane(Path("/tmp/cp")) as cp:
        print(cp.kubectl("get", "ns").stdout)

Without a kubelet, pods stay Pending forever, but their stored (admitted/mutated) spec
can be read back, which is all an admission webhook test needs. The controller-manager
provides the ``default`` ServiceAccounts, ReplicaSets/Pods from Deployments, garbage
collection and namespace deletion.
"""

from __future__ import annotations

import atexit
import base64
import datetime as _dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

E2E_DIR = Path(__file__).resolve().parent
VERSIONS_FILE = E2E_DIR / "versions.env"
BUILD_SCRIPT = "tests/e2e/build_binaries.sh"
SPC_CRD_FILENAME = "secrets-store.csi.x-k8s.io_secretproviderclasses.yaml"

LOG_TAIL_LINES = 40


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
            versions=dict(v),
        )

    def missing(self, *names: str) -> list[Path]:
        """The paths among ``names`` (attribute names) that are absent."""
        out = []
        for name in names or self.CONTROL_PLANE:
            p: Path = getattr(self, name)
            if not p.is_file() or (name != "spc_crd" and not os.access(p, os.X_OK)):
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
# PKI
# --------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _key_pem(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


class PKI:
    """A throwaway CA in ``directory`` that can issue serving and client certificates."""

    def __init__(self, directory: Path, ca_common_name: str = "kvinject-e2e-ca") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key())
        self._ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now)
            .not_valid_after(self._now + _dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_cert = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        self.ca_cert.write_bytes(self._ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_private(self.ca_key, _key_pem(self._ca_key))

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.read_bytes()

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
        days: int = 30,
    ) -> tuple[Path, Path]:
        """Issue a leaf certificate signed by the CA; returns (cert_path, key_path)."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if not usages:
            raise ValueError("a certificate needs server=True and/or client=True")
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now)
            .not_valid_after(self._now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        cert_path = self.dir / f"{name}.crt"
        key_path = self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, _key_pem(key))
        return cert_path, key_path

    def service_account_keys(self, name: str = "sa") -> tuple[Path, Path]:
        """An RSA key pair for signing ServiceAccount tokens; returns (private, public)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        priv = self.dir / f"{name}.key"
        pub = self.dir / f"{name}.pub"
        _write_private(priv, _key_pem(key))
        pub.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return priv, pub


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (tiny race with other processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Linux: a preexec_fn making the child get SIGTERM if the Python process dies.

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


class _Proc:
    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"$ {' '.join(args)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(),
        )

    def check_alive(self) -> None:
        rc = self.popen.poll()
        if rc is not None:
            raise ControlPlaneError(
                f"{self.name} exited with code {rc}; last lines of {self.log_path}:\n{tail(self.log_path)}"
            )

    def stop(self, timeout: float) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if not self._log.closed:
            self._log.close()


# --------------------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

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
        self._procs: list[_Proc] = []
        self._started = False

        pki = self.workdir / "pki"
        self.pki_dir = pki
        self.ca_file = pki / "ca.crt"
        self.ca_key_file = pki / "ca.key"
        self.apiserver_cert = pki / "apiserver.crt"
        self.apiserver_key = pki / "apiserver.key"
        self.admin_cert = pki / "admin.crt"
        self.admin_key = pki / "admin.key"
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
        self.start_seconds: float | None = None

    # -- public API ---------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The ServiceAccount token issuer: the apiserver's own URL (serves its JWKS)."""
        return self.url

    @property
    def api_audiences(self) -> list[str]:
        return self._api_audiences or [self.issuer]

    def start(self) -> ControlPlane:
        if self._started:
            return self
        self.binaries.require(*Binaries.CONTROL_PLANE)
        t0 = time.monotonic()
        self._started = True
        atexit.register(self.stop)
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(exist_ok=True)
            self._make_pki()
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            self._start_controller_manager()
            self._wait_default_service_account()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Terminate the processes in reverse start order (SIGTERM, then SIGKILL)."""
        procs, self._procs = self._procs, []
        for proc in reversed(procs):
            proc.stop(self.stop_timeout)
        if self._started:
            self._started = False
            atexit.unregister(self.stop)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check_alive(self) -> None:
        """Raise ControlPlaneError (with the log tail) if any process has exited."""
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
        cmd = [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args]
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
        with urllib.request.urlopen(req, context=self._admin_ssl_context(), timeout=timeout) as resp:
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
        self.pki.service_account_keys("sa")

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        proc = _Proc(name, args, self.logs[name], env)
        self._procs.append(proc)
        return proc

    def _wait(self, what: str, probe: Callable[[], bool], timeout: float, proc: _Proc | None = None) -> None:
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            self.check_alive()
            try:
                if probe():
                    return
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                msg = f"timed out after {timeout:.0f}s waiting for {what}"
                if last_error:
                    msg += f" (last error: {last_error})"
                if proc is not None:
                    msg += f"; last lines of {proc.log_path}:\n{tail(proc.log_path)}"
                raise ControlPlaneError(msg)
            time.sleep(0.2)

    def _start_etcd(self) -> None:
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        proc = self._spawn(
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
        )

        def healthy() -> bool:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")

        self._wait("etcd /health", healthy, self.start_timeout, proc)

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver (fault tests); etcd keeps the state, start_apiserver() resumes it."""
        proc = next(p for p in self._procs if p.name == "kube-apiserver")
        proc.stop(self.stop_timeout)
        self._procs.remove(proc)

    def start_apiserver(self) -> None:
        """Start kube-apiserver again on the same port, so every kubeconfig and client keeps working."""
        self._start_apiserver(port=self.apiserver_port)

    def apiserver_pid(self) -> int:
        return int(next(p for p in self._procs if p.name == "kube-apiserver").popen.pid)

    def _start_apiserver(self, port: int | None = None) -> None:
        self.apiserver_port = port or free_port()
        self.url = f"https://127.0.0.1:{self.apiserver_port}"
        proc = self._spawn(
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
                *self._extra_apiserver_args,
            ],
        )

        def ready() -> bool:
            return bool(self.api_get("/readyz", timeout=5) == "ok")

        self._wait(f"kube-apiserver {self.url}/readyz", ready, self.start_timeout, proc)

    def _start_controller_manager(self) -> None:
        self.controller_manager_port = free_port()
        proc = self._spawn(
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
        )

        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its self-signed serving cert, loopback only

        def healthy() -> bool:
            url = f"https://127.0.0.1:{self.controller_manager_port}/healthz"
            with urllib.request.urlopen(url, context=insecure, timeout=2) as resp:
                return bool(resp.read().decode().strip() == "ok")

        self._wait("kube-controller-manager /healthz", healthy, self.start_timeout, proc)

    def _wait_default_service_account(self) -> None:
        kcm = next(p for p in self._procs if p.name == "kube-controller-manager")

        def exists() -> bool:
            try:
                self.api_get("/api/v1/namespaces/default/serviceaccounts/default", timeout=5)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return False
                raise
            return True

        self._wait("ServiceAccount default/default", exists, self.start_timeout, kcm)

    def _admin_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return ctx

    def _write_kubeconfig(self) -> None:
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
                    "name": self.ADMIN_USER,
                    "user": {
                        "client-certificate-data": b64(self.admin_cert),
                        "client-key-data": b64(self.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "kvinject-e2e",
                    "context": {"cluster": "kvinject-e2e", "user": self.ADMIN_USER},
                }
            ],
            "current-context": "kvinject-e2e",
            "preferences": {},
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")
        self.kubeconfig.chmod(0o600)


__all__ = [
    "BUILD_SCRIPT",
    "PKI",
    "Binaries",
    "BinariesMissing",
    "ControlPlane",
    "ControlPlaneError",
    "cache_dir",
    "free_port",
    "read_versions",
]
