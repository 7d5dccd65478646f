"""A real Kubernetes node joined to the e2e control plane: pods run, mount Secrets Store CSI volumes, log and exec.

Usable without pytest (as root, inside tests/isolated.sh)::

    from tests.harness.node import Node, NodeArtifacts
    with Node(cp, workdir, NodeArtifacts.locate(), hosts={"login.kvinject.test": NODE_ADDRESS}) as node:
        node.kubectl("run", ...)

Fixtures (tests/conftest.py): `node_artifacts` (session: the paths build.sh and images.sh print, after checking
root and isolation: skipped locally without them, failed under CI=true) and `node` (session: a started Node with
rotation every 5s, stopped at the end of the session, which must leave nothing). tests/node tests the node itself.

Constructor ``Node(control_plane, workdir, artifacts, *, ...)``:
  name               the Node object's name and the kubelet's node id (default "kvinject-node")
  hosts              {hostname: IP} written into the hosts file bind-mounted over /etc/hosts in the node's
                     mount namespace (the Azure provider resolves `login.kvinject.test`, `<v>.vault.kvinject.test`
                     through it); `set_hosts()` replaces them while the node runs
  provider_env       extra environment of the Azure provider (e.g. {"SSL_CERT_FILE": "<test CA bundle>"});
                     `set_provider_env()` restarts the provider with another one
  rotation_interval  None: the driver runs without rotation; "5s" (a Go duration): `--enable-secret-rotation
                     --rotation-poll-interval 5s` (with the CSIDriver's requiresRepublish, the kubelet calls
                     NodePublishVolume again every few seconds and the driver re-reads at most once per interval)
  sync_frequency     the kubelet's syncFrequency (default "2s": republish calls come quickly)
  images             which cached images to import: "pause" (always), "busybox", "kvinject", "fetch" (kvinject-fetch)
  schedule           run a kube-scheduler (default True); without it, bind pods with spec.nodeName
  taints             registerWithTaints, e.g. [{"key": "k", "value": "v", "effect": "NoSchedule"}]

Attributes: `name`, `address` (192.0.2.10, its InternalIP), `images` ({"pause"|"busybox"|"kvinject"|"fetch": reference
as imported; pods use them with imagePullPolicy Never}), the processes `containerd`, `kubelet`, `scheduler`,
`driver`, `provider`, `registrar` (harness Processes: `.logs()` is the log's text), `csi_socket`,
`provider_socket`, `registration_socket`, `kubelet_dir`, `run_dir`, `hosts_file`, `enter` (an argv prefix that
runs a command inside the node's mount namespace, e.g. `ServeProcess(..., wrapper=node.enter)`), `timings`.
`provider_healthz` (its URL). Methods: `kubectl(...)` (the control plane's, as admin), `logs(ns, pod)`
(`kubectl logs`, through the kubelet), `exec(ns, pod, *argv)` (`kubectl exec`), `events(ns, name)` ("Reason:
message" lines: FailedMount carries the driver's and the provider's error text), `pods()`, `mounts()` (of the
node's namespace), `wait_until(probe, what)` (`wait_for` that fails as soon as a node process exits),
`set_hosts(...)`, `set_provider_env(...)`, `leftovers()` (what of the node is still on the machine),
`crash()` (the harness dies: for tests of the reaper).

Pods: images by `node.images[...]` with imagePullPolicy Never; pod IPs from 10.88.<i>.0/24 on the node's bridge;
pods reach servers listening on 192.0.2.10 (the bridge routes to it) and resolve test names through hostAliases
(the node's hosts file is for its own processes). No kube-proxy of its own: Service ClusterIPs answer only with
tests/harness/services.py's ServiceNetwork started beside it.

How it runs (facts in tests/node/NOTES.md and /work/shared/E2E-NOTES.md):
- It needs root and tests/isolated.sh's private network, mount and PID namespaces (the veth `kvinject-node` with
  192.0.2.10/24 and nothing reaching outside); without them start() raises NodeUnavailable.
- Every node process runs in a mount namespace of the node's own (held by a `sleep`), where a tmpfs covers /run
  and /var/log, an overlay covers /var/lib (its upper layer in the run directory), a hosts file covers
  /etc/hosts, and files holding the kubelet's wanted values cover the six sysctls the kubelet would otherwise
  set on the host: nothing the node writes reaches the host, and every mount of the node (CSI targets, overlay
  snapshots, tmpfs) dies with that namespace.
- Host state the node does touch: cgroups (cgroupfs, under `kvinject-nodes/<run id>` in every hierarchy) and its
  run directory under /tmp/kvinject-nodes (short paths: unix sockets). A run holds `<run id>.lock` (flock) while
  it lives; start() first reaps every run whose lock is free (an earlier crashed run): its processes, sysctls it
  recorded, cgroups, CNI bridge, directory.
- stop() cordons the node, deletes its pods and waits until the kubelet has unmounted their volumes (pods are
  force-deleted when the kubelet is gone), stops the registrar, driver, provider, kubelet and containerd, kills
  whatever is left in the node's mount namespace or cgroups (shims, containers), unmounts everything, removes the
  cgroups, puts back any changed sysctl, deletes the Node object, its CNI bridge and the run directory. Every step
  runs even when an earlier one fails; the failures are raised together at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from tests.harness.controlplane import ControlPlane, ControlPlaneError, healthz_ok
from tests.harness.kube import service_account_kubeconfig
from tests.harness.process import LOG_TAIL_LINES, Lifecycle, Process, free_port
from tests.harness.waiting import HANG_GUARD, wait_for

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
NODE_ADDRESS = "192.0.2.10"  # tests/isolated.sh puts it on the veth kvinject-node
NODE_INTERFACE = "kvinject-node"
NODES_ROOT = Path(os.environ.get("KVINJECT_NODES_ROOT", "/tmp/kvinject-nodes"))
CGROUP_PARENT = "kvinject-nodes"
DRIVER_NAME = "secrets-store.csi.k8s.io"
TOKEN_AUDIENCE = "api://AzureADTokenExchange"
DRIVER_ACCOUNT = ("kube-system", "secrets-store-csi-driver")  # the ServiceAccount of the driver's shipped RBAC
# What the kubelet writes into these sysctls unless they already hold it (container_manager_linux.go
# setupKernelTunables); the node's mount namespace shows it these values, so the host's stay as they are.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# kvinject: the Dockerfile's serve target; fetch: its fetch target (kvinject-fetch, the init container's image).
IMAGE_NAMES = ("pause", "busybox", "kvinject", "fetch")


class NodeUnavailable(RuntimeError):
    """A prerequisite of a real node is missing (root, tests/isolated.sh's namespaces, built binaries or images)."""


class NodeTeardownError(RuntimeError):
    """stop() could not undo everything (each failed step is listed)."""


# --------------------------------------------------------------------------------------
# What the node runs, from tests/node/build.sh and tests/node/images.sh
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    reference: str
    tar: Path


@dataclass(frozen=True)
class NodeArtifacts:
    """The cached binaries, manifests and image tars, as build.sh and images.sh report them (KEY=path lines)."""

    kubelet: Path
    kube_scheduler: Path
    driver: Path
    provider: Path
    registrar: Path
    manifests: Path
    images: dict[str, Image]

    @classmethod
    def locate(cls) -> NodeArtifacts:
        """Run both scripts (a warm run takes a second or two; a cold one builds, which needs the network: then
        NodeUnavailable says to run `make node-binaries node-images` first)."""
        found: dict[str, str] = {}
        for script in ("build.sh", "images.sh"):
            result = subprocess.run([str(NODE_DIR / script)], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise NodeUnavailable(
                    f"tests/node/{script} failed (run `make node-binaries node-images` first):\n"
                    + "\n".join(result.stderr.splitlines()[-15:])
                )
            found.update(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        try:
            artifacts = cls(
                kubelet=Path(found["KUBELET"]),
                kube_scheduler=Path(found["KUBE_SCHEDULER"]),
                driver=Path(found["SSCSI_DRIVER"]),
                provider=Path(found["AZURE_PROVIDER"]),
                registrar=Path(found["REGISTRAR"]),
                manifests=Path(found["SSCSI_MANIFESTS"]),
                images={
                    n: Image(found[f"{n.upper()}_IMAGE"], Path(found[f"{n.upper()}_IMAGE_TAR"])) for n in IMAGE_NAMES
                },
            )
        except KeyError as exc:
            raise NodeUnavailable(f"tests/node/build.sh or images.sh printed no {exc}") from None
        binaries = (
            artifacts.kubelet,
            artifacts.kube_scheduler,
            artifacts.driver,
            artifacts.provider,
            artifacts.registrar,
        )
        missing = [p for p in binaries if not os.access(p, os.X_OK)]
        missing += [p for p in (*(i.tar for i in artifacts.images.values()), artifacts.manifests) if not p.exists()]
        if missing:
            raise NodeUnavailable("node artifacts missing: " + ", ".join(map(str, missing)))
        return artifacts

    def csi_driver(self) -> dict[str, Any]:
        """The CSIDriver of deploy/csidriver.yaml with what the driver's chart adds for this cluster: the
        `tokenRequests` its values enable (the audience the Azure provider exchanges) and, on Kubernetes 1.35+,
        `serviceAccountTokenInSecrets` (tokens reach the driver as NodePublish secrets, not volume context)."""
        chart = (self.manifests / "chart-csidriver.yaml").read_text()
        if "tokenRequests" not in chart or "serviceAccountTokenInSecrets: true" not in chart:
            raise ValueError(f"{self.manifests}/chart-csidriver.yaml no longer renders what this harness adds")
        driver: dict[str, Any] = yaml.safe_load((self.manifests / "csidriver.yaml").read_text())
        driver["spec"]["tokenRequests"] = [{"audience": TOKEN_AUDIENCE}]
        driver["spec"]["serviceAccountTokenInSecrets"] = True
        return driver


# --------------------------------------------------------------------------------------
# Host facts: namespaces, cgroups, mounts, processes
# --------------------------------------------------------------------------------------


def require_isolation() -> None:
    """Raise NodeUnavailable unless this is root inside tests/isolated.sh's network, mount and PID namespaces
    with the node address on its veth."""
    if os.geteuid() != 0:
        raise NodeUnavailable("a real node needs root (mounts, cgroups, containerd)")
    if set(os.environ.get("KVINJECT_NAMESPACES", "").split()) != {"net", "mount", "pid"}:
        raise NodeUnavailable(
            "a real node runs only inside tests/isolated.sh's private network, mount and PID namespaces "
            "(make test, or: tests/isolated.sh .venv/bin/python -m pytest ...)"
        )
    addresses = subprocess.run(
        ["ip", "-j", "address", "show", "dev", NODE_INTERFACE], capture_output=True, text=True, check=False
    )
    if addresses.returncode != 0 or f'"local":"{NODE_ADDRESS}"' not in addresses.stdout.replace(" ", ""):
        raise NodeUnavailable(f"no {NODE_ADDRESS} on {NODE_INTERFACE} (tests/isolated.sh makes that veth pair)")


def cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, name=systemd, the v2 `unified`)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            points.append(Path(left.split()[4]))
    return points


def mount_points(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """The mount points listed in a mountinfo file, in its order (parents before children)."""
    return list(mount_ids(mountinfo).values())


def mount_ids(mountinfo: Path) -> dict[str, str]:
    """Mount id -> mount point, in the file's order."""
    fields = (line.split() for line in mountinfo.read_text().splitlines())
    return {f[0]: f[4].replace("\\040", " ") for f in fields}


def network_interfaces() -> set[str]:
    """The interfaces of this network namespace (netlink: /sys/class/net shows the namespace that mounted /sys)."""
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, check=True).stdout)
    return {link["ifname"] for link in links}


def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(f"{root}/")


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _mount_namespace(pid: int | str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def run_processes(run_dir: Path, run_id: str, mount_namespace: str, spare: int | None = None) -> dict[int, str]:
    """The processes of a node run, pid -> command line: those whose command line names its run directory
    (containerd, the kubelet, the shims' -address), those in its mount namespace and those in its cgroups
    (containers). Only this PID namespace is visible: another session's processes died with theirs."""
    cgroup_pids = _cgroup_pids(run_id)
    found = {}
    for pid in _pids():
        if pid in (os.getpid(), spare):
            continue
        cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
        if not cmdline:
            continue  # a kernel thread, a zombie, or gone
        in_namespace = bool(mount_namespace) and _mount_namespace(pid) == mount_namespace
        if f"{run_dir}/" in cmdline or in_namespace or pid in cgroup_pids:
            found[pid] = cmdline
    return found


def kill_run_processes(run_dir: Path, run_id: str, mount_namespace: str, spare: int | None = None) -> None:
    """SIGKILL the processes of a run (but `spare`) until none is left."""

    def none_left() -> bool:
        left = run_processes(run_dir, run_id, mount_namespace, spare)
        for pid in left:
            _kill(pid)
        return not left

    wait_for(none_left, f"the processes of {run_dir} to die", interval=0.1)


def _cgroup_dirs(run_id: str) -> list[Path]:
    """This run's cgroup directories, deepest first, in every hierarchy."""
    found: list[Path] = []
    for mount in cgroup_mounts():
        top = mount / CGROUP_PARENT / run_id
        if top.is_dir():
            found += sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
    return found


def _cgroup_pids(run_id: str) -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(run_id):
        pids.update(int(p) for p in _read(str(d / "cgroup.procs")).split())
    return pids


def remove_cgroups(run_id: str) -> None:
    """Remove this run's cgroups, emptied by kill_run_processes (and the shared parent once empty)."""
    for d in _cgroup_dirs(run_id):
        # A cgroup whose last process just died may still be busy for a moment.
        wait_for(lambda d=d: _rmdir(d), f"rmdir {d}", ignore=(OSError,), interval=0.1)  # type: ignore[misc]
    for mount in cgroup_mounts():
        with contextlib.suppress(OSError):  # another run's cgroups are still in it
            (mount / CGROUP_PARENT).rmdir()


def _rmdir(d: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        d.rmdir()
    return True


def read_sysctls() -> dict[str, str]:
    return {name: Path("/proc/sys", name).read_text().strip() for name in KUBELET_SYSCTLS}


def restore_sysctls(saved: Mapping[str, str]) -> list[str]:
    """Write back every sysctl that a kubelet changed since `saved` was read (it now holds the kubelet's value, not
    the saved one); returns what was restored. The masks keep the kubelet from writing them: this is the guard."""
    restored = []
    for name, value in read_sysctls().items():
        if name in saved and value != saved[name] and value == KUBELET_SYSCTLS[name]:
            Path("/proc/sys", name).write_text(saved[name] + "\n")
            restored.append(f"{name}: {value} -> {saved[name]}")
    return restored


@contextlib.contextmanager
def _nodes_lock() -> Iterator[None]:
    """Serialises creating and reaping runs under NODES_ROOT (across sessions sharing the machine)."""
    NODES_ROOT.mkdir(parents=True, exist_ok=True)
    with (NODES_ROOT / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def reap_dead_runs() -> list[str]:
    """Remove what crashed runs left (their lock is free): sysctls they changed, cgroups, directories. Returns
    what was reaped (reported by the fixture). Runs of live sessions, whatever their namespace, hold their lock."""
    reaped: list[str] = []
    with _nodes_lock():
        live: set[str] = set()
        for lock_path in NODES_ROOT.glob("*.lock"):
            run_id = lock_path.name.removesuffix(".lock")
            with lock_path.open("a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    live.add(run_id)
                    continue
                reaped += _reap(run_id)
                lock_path.unlink()
        # Leftovers without a lock: a reap interrupted half way.
        for entry in NODES_ROOT.iterdir():
            if entry.is_dir() and entry.name not in live:
                reaped += _reap(entry.name)
        for mount in cgroup_mounts():
            parent = mount / CGROUP_PARENT
            if parent.is_dir():
                for d in parent.iterdir():
                    if d.is_dir() and d.name not in live:
                        reaped += _reap(d.name)
    return reaped


def _reap(run_id: str) -> list[str]:
    """Undo what a dead run left (see Node.crash()): its processes (a shim, a container), sysctls, cgroups, CNI
    bridge, directory. Its mounts were in its own mount namespace, gone with its last process."""
    done = []
    run_dir = NODES_ROOT / run_id
    recorded = run_dir / "recorded.json"
    facts: dict[str, Any] = json.loads(recorded.read_text()) if recorded.is_file() else {}
    left = run_processes(run_dir, run_id, facts.get("mount_namespace", ""))
    kill_run_processes(run_dir, run_id, facts.get("mount_namespace", ""))
    done += [f"{run_id}: process {cmd[:80]}" for cmd in left.values()]
    done += [f"{run_id}: sysctl {r}" for r in restore_sysctls(facts.get("sysctls", {}))]
    if _cgroup_dirs(run_id):
        remove_cgroups(run_id)
        done.append(f"{run_id}: cgroups")
    bridge = facts.get("bridge", "")
    if bridge and bridge in network_interfaces():
        subprocess.run(["ip", "link", "delete", bridge], check=False)
        done.append(f"{run_id}: network interface {bridge}")
    if run_dir.exists():
        wait_for(lambda: _rmtree(run_dir), f"rm -r {run_dir}", ignore=(OSError,))
        done.append(f"{run_id}: {run_dir}")
    return done


def _rmtree(path: Path) -> bool:
    """Remove a run directory; refuse one with a mount under it in this namespace."""
    mounted = [p for p in mount_points() if _under(p, path)]
    if mounted:
        raise RuntimeError(f"not removing {path}: mounted under it: {mounted}")
    shutil.rmtree(path, ignore_errors=False)
    return True


# --------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------


class Node(Lifecycle):
    """containerd + kubelet (+ kube-scheduler) + the Secrets Store CSI driver, its registrar and the Azure provider,
    joined to `control_plane` as node `name` at 192.0.2.10 (see the module docstring)."""

    def __init__(
        self,
        control_plane: ControlPlane,
        workdir: Path,
        artifacts: NodeArtifacts,
        *,
        name: str = "kvinject-node",
        hosts: Mapping[str, str] | None = None,
        provider_env: Mapping[str, str] | None = None,
        rotation_interval: str | None = None,
        sync_frequency: str = "2s",
        images: Sequence[str] = IMAGE_NAMES,
        schedule: bool = True,
        taints: Sequence[Mapping[str, str]] = (),
        start_timeout: float = HANG_GUARD,
    ) -> None:
        unknown = set(images) - set(IMAGE_NAMES)
        if unknown:
            raise ValueError(f"unknown images {sorted(unknown)}; known: {IMAGE_NAMES}")
        self.cp = control_plane
        self.workdir = Path(workdir).resolve()
        self.artifacts = artifacts
        self.name = name
        self.address = NODE_ADDRESS
        self.hosts = dict(hosts or {})
        self.provider_env = dict(provider_env or {})
        self.rotation_interval = rotation_interval
        self.sync_frequency = sync_frequency
        self.image_names = ("pause", *(n for n in images if n != "pause"))
        self.images = {n: artifacts.images[n].reference for n in self.image_names}
        self.schedule = schedule
        self.taints = [dict(t) for t in taints]
        self.start_timeout = start_timeout

        self.run_id = f"{name[:24]}-{secrets.token_hex(3)}"
        self.run_dir = NODES_ROOT / self.run_id
        self.cgroup_root = f"/{CGROUP_PARENT}/{self.run_id}"
        self.log_dir = self.workdir / "logs"
        run = self.run_dir
        self.kubelet_dir = run / "k"  # short: unix socket paths are limited to 107 bytes
        self.containerd_socket = run / "containerd.sock"
        self.csi_socket = self.kubelet_dir / "plugins" / "csi-secrets-store" / "csi.sock"
        self.registration_socket = self.kubelet_dir / "plugins_registry" / f"{DRIVER_NAME}-reg.sock"
        self.provider_dir = run / "providers"
        self.provider_socket = self.provider_dir / "azure.sock"
        self.hosts_file = run / "hosts"

        self.processes: list[Process] = []
        self.imports: list[Process] = []
        self.holder: Process | None = None
        self.containerd: Process | None = None
        self.kubelet: Process | None = None
        self.scheduler: Process | None = None
        self.driver: Process | None = None
        self.provider: Process | None = None
        self.registrar: Process | None = None
        self.enter: list[str] = []
        self.mount_namespace = ""
        self.bridge = ""
        self.saved_sysctls: dict[str, str] = {}
        self.reaped: list[str] = []
        self.restored_sysctls: list[str] = []
        self.timings: dict[str, float] = {}
        self._lock: IO[str] | None = None
        self._inherited_mounts: set[str] = set()
        self._provider_health_port = 0

    # -- public API ---------------------------------------------------------------

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return self.cp.kubectl(*args, **kwargs)

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """`kubectl logs`: the apiserver reads them from this node's kubelet."""
        args = ["logs", "-n", namespace, pod] + ([f"--container={container}"] if container else [])
        return str(self.kubectl(*args).stdout)

    def exec(
        self, namespace: str, pod: str, *argv: str, container: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[Any]:
        """`kubectl exec` into a running container (through the kubelet and containerd's streaming server)."""
        args = ["exec", "-n", namespace, pod] + ([f"--container={container}"] if container else [])
        return self.kubectl(*args, "--", *argv, check=check)

    def events(self, namespace: str, name: str) -> list[str]:
        """The events about object `name` in `namespace`, as "Reason: message" lines."""
        out = self.kubectl(
            "get", "events", "-n", namespace, f"--field-selector=involvedObject.name={name}", "-o", "json"
        ).stdout
        return [f"{e.get('reason')}: {e.get('message')}" for e in json.loads(out)["items"]]

    def pods(self) -> list[dict[str, Any]]:
        """Every pod bound to this node."""
        items: list[dict[str, Any]] = self.cp.api_get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.name}")[
            "items"
        ]
        return items

    def mounts(self) -> list[str]:
        """The mount points of the node's mount namespace (empty once it is gone)."""
        if self.holder is None or not self.holder.running:
            return []
        return mount_points(Path(f"/proc/{self.holder.pid}/mountinfo"))

    def check_alive(self) -> None:
        """Raise ProcessExited (with its log's tail) if a node process has exited."""
        for proc in self.processes:
            proc.check_alive()

    def wait_until(self, probe: Callable[[], Any], what: str, timeout: float = HANG_GUARD) -> Any:
        """wait_for(probe) while every node process lives; a failing kubectl or API call counts as "not yet"; the
        logs' tails of the kubelet, the driver and containerd tell why if it never holds."""
        return wait_for(
            probe,
            what,
            timeout=timeout,
            alive=self.check_alive,
            ignore=(ControlPlaneError, OSError),  # not served yet (HTTP errors are OSErrors too)
            context=self._context,
        )

    def set_hosts(self, hosts: Mapping[str, str]) -> None:
        """Replace the node's hosts entries (name -> IP); the bind-mounted file is rewritten in place."""
        self.hosts = dict(hosts)
        if self.hosts_file.exists():
            self._write_hosts()

    def set_provider_env(self, env: Mapping[str, str]) -> None:
        """Restart the Azure provider with `env` as its extra environment (e.g. a CA bundle made after start)."""
        self.provider_env = dict(env)
        if self.provider is not None and self.provider.running:
            self.provider.stop()
            self.processes.remove(self.provider)
            self._start_provider()

    def crash(self) -> None:
        """Simulate the harness dying (tests of reap_dead_runs): SIGKILL the processes this harness started and
        let go of the run's lock, undoing nothing. Shims and containers live on, as after a real crash."""
        for proc in [*self.processes, *self.imports]:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self._running = False
        atexit.unregister(self.stop)

    def leftovers(self) -> list[str]:
        """What of this node still exists on the machine (empty after a complete stop())."""
        found = [
            f"process {pid}: {cmdline[:200]}"
            for pid, cmdline in run_processes(self.run_dir, self.run_id, self.mount_namespace).items()
        ]
        found += [f"mount {p}" for p in mount_points() if _under(p, self.run_dir)]
        found += [f"cgroup {d}" for d in _cgroup_dirs(self.run_id)]
        if self.saved_sysctls:
            now = read_sysctls()
            found += [f"sysctl {k} = {now[k]} (was {v})" for k, v in self.saved_sysctls.items() if now[k] != v]
        if self.run_dir.exists():
            found.append(f"directory {self.run_dir}")
        if (NODES_ROOT / f"{self.run_id}.lock").exists():
            found.append(f"lock {NODES_ROOT / self.run_id}.lock")
        if self.bridge and self.bridge in network_interfaces():
            found.append(f"network interface {self.bridge}")
        return found

    # -- start ----------------------------------------------------------------------

    def _start(self) -> None:
        require_isolation()
        t0 = time.monotonic()
        self.reaped = reap_dead_runs()
        self._claim_run_dir()
        self.saved_sysctls = read_sysctls()
        self._record()
        self._make_cgroups()
        self._start_mount_namespace()
        self._write_network()
        self._record()
        self._start_containerd()
        self.timings["containerd"] = time.monotonic() - t0
        self._start_imports()
        self._apply_cluster_objects()
        self._start_provider()
        self._start_driver()
        self._start_registrar()
        self._start_kubelet()
        if self.schedule:
            self._start_scheduler()
        self.wait_until(self._ready, f"node {self.name} Ready with {DRIVER_NAME} registered")
        self.timings["ready"] = time.monotonic() - t0
        t1 = time.monotonic()
        self._wait_imports()
        self.timings["images"] = time.monotonic() - t1  # beyond what overlapped the start

    def _record(self) -> None:
        """What a reaper needs to undo this run if the harness dies (reap_dead_runs)."""
        facts = {"sysctls": self.saved_sysctls, "mount_namespace": self.mount_namespace, "bridge": self.bridge}
        (self.run_dir / "recorded.json").write_text(json.dumps(facts))

    def _claim_run_dir(self) -> None:
        with _nodes_lock():
            self._lock = (NODES_ROOT / f"{self.run_id}.lock").open("a")
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.run_dir.mkdir(mode=0o755)
        for d in (self.log_dir, self.csi_socket.parent, self.registration_socket.parent, self.provider_dir):
            d.mkdir(parents=True, exist_ok=True)

    def _make_cgroups(self) -> None:
        """The kubelet's cgroupRoot, made beforehand in every hierarchy (cgroup v1: a cpuset needs cpus and mems
        before anything can join it, copied from its parent)."""
        with _nodes_lock():
            for mount in cgroup_mounts():
                parent = mount
                for part in (CGROUP_PARENT, self.run_id):
                    child = parent / part
                    child.mkdir(exist_ok=True)
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        if (parent / knob).exists() and not (child / knob).read_text().strip():
                            (child / knob).write_text((parent / knob).read_text())
                    parent = child

    def _spawn(
        self,
        name: str,
        args: list[str],
        *,
        ready: Callable[[], Any] | None = None,
        readiness: str | None = None,
        env: Mapping[str, str] | None = None,
        inside: bool = True,
    ) -> Process:
        """Start one node process (inside the node's mount namespace unless `inside` is False)."""
        environment = {**os.environ, **(env or {})}
        environment.pop("KUBECONFIG", None)
        proc = Process(
            name,
            [*(self.enter if inside else []), *args],
            self.log_dir / f"{name}.log",
            env=environment,
            ready=ready,
            readiness=readiness,
            start_timeout=self.start_timeout,
        )
        self.processes.append(proc)
        proc.start()
        return proc

    def _start_mount_namespace(self) -> None:
        ours = _mount_namespace("self")
        holder = self.holder = Process(
            "mount-namespace",
            ["unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity"],
            self.log_dir / "mount-namespace.log",
            readiness="in a mount namespace of its own",
            start_timeout=self.start_timeout,
        )
        holder.ready = lambda: _mount_namespace(holder.pid) not in ("", ours)  # type: ignore[method-assign]
        self.processes.append(holder)
        holder.start()
        self.mount_namespace = _mount_namespace(holder.pid)
        self._inherited_mounts = set(mount_ids(Path(f"/proc/{holder.pid}/mountinfo")))
        self.enter = ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--"]
        run = self.run_dir
        # Whatever the node's processes write under /run, /var/log and /var/lib (containerd's shim sockets in
        # /run/containerd, the kubelet's /var/lib/kubelet/device-plugins and /var/log/containers, CNI caches in
        # /var/lib/cni) stays in the namespace; -n: no /run/mount/utab on the host.
        self._mount("-t", "tmpfs", "-o", "mode=0755,size=64m", "kvinject-node-run", "/run")
        self._mount("-t", "tmpfs", "-o", "mode=0755,size=256m", "kvinject-node-log", "/var/log")
        for d in ("upper", "work"):
            (run / "var-lib" / d).mkdir(parents=True)
        self._mount(
            "-t",
            "overlay",
            "-o",
            f"lowerdir=/var/lib,upperdir={run}/var-lib/upper,workdir={run}/var-lib/work",
            "kvinject-node-var-lib",
            "/var/lib",
        )
        self._write_hosts()
        self._mount("--bind", str(self.hosts_file), "/etc/hosts")
        masks = run / "sysctl"
        masks.mkdir()
        for name, value in KUBELET_SYSCTLS.items():
            mask = masks / name.replace("/", ".")
            mask.write_text(value + "\n")
            self._mount("--bind", str(mask), f"/proc/sys/{name}")

    def _mount(self, *args: str) -> None:
        self._run_inside("mount", "-n", *args)

    def _run_inside(self, *argv: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.enter, *argv], capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in the node's mount namespace failed: {result.stderr.strip()}")
        return result

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback", f"{self.address} {self.name}"]
        lines += [f"{ip} {host}" for host, ip in sorted(self.hosts.items())]
        with self.hosts_file.open("w") as f:  # in place: the bind mount holds this inode
            f.write("\n".join(lines) + "\n")

    def _write_network(self) -> None:
        """A bridge conflist (host-local IPAM, its state in the run directory) on a bridge and /24 of its own in
        10.88.0.0/16, so that two nodes in one network namespace do not meet. The bridge is made here, not at the
        first pod, so that the next node sees it taken."""
        used = network_interfaces()
        index = next(i for i in range(256) if f"kvbr{i}" not in used)
        self.bridge = f"kvbr{index}"
        subprocess.run(["ip", "link", "add", "name", self.bridge, "type", "bridge"], check=True, capture_output=True)
        conflist = {
            "cniVersion": "0.4.0",
            "name": f"kvinject-{self.run_id}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": f"10.88.{index}.0/24"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.run_dir / "cni" / "ipam"),
                    },
                }
            ],
        }
        confdir = self.run_dir / "cni" / "net.d"
        confdir.mkdir(parents=True)
        (confdir / "10-kvinject.conflist").write_text(json.dumps(conflist, indent=2))

    def _start_containerd(self) -> None:
        run = self.run_dir
        c = run / "containerd"
        c.mkdir()
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{c}/root"
state = "{c}/state"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{c}/opt"
[{cri}]
  sandbox_image = "{self.images["pause"]}"
  # runc cannot write oom_score_adj here (no CAP_SYS_RESOURCE): without this no sandbox starts.
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{run}/runc"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{run}/cni/net.d"
    max_conf_num = 1
