"""Kubernetes Services on a real node: the real kube-proxy (iptables mode) in the test's network namespace.

With it, ClusterIPs answer both for the apiserver (it calls a webhook's Service at its ClusterIP: the default
service resolver) and for pods (in-cluster clients dial KUBERNETES_SERVICE_HOST=10.0.0.1). Usable without pytest,
as root inside tests/isolated.sh, beside a started Node::

    with ServiceNetwork(node, workdir) as services:
        ...  # Services of the control plane answer at their ClusterIPs

What it adds, and undoes at stop():
- kube-proxy (k8s.io/kubernetes/cmd/kube-proxy, the kubelet's version, built by tests/node/build.sh) in the
  node's mount namespace (its xtables lock lands on the node's /run), as system:kube-proxy, writing no
  host-wide sysctl (conntrack sizes and timeouts left alone, no localhost NodePorts); `kube-proxy --cleanup`
  removes its rules afterwards;
- a route of the Service range (10.0.0.0/24) onto the node's veth: locally started connections (the
  apiserver's) need a route before the OUTPUT chain's DNAT picks the endpoint;
- a TCP relay on the node's address to the apiserver, which listens on loopback only, and an EndpointSlice
  putting that relay behind the `kubernetes` Service (the control plane reconciles no endpoints of its own:
  --endpoint-reconciler-type=none). TLS passes through: pods verify the apiserver's certificate for 10.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import yaml

from tests.harness.node import NODE_ADDRESS, NODE_INTERFACE, Node
from tests.harness.process import Lifecycle, Process, free_port

SERVICE_RANGE = "10.0.0.0/24"  # the control plane's --service-cluster-ip-range
RELAY_SLICE = "kubernetes-node-relay"


def answers_ok(url: str) -> bool:
    """kube-proxy's /healthz: 200 (a JSON body) once it has synced its rules, 503 before."""
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


class TcpRelay(Lifecycle):
    """Accepts on (host, port) and copies bytes both ways to `target`, one thread per direction."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.host, self.target = host, target
        self.port = 0
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def _start(self) -> None:
        self._server = socket.create_server((self.host, 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.close()
            self._open.clear()


class ServiceNetwork(Lifecycle):
    """kube-proxy for `node`, a route for the Service range, and the `kubernetes` Service answering for pods."""

    def __init__(self, node: Node, workdir: Path) -> None:
        self.node, self.cp, self.workdir = node, node.cp, Path(workdir)
        self.binary = node.artifacts.kubelet.parent / "kube-proxy"  # build.sh builds it beside the kubelet
        self.proxy: Process | None = None
        self.relay = TcpRelay(NODE_ADDRESS, ("127.0.0.1", self.cp.apiserver_port))
        self._routed = False

    def _start(self) -> None:
        if not self.binary.is_file():
            raise FileNotFoundError(f"{self.binary} missing: run `make node-binaries` (tests/node/build.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.relay.start()
        self._publish_apiserver()
        subprocess.run(["ip", "route", "replace", SERVICE_RANGE, "dev", NODE_INTERFACE], check=True)
        self._routed = True
        self._start_proxy()

    def _publish_apiserver(self) -> None:
        """The relay as the `kubernetes` Service's endpoint (port name `https`, as the Service names it)."""
        service = self.cp.api_get("/api/v1/namespaces/default/services/kubernetes")
        port_name = service["spec"]["ports"][0]["name"]
        endpoints = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": RELAY_SLICE,
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "kvinject-tests",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_ADDRESS], "conditions": {"ready": True}}],
            "ports": [{"name": port_name, "port": self.relay.port, "protocol": "TCP"}],
        }
        self.cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(endpoints))

    def _start_proxy(self) -> None:
        cert, key = self.cp.issue_cert("kube-proxy", "system:kube-proxy", client=True)
        kubeconfig = self.cp.write_kubeconfig(self.workdir / "kube-proxy.kubeconfig", cert, key, "system:kube-proxy")
        healthz = free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "hostnameOverride": self.node.name,
            "bindAddress": NODE_ADDRESS,
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # 0: leave the machine's conntrack table size and timeouts alone (nf_conntrack_max is host-wide).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
            # No NodePorts on 127.0.0.1: that would set net.ipv4.conf.all.route_localnet.
            "iptables": {"localhostNodePorts": False},
            "nodePortAddresses": [f"{NODE_ADDRESS}/32"],
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(json.dumps(config, indent=2))
        self.proxy = Process(
            "kube-proxy",
            [*self.node.enter, str(self.binary), f"--config={path}", "--v=2"],
            self.workdir / "kube-proxy.log",
            ready=lambda: answers_ok(f"http://127.0.0.1:{healthz}/healthz"),
            readiness="/healthz ok",
        )
        self.proxy.start()

    def _stop(self) -> None:
        errors: list[str] = []
        if self.proxy is not None:
            self.proxy.stop()
            cleanup = subprocess.run(
                [*self.node.enter, str(self.binary), "--cleanup", "--v=1"], capture_output=True, text=True, check=False
            )
            if cleanup.returncode != 0:
                errors.append(f"kube-proxy --cleanup: {cleanup.stderr[-2000:]}")
        if self._routed:
            subprocess.run(["ip", "route", "del", SERVICE_RANGE, "dev", NODE_INTERFACE], check=False)
        self.cp.kubectl("delete", "endpointslice", "-n", "default", RELAY_SLICE, "--ignore-not-found", check=False)
        self.relay.stop()
        if errors:
            raise RuntimeError("\n".join(errors))