"""
        (c / "config.toml").write_text(config)
        self.containerd = self._spawn(
            "containerd",
            ["containerd", "--config", str(c / "config.toml")],
            ready=lambda: (
                subprocess.run([*self._ctr(), "version"], capture_output=True, check=True, timeout=10).returncode == 0
            ),
            readiness="answering ctr version",
        )

    def _ctr(self) -> list[str]:
        return ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io"]

    def _start_imports(self) -> None:
        """Each image imported (and unpacked) by its own `ctr images import`, alongside the rest of the start."""
        for name in self.image_names:
            proc = Process(
                f"import-{name}",
                [*self.enter, *self._ctr(), "images", "import", str(self.artifacts.images[name].tar)],
                self.log_dir / f"import-{name}.log",
            )
            self.imports.append(proc)
            proc.start()

    def _wait_imports(self) -> None:
        for proc in self.imports:
            wait_for(lambda p=proc: p.proc.poll() is not None, f"{proc.name} to finish")  # type: ignore[misc,union-attr]
            assert proc.proc is not None
            if proc.proc.returncode != 0:
                raise RuntimeError(f"{proc.name} failed ({proc.proc.returncode}):\n{proc.tail()}")
        listed = self._run_inside(*self._ctr(), "images", "list", "--quiet").stdout.split()
        missing = [ref for ref in self.images.values() if ref not in listed]
        if missing:
            raise RuntimeError(f"images not in containerd after import: {missing}")

    def _apply_cluster_objects(self) -> None:
        """The driver's own deployment objects: its CSIDriver, the SecretProviderClassPodStatus CRD, and its RBAC
        (the driver runs as its ServiceAccount, so that RBAC is proven sufficient). Cluster-wide and idempotent."""
        m = self.artifacts.manifests
        self.cp.apply_crd(m / "secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses.yaml")
        docs = [self.artifacts.csi_driver()]
        for f in ("rbac-secretproviderclass.yaml", "rbac-secretprovidersyncing.yaml"):
            docs += [d for d in yaml.safe_load_all((m / f).read_text()) if d]
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs))

    def _start_provider(self) -> None:
        self._provider_health_port = free_port()
        health = self.provider_healthz

        def healthy() -> bool:
            with urllib.request.urlopen(health, timeout=5) as resp:
                return bool(resp.read().decode().strip() == "ok")

        self.provider = self._spawn(
            "azure-provider",
            [
                str(self.artifacts.provider),
                f"--endpoint=unix://{self.provider_socket}",
                f"--healthz-port={self._provider_health_port}",
                f"--prometheus-port={free_port()}",
                "-v=2",
            ],
            env=self.provider_env,
            ready=healthy,
            readiness=f"{health} ok",
        )

    @property
    def provider_healthz(self) -> str:
        return f"http://127.0.0.1:{self._provider_health_port}/healthz"

    def _start_driver(self) -> None:
        kubeconfig = service_account_kubeconfig(self.cp, self.run_dir / "driver.kubeconfig", *DRIVER_ACCOUNT)
        rotation = (
            ["--enable-secret-rotation=true", f"--rotation-poll-interval={self.rotation_interval}"]
            if self.rotation_interval
            else ["--enable-secret-rotation=false"]
        )
        self.driver = self._spawn(
            "secrets-store-csi-driver",
            [
                str(self.artifacts.driver),
                f"--endpoint=unix://{self.csi_socket}",
                f"--nodeid={self.name}",
                f"--provider-volume={self.provider_dir}",
                f"--additional-provider-volume-paths={self.provider_dir}",
                f"--metrics-addr=127.0.0.1:{free_port()}",
                f"--kubeconfig={kubeconfig}",
                *rotation,
                "-v=2",
            ],
            ready=self.csi_socket.is_socket,
            readiness=f"serving {self.csi_socket}",
        )

    def _start_registrar(self) -> None:
        self.registrar = self._spawn(
            "registrar",
            [
                str(self.artifacts.registrar),
                f"-socket={self.registration_socket}",
                f"-driver-name={DRIVER_NAME}",
                f"-endpoint={self.csi_socket}",
            ],
            ready=self.registration_socket.is_socket,
            readiness=f"serving {self.registration_socket}",
        )

    def _start_kubelet(self) -> None:
        cp, run = self.cp, self.run_dir
        cert, key = cp.issue_cert(
            f"kubelet-{self.run_id}", self.name, dns_names=[self.name], ip_addresses=[self.address], server=True
        )
        client_cert, client_key = cp.issue_cert(
            f"node-{self.run_id}", f"system:node:{self.name}", organizations=["system:nodes"], client=True
        )
        kubeconfig = cp.write_kubeconfig(
            run / "kubelet.kubeconfig", client_cert, client_key, f"system:node:{self.name}"
        )
        healthz_port = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroup v1 here: refused unless allowed; cgroupfs under a root made beforehand (E2E-NOTES).
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "cgroupsPerQOS": True,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.address,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz_port,
            "tlsCertFile": str(cert),
            "tlsPrivateKeyFile": str(key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(cp.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "syncFrequency": self.sync_frequency,
            "podLogsDir": str(run / "pod-logs"),
            "clusterDomain": "cluster.local",
            "clusterDNS": ["10.0.0.10"],
            "failSwapOn": False,
            # Never evict or collect images because of this machine's disks: tests must not depend on them.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
                "imagefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
            "shutdownGracePeriodCriticalPods": "0s",
            "registerNode": True,
            "registerWithTaints": self.taints,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "staticPodPath": "",
            "logging": {"format": "text"},
        }
        (run / "kubelet.yaml").write_text(json.dumps(config, indent=2))
        self.kubelet = self._spawn(
            "kubelet",
            [
                str(self.artifacts.kubelet),
                f"--config={run / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.kubelet_dir}",
                f"--volume-plugin-dir={run / 'volume-plugins'}",
                f"--node-ip={self.address}",
                f"--hostname-override={self.name}",
                "--v=2",
            ],
            ready=lambda: healthz_ok(f"http://127.0.0.1:{healthz_port}/healthz"),
            readiness="healthz ok",
        )

    def _start_scheduler(self) -> None:
        cert, key = self.cp.issue_cert("kube-scheduler", "system:kube-scheduler", client=True)
        kubeconfig = self.cp.write_kubeconfig(self.run_dir / "scheduler.kubeconfig", cert, key, "system:kube-scheduler")
        port = free_port()
        self.scheduler = self._spawn(
            "kube-scheduler",
            [
                str(self.artifacts.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.run_dir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
            ready=lambda: healthz_ok(f"https://127.0.0.1:{port}/healthz"),
            readiness="/healthz ok",
            inside=False,
        )

    def _ready(self) -> bool:
        node = self.cp.api_get(f"/api/v1/nodes/{self.name}")
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        csinode = self.cp.api_get(f"/apis/storage.k8s.io/v1/csinodes/{self.name}")
        return ready and any(d["name"] == DRIVER_NAME for d in csinode["spec"].get("drivers") or [])

    def _context(self) -> str:
        parts = []
        for proc in (self.kubelet, self.driver, self.containerd):
            if proc is not None:
                parts.append(f"last lines of {proc.log_path}:\n{proc.tail(LOG_TAIL_LINES // 2)}")
        return "\n".join(parts)

    # -- stop -----------------------------------------------------------------------

    def _stop(self) -> None:
        if self._lock is None:
            return  # start() failed before the run was claimed: nothing to undo
        errors: list[str] = []

        def step(what: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as exc:  # every step runs; the failures are raised together
                errors.append(f"{what}: {type(exc).__name__}: {exc}")

        if self.kubelet is not None:
            step("cordon", lambda: self.kubectl("cordon", self.name, check=False))
        if self.scheduler is not None:
            step("stop kube-scheduler", self.scheduler.stop)
        if self.kubelet is not None:
            step("delete the node's pods", self._delete_pods)
        for proc in (self.registrar, self.driver, self.provider, *self.imports, self.kubelet, self.containerd):
            if proc is not None:
                step(f"stop {proc.name}", proc.stop)
        holder = self.holder if self.holder is not None and self.holder.running else None
        step(
            "kill what is left of the node (shims, containers)",
            lambda: kill_run_processes(self.run_dir, self.run_id, self.mount_namespace, holder and holder.pid),
        )
        if holder is not None:
            step("unmount", self._unmount_all)
            step("stop the mount namespace", holder.stop)
        step("remove cgroups", lambda: remove_cgroups(self.run_id))
        if self.saved_sysctls:
            step("restore sysctls", lambda: self.restored_sysctls.extend(restore_sysctls(self.saved_sysctls)))
        if self.kubelet is not None:
            step("delete the Node object", lambda: self.kubectl("delete", "node", self.name, "--ignore-not-found"))
        if self.bridge and self.bridge in network_interfaces():
            step(f"delete {self.bridge}", lambda: subprocess.run(["ip", "link", "delete", self.bridge], check=True))
        step("remove the run directory", self._remove_run_dir)
        self.processes, self.imports = [], []
        if errors:
            raise NodeTeardownError(f"node {self.name} teardown:\n" + "\n".join(errors))

    def _delete_pods(self) -> None:
        """Delete the node's pods and wait until the kubelet has torn them down (volumes unmounted), which it does
        before the pod objects go; pods are force-deleted when the kubelet is gone."""
        pods = self.pods()
        kubelet_alive = self.kubelet is not None and self.kubelet.proc is not None and self.kubelet.proc.poll() is None
        for pod in pods:
            self._delete_pod(pod, force=not kubelet_alive)
        if not pods or not kubelet_alive:
            return
        pods_dir = self.kubelet_dir / "pods"
        try:
            wait_for(
                lambda: not self.pods() and not any(_under(p, pods_dir) for p in self.mounts()),
                f"the kubelet to tear down the pods of {self.name} and unmount their volumes",
                alive=self.kubelet.check_alive,  # type: ignore[union-attr]
                ignore=(OSError,),
                context=self._context,
            )
        except Exception:
            for pod in self.pods():  # the kubelet died or hangs: what it left is cleaned up after it
                self._delete_pod(pod, force=True)
            raise

    def _delete_pod(self, pod: dict[str, Any], force: bool) -> None:
        grace = ["--grace-period=0", "--force"] if force else ["--grace-period=1"]
        meta = pod["metadata"]
        self.kubectl(
            "delete", "pod", "-n", meta["namespace"], meta["name"], "--wait=false", "--ignore-not-found", *grace
        )

    def _unmount_all(self) -> None:
        """Unmount, newest first, every mount the node made in its namespace (CSI targets, the kubelet's bind of its
        root, overlay snapshots, netns binds, the tmpfs, overlay, hosts file and sysctl masks)."""
        assert self.holder is not None
        made = [
            point
            for mount_id, point in mount_ids(Path(f"/proc/{self.holder.pid}/mountinfo")).items()
            if mount_id not in self._inherited_mounts
        ]
        for point in reversed(made):
            result = subprocess.run([*self.enter, "umount", "-n", point], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                self._run_inside("umount", "-n", "-l", point)
        remaining = [p for p in self.mounts() if _under(p, self.run_dir)]
        if remaining:
            raise RuntimeError(f"still mounted in the node's namespace: {remaining}")

    def _remove_run_dir(self) -> None:
        with _nodes_lock():
            if self.run_dir.exists():
                _rmtree(self.run_dir)
            if self._lock is not None:
                (NODES_ROOT / f"{self.run_id}.lock").unlink(missing_ok=True)
                self._lock.close()
                self._lock = None


def describe(node: Node) -> str:
    """One line for the session's stderr: where the node is and what its start took (reported, never asserted)."""
    t = node.timings
    reaped = f"; reaped from crashed runs: {', '.join(node.reaped)}" if node.reaped else ""
    ready, containerd, images = (t.get(k, 0.0) for k in ("ready", "containerd", "images"))
    return (
        f"node {node.name} Ready at {node.address} in {ready:.1f}s (containerd {containerd:.1f}s, images"
        f" +{images:.1f}s after Ready); logs in {node.log_dir}{reaped}"
    )


__all__ = [
    "DRIVER_NAME",
    "KUBELET_SYSCTLS",
    "NODE_ADDRESS",
    "TOKEN_AUDIENCE",
    "Node",
    "NodeArtifacts",
    "NodeTeardownError",
    "NodeUnavailable",
    "describe",
    "network_interfaces",
    "read_sysctls",
    "reap_dead_runs",
    "require_isolation",
    "run_processes",
]

if __name__ == "__main__":  # pragma: no cover - a by-hand smoke run: tests/isolated.sh python -m tests.harness.node
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="kvinject-node-smoke-"))
    from tests.harness.controlplane import Binaries

    with ControlPlane(work / "cp", binaries=Binaries.locate()) as plane:
        plane.apply_crd(Binaries.locate().spc_crd)
        with Node(plane, work / "node", NodeArtifacts.locate()) as n:
            sys.stderr.write(describe(n) + "\n")
            sys.stderr.write(plane.kubectl("get", "nodes", "-o", "wide").stdout)
