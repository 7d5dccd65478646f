"""Admission latency under constant-rate load: kvinject beside the Azure Workload Identity webhook.

Both servers run side by side in one run, each pinned to CPU 0 (``taskset -c 0``), over TLS 1.2+
with ECDSA P-256 certificates from ``webhook.certs``; the load generator, vegeta (built by
``bench/build_tools.sh`` from its Go module), runs on CPU 1 with the rest of this harness and the
control plane. vegeta is an open-model, constant-rate generator: it sends ``-rate`` requests per
second whatever the latency, over kept-alive HTTP/1.1 connections (like the apiserver's webhook
client), verifying the servers' certificates against their CA.

Every server gets the *same* AdmissionReview bodies (dryRun, namespace ``payments``): a pod as a
ReplicaSet controller sends it, labelled for both webhooks, with kvinject's secret annotation and
the ServiceAccount ``api`` (federated: kvinject reads it from examples/cluster.yaml, the peer from
a real local control plane). Two sizes: ~10 KiB (3 containers x 30 env vars) and ~75 KiB
(10 containers x 100 env vars).

For each server x pod size, the offered rate climbs a ladder (50, 100, 150, 200, 300, 500, ... rps) until
two consecutive steps miss the objective (p99 < 10 ms, errors <= 0.1 %, throughput >= 95 % of
offered). Each step records p50/p90/p99/max latency (exact, from vegeta's raw results, after
dropping the step's first second, which holds the TLS handshakes of new connections), throughput,
errors, and the server's CPU (utime+stime from /proc) and peak RSS. It prints a table and the
ratios kvinject/peer, and writes bench/out/load-<mode>.json, bench/out/load-<mode>.md and a plot.

The peer binds every interface on :9443 (it has no flag for its address): run inside
tests/isolated.sh's private network namespace::

    tests/isolated.sh .venv/bin/python bench/load.py            # full run (~15-25 min), writes bench/latency.png
    tests/isolated.sh .venv/bin/python bench/load.py --smoke    # < 30 s, CI's check that the harness works
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import datetime as dt
import io
import json
import math
import os
import platform
import shlex
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402 - after the sys.path line, like bench/policy_scaling.py
    CLIENT_ID,
    EXAMPLES,
    TENANT_ID,
    AzwiWebhook,
    Binaries,
    ControlPlane,
    ServeProcess,
    WaitTimeout,
    admission_review,
    cache_dir,
    controller_pod,
    isolated_network,
    read_versions,
    trust,
    wait_for,
)

BENCH = ROOT / "bench"
K = "kvinject.io/"
NAMESPACE = "payments"
SERVICE_ACCOUNT = "api"
SERVERS = ("kvinject", "peer")
LABELS = {"kvinject": "kvinject", "peer": "azure-wi-webhook"}
RATIO_RATES = (200, 500)
FULL_RATES = (50, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000)
EXIT_TOOLS_MISSING = 4
EXIT_NOT_ISOLATED = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class PodSize:
    name: str
    containers: int
    env_per_container: int


SIZES = {"10k": PodSize("10 KiB", 3, 30), "75k": PodSize("75 KiB", 10, 100)}


# --------------------------------------------------------------------------------------
# The request bodies
# --------------------------------------------------------------------------------------


def env_var(c: int, i: int) -> dict[str, Any]:
    """A realistic mix: mostly literal values, some from ConfigMaps, Secrets and the downward API."""
    name = f"{['FEATURE', 'LIMIT', 'ENDPOINT', 'TIMEOUT', 'CACHE'][i % 5]}_{c}_{i:03d}"
    kind = i % 10
    if kind == 7:
        return {"name": name, "valueFrom": {"configMapKeyRef": {"name": f"app-config-{c}", "key": f"k{i}"}}}
    if kind == 8:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": f"app-secret-{c}", "key": f"k{i}"}}}
    if kind == 9:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    return {"name": name, "value": f"http://svc-{i:03d}:8080/v{c}"}


def container(c: int, envs: int) -> dict[str, Any]:
    return {
        "name": f"app-{c}",
        "image": f"registry.example.com/team/service-{c}:1.{c}.7",
        "args": ["--config=/etc/app/config.yaml", f"--shard={c}"],
        "ports": [{"name": "http", "containerPort": 8080 + c, "protocol": "TCP"}],
        "env": [env_var(c, i) for i in range(envs)],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": True}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
            "periodSeconds": 10,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "http", "scheme": "HTTP"},
            "initialDelaySeconds": 5,
            "periodSeconds": 20,
            "timeoutSeconds": 1,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }


def pod(size: PodSize) -> dict[str, Any]:
    """A controller-made pod both webhooks act on: both labels, kvinject's annotation, a federated SA."""
    labels = {
        "app": "api",
        "pod-template-hash": "7d9f8c6b5",
        K + "inject": "true",
        "azure.workload.identity/use": "true",
    }
    return controller_pod(
        annotations={K + "secret-db-password": "db-password"},
        containers=[container(c, size.env_per_container) for c in range(size.containers)],
        service_account=SERVICE_ACCOUNT,
        labels=labels,
        volumes=[{"name": "config", "configMap": {"name": "app-config", "defaultMode": 420}}],
    )


def review_body(size: PodSize) -> bytes:
    review = admission_review(pod(size), namespace=NAMESPACE, dry_run=True, uid="6a1f3c52-8f5e-4d0b-9c3e-bench0000001")
    return orjson.dumps(review)


# --------------------------------------------------------------------------------------
# Processes: the two servers and the control plane
# --------------------------------------------------------------------------------------


def pinned(cpu: int | None) -> list[str]:
    """``taskset -c CPU`` before a command: every thread the program will start inherits the affinity."""
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


Server = ServeProcess | AzwiWebhook  # started and ready; `name` is "kvinject" or "peer"


def start_kvinject(workdir: Path, cpu: int | None) -> ServeProcess:
    """`kvinject serve` on examples/cluster.yaml at its default log level, without this shell's KVINJECT_*."""
    cluster = ["--cluster", str(EXAMPLES / "cluster.yaml")]
    server = ServeProcess(
        workdir / "kvinject", cluster, log_level=None, wrapper=pinned(cpu), inherit_kvinject_env=False, cwd=ROOT
    )
    return server.start()


def prepare_peer_cluster(cp: ControlPlane) -> None:
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": SERVICE_ACCOUNT,
                "namespace": NAMESPACE,
                "annotations": {
                    "azure.workload.identity/client-id": CLIENT_ID,
                    "azure.workload.identity/tenant-id": TENANT_ID,
                },
            },
        },
    ]
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def start_peer(workdir: Path, cp: ControlPlane, binaries: Binaries, cpu: int | None) -> AzwiWebhook:
    return AzwiWebhook(binaries.azwi_webhook, workdir, cp.kubeconfig, name="peer", wrapper=pinned(cpu)).start()


def api_gets(server: Server) -> int:
    """The GETs the peer sent to the API server so far (its client-go metric): its cache must serve the SA."""
    if not isinstance(server, AzwiWebhook):
        return 0
    total = 0.0
    for line in httpx.get(server.metrics_url, timeout=5).text.splitlines():
        if line.startswith("rest_client_requests_total{") and 'method="GET"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def post(server: Server, body: bytes, ctx: ssl.SSLContext) -> dict[str, Any]:
    response = httpx.post(
        server.mutate_url, content=body, headers={"Content-Type": "application/json"}, verify=ctx, timeout=5
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def preflight(server: Server, size: PodSize, body: bytes) -> str:
    """One request: the server must admit the pod with a non-empty JSON patch that injects its part."""
    ctx = trust(server.ca_file)

    def admitted() -> dict[str, Any] | None:
        answer = post(server, body, ctx)["response"]
        return answer if answer.get("allowed") and answer.get("patch") else None

    answer = server.wait_until(admitted, f"an admitted, patched {size.name} pod")
    patch = json.loads(base64.b64decode(answer["patch"]))
    text = json.dumps(patch)
    marker = "kvinject-secrets" if server.name == "kvinject" else "AZURE_CLIENT_ID"
    if marker not in text:
        raise RuntimeError(f"{server.name}: the patch for the {size.name} pod lacks {marker}: {text[:500]}")
    return f"{len(patch)} ops, {len(text)} bytes"


def tls_version(server: Server) -> str:
    """The protocol the server negotiates (probed with Python's client; cipher choice may differ for Go)."""
    host, _, rest = server.mutate_url.removeprefix("https://").partition(":")
    port = int(rest.split("/")[0])
    ctx = trust(server.ca_file)
    import socket

    with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        cipher = tls.cipher()
        return f"{tls.version()} {cipher[0] if cipher else '?'}"


def thread_affinities(pid: int) -> set[str]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out.add(line.split(":", 1)[1].strip())
    return out


# --------------------------------------------------------------------------------------
# Measuring one step
# --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def cpu_busy_seconds(cpu: int | None) -> float:
    """Busy time of one CPU (all processes) from /proc/stat: the server's share plus any interference."""
    if cpu is None:
        return 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / CLK_TCK
    return 0.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """The peak VmRSS of a process while the block runs (sampled every 100 ms)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))


@dataclass
class Step:
    server: str
    size: str
    rate: int
    requests: int
    successes: int
    errors: int
    error_ratio: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    sent_rps: float
    throughput_rps: float
    server_cpu_pct: float
    server_cpu_us_per_req: float
    server_rss_mib: float
    generator_cpu_pct: float
    other_cpu_pct: float
    ok: bool
    error_samples: list[str] = field(default_factory=list)
    status_codes: dict[str, int] = field(default_factory=dict)


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class LoadSettings:
    vegeta: Path
    duration: float
    step_warmup: float
    connections: int
    max_workers: int
    timeout: float
    slo_ms: float
    max_error_ratio: float
    min_throughput_ratio: float


def vegeta_attack(
    s: LoadSettings, server: Server, body_file: Path, rate: int, seconds: float, output: Path
) -> subprocess.Popen[bytes]:
    args = [
        str(s.vegeta),
        "attack",
        f"-rate={rate}/1s",
        f"-duration={seconds:.3f}s",
        "-keepalive=true",
        "-http2=false",
        f"-root-certs={server.ca_file}",
        f"-body={body_file}",
        "-header=Content-Type: application/json",
        f"-connections={s.connections}",
        f"-max-connections={s.connections}",
        "-workers=8",
        f"-max-workers={s.max_workers}",
        f"-timeout={s.timeout:g}s",
        "-max-body=0",
        "-redirects=-1",
        f"-output={output}",
    ]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=False)


def attack_command(s: LoadSettings, rate: int, seconds: float) -> str:
    """The vegeta invocation, for RESULTS.md."""
    return (
        f"echo 'POST https://127.0.0.1:PORT/PATH' | taskset -c 1 vegeta attack -rate={rate}/1s "
        f"-duration={seconds:g}s -keepalive=true -http2=false -root-certs=ca.crt -body=review.json "
        f"-header='Content-Type: application/json' -connections={s.connections} "
        f"-max-connections={s.connections} -workers=8 -max-workers={s.max_workers} -timeout={s.timeout:g}s "
        "-max-body=0 -redirects=-1"
    )


def run_attack(s: LoadSettings, server: Server, body_file: Path, rate: int, seconds: float, raw: Path) -> None:
    proc = vegeta_attack(s, server, body_file, rate, seconds, raw)
    _, err = proc.communicate(f"POST {server.mutate_url}\n".encode(), timeout=seconds + s.timeout + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"vegeta attack failed ({proc.returncode}): {err.decode(errors='replace')}")


def decode(s: LoadSettings, raw: Path) -> list[tuple[int, int, int, str]]:
    """vegeta's raw results as (start ns, status code, latency ns, error), sorted by start."""
    out = subprocess.run(
        [str(s.vegeta), "encode", "-to=csv", str(raw)], capture_output=True, check=True, timeout=120
    ).stdout
    rows = []
    for rec in csv.reader(io.StringIO(out.decode(errors="replace"))):
        rows.append((int(rec[0]), int(rec[1]), int(rec[2]), rec[5]))
    rows.sort()
    return rows


def wait_idle(pid: int, limit: float = 10.0) -> None:
    """Until the server has used under 5 % CPU over 200 ms (it may still drain a backlog), for `limit` s at most."""

    def idle() -> bool:
        before = cpu_seconds(pid)
        time.sleep(0.2)
        return cpu_seconds(pid) - before < 0.01

    with contextlib.suppress(WaitTimeout):  # measure anyway: the step records the CPU it shares
        wait_for(idle, "the server to idle", timeout=limit, interval=0)


def measure(
    s: LoadSettings, server: Server, size: PodSize, body_file: Path, rate: int, scratch: Path, cpu: int | None
) -> Step:
    server.check_alive()
    wait_idle(server.pid)
    raw = scratch / f"{server.name}-{rate}.bin"
    total = s.step_warmup + s.duration
    proc = vegeta_attack(s, server, body_file, rate, total, raw)
    assert proc.stdin is not None
    proc.stdin.write(f"POST {server.mutate_url}\n".encode())
    proc.stdin.close()
    started = time.monotonic()
    with RssSampler(server.pid) as rss:
        time.sleep(s.step_warmup)
        cpu0, gen0, t0 = cpu_seconds(server.pid), cpu_seconds(proc.pid), time.monotonic()
        core0 = cpu_busy_seconds(cpu)
        gen1 = gen0
        while proc.poll() is None:
            try:
                gen1 = cpu_seconds(proc.pid)
            except OSError:
                break
            time.sleep(0.05)
            if time.monotonic() - started > total + s.timeout + 30:
                proc.kill()
                raise RuntimeError("vegeta did not finish in time")
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        core1 = cpu_busy_seconds(cpu)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"vegeta attack failed ({proc.returncode}): {err.decode(errors='replace')}")
    rows = decode(s, raw)
    raw.unlink()
    if not rows:
        raise RuntimeError(f"vegeta returned no results for {server.name} at {rate} rps")
    cut = rows[0][0] + int(s.step_warmup * 1e9)
    window = [r for r in rows if r[0] >= cut]
    good = [r for r in window if 200 <= r[1] < 300 and not r[3]]
    latencies = sorted(r[2] for r in window)
    errors = len(window) - len(good)
    span_sent = max((window[-1][0] - window[0][0]) / 1e9, 1e-9)
    span_done = max((max(r[0] + r[2] for r in window) - window[0][0]) / 1e9, 1e-9)
    codes: dict[str, int] = {}
    for r in window:
        codes[str(r[1])] = codes.get(str(r[1]), 0) + 1
    samples = sorted({r[3] or f"HTTP {r[1]}" for r in window if r not in good})[:5]
    wall = max(t1 - t0, 1e-9)
    server_cpu = cpu1 - cpu0
    p99 = percentile(latencies, 0.99) / 1e6
    error_ratio = errors / len(window)
    throughput = len(good) / span_done
    step = Step(
        server=server.name,
        size=size.name,
        rate=rate,
        requests=len(window),
        successes=len(good),
        errors=errors,
        error_ratio=error_ratio,
        p50_ms=percentile(latencies, 0.50) / 1e6,
        p90_ms=percentile(latencies, 0.90) / 1e6,
        p99_ms=p99,
        max_ms=latencies[-1] / 1e6,
        mean_ms=sum(latencies) / len(latencies) / 1e6,
        sent_rps=(len(window) - 1) / span_sent if len(window) > 1 else 0.0,
        throughput_rps=throughput,
        server_cpu_pct=100 * server_cpu / wall,
        server_cpu_us_per_req=1e6 * server_cpu / max(len(window), 1),
        server_rss_mib=rss.peak / 1024,
        generator_cpu_pct=100 * (gen1 - gen0) / wall,
        other_cpu_pct=max(0.0, 100 * ((core1 - core0) - server_cpu) / wall) if cpu is not None else 0.0,
        ok=p99 < s.slo_ms and error_ratio <= s.max_error_ratio and throughput >= s.min_throughput_ratio * rate,
        error_samples=samples,
        status_codes=codes,
    )
    return step


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------

HEADER = (
    f"{'server':<16} {'pod':>6} {'offered':>7} {'thrput':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
    f"{'max ms':>7} {'errors':>7} {'cpu %':>6} {'cpu µs/req':>10} {'rss MiB':>7} {'gen cpu%':>8} {'other%':>6} ok"
)


def row(st: Step) -> str:
    return (
        f"{LABELS[st.server]:<16} {st.size:>6} {st.rate:>7} {st.throughput_rps:>7.0f} {st.p50_ms:>7.2f} "
        f"{st.p90_ms:>7.2f} {st.p99_ms:>7.2f} {st.max_ms:>7.1f} {st.error_ratio:>7.2%} {st.server_cpu_pct:>6.0f} "
        f"{st.server_cpu_us_per_req:>10.0f} {st.server_rss_mib:>7.1f} {st.generator_cpu_pct:>8.0f} "
        f"{st.other_cpu_pct:>6.0f} "
        f"{'yes' if st.ok else 'NO'}"
    )


def find(steps: list[Step], server: str, size: str, rate: int) -> Step | None:
    return next((x for x in steps if x.server == server and x.size == size and x.rate == rate), None)


def sustained(steps: list[Step], server: str, size: str) -> int:
    """The highest offered rate that met the objective (the ladder stops after two misses in a row)."""
    return max((x.rate for x in steps if x.server == server and x.size == size and x.ok), default=0)


def ratio_lines(steps: list[Step], sizes: list[PodSize], slo_ms: float) -> list[str]:
    lines = []
    for size in sizes:
        for rate in RATIO_RATES:
            a, b = find(steps, "kvinject", size.name, rate), find(steps, "peer", size.name, rate)
            for metric in ("p50", "p99"):
                label = f"RATIO kvinject/peer {metric} latency @ {rate} rps, {size.name} pod:"
                if a is None or b is None:
                    lines.append(f"{label} n/a (not measured)")
                    continue
                va, vb = getattr(a, f"{metric}_ms"), getattr(b, f"{metric}_ms")
                lines.append(f"{label} {va / vb:.3g}x (kvinject {va:.2f} ms, peer {vb:.2f} ms)")
        ka, kb = sustained(steps, "kvinject", size.name), sustained(steps, "peer", size.name)
        label = f"RATIO kvinject/peer highest sustained rate (p99 < {slo_ms:g} ms), {size.name} pod:"
        if not any(x.size == size.name and x.server == "kvinject" for x in steps) or not any(
            x.size == size.name and x.server == "peer" for x in steps
        ):
            lines.append(f"{label} n/a (not measured)")
            continue
        ratio = f"{ka / kb:.3g}x" if kb else "n/a (the peer met the objective at no rate)"
        note = ""
        for name, value in (("kvinject", ka), ("peer", kb)):
            tried = [x.rate for x in steps if x.server == name and x.size == size.name]
            if value == max(tried):
                note += f" ({name}: top of the ladder reached, its limit is higher)"
        lines.append(f"{label} {ratio} (kvinject {ka} rps, peer {kb} rps){note}")
    return lines


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def run(*args: str) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "kvinject_commit": run("git", "rev-parse", "--short", "HEAD")
        + ("-dirty" if run("git", "status", "--porcelain", "--untracked-files=no") else ""),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def plot(steps: list[Step], sizes: list[PodSize], path: Path, slo_ms: float, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(sizes), figsize=(6.4 * len(sizes), 4.8), sharey=True, squeeze=False)
    colors = {"kvinject": "tab:blue", "peer": "tab:orange"}
    for ax, size in zip(axes[0], sizes, strict=True):
        for server in SERVERS:
            pts = sorted((x for x in steps if x.server == server and x.size == size.name), key=lambda x: x.rate)
            if not pts:
                continue
            rates = [x.rate for x in pts]
            ax.plot(rates, [x.p50_ms for x in pts], "o-", color=colors[server], label=f"{LABELS[server]} p50")
            ax.plot(rates, [x.p99_ms for x in pts], "s--", color=colors[server], label=f"{LABELS[server]} p99")
            bad = [x for x in pts if not x.ok]
            ax.plot([x.rate for x in bad], [x.p99_ms for x in bad], "x", color="red", markersize=10)
        ax.axhline(slo_ms, color="grey", linestyle=":", linewidth=1, label=f"{slo_ms:g} ms objective")
        ax.set_xscale("log")
        ax.set_yscale("log")
        tried = sorted({x.rate for x in steps if x.size == size.name})
        ticks = [t for t in (50, 100, 200, 500, 1000, 2000, 5000, 10000) if tried and tried[0] <= t <= tried[-1]]
        ax.set_xticks(ticks or tried, [str(t) for t in (ticks or tried)])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("offered rate (requests/s, constant)")
        ax.set_title(f"{size.name} pod ({size.containers} containers x {size.env_per_container} env vars)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("latency (ms, log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="red", marker="x", linestyle="", markersize=10))
    labels.append("objective missed")
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.suptitle(
        f"AdmissionReview latency over TLS (keep-alive), each server on 1 core, vegeta on the other\n{subtitle}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(
    steps: list[Step], ratios: list[str], info: dict[str, Any], command: str, s: LoadSettings, plot_path: Path | None
) -> str:
    out = [
        "## Load: kvinject vs the Azure Workload Identity webhook",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Linux {info['kernel']}, "
        f"Python {info['python']}; {info['date']}; kvinject {info['kvinject_commit']}; peer "
        f"{info.get('peer_version', '?')}; vegeta {info.get('vegeta_version', '?')}; "
        f"load average at start {' '.join(info['loadavg_at_start'])}, "
        f"at end {' '.join(info.get('loadavg_at_end', []))}.",
        "",
        f"Command: `{command}` (also `make bench`). Each server pinned to CPU 0, vegeta to CPU 1. TLS: "
        f"kvinject {info.get('tls_kvinject', '?')}, peer {info.get('tls_peer', '?')} (ECDSA P-256, min TLS 1.2). "
        f"Request bodies: {info.get('body_sizes', '?')}.",
        "",
        f"Per step: `{attack_command(s, 500, s.step_warmup + s.duration)}`; the first {s.step_warmup:g} s of "
        f"each step (new connections' handshakes) is dropped, the next {s.duration:g} s measured. Objective: "
        f"p99 < {s.slo_ms:g} ms, errors <= {s.max_error_ratio:.1%}, throughput >= "
        f"{s.min_throughput_ratio:.0%} of offered.",
        "",
        "| server | pod | offered rps | throughput | p50 ms | p90 ms | p99 ms | max ms | errors | CPU % "
        "| CPU µs/req | RSS MiB | other on its CPU % | met |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for st in steps:
        out.append(
            f"| {LABELS[st.server]} | {st.size} | {st.rate} | {st.throughput_rps:.0f} | {st.p50_ms:.2f} | "
            f"{st.p90_ms:.2f} | {st.p99_ms:.2f} | {st.max_ms:.1f} | {st.error_ratio:.2%} | "
            f"{st.server_cpu_pct:.0f} | {st.server_cpu_us_per_req:.0f} | {st.server_rss_mib:.1f} | "
            f"{st.other_cpu_pct:.0f} | "
            f"{'yes' if st.ok else 'no'} |"
        )
    out += ["", "Ratios (kvinject / peer; above 1 means kvinject is slower or, for rates, sustains more):", ""]
    out += [f"- {line.removeprefix('RATIO kvinject/peer ')}" for line in ratios]
    if plot_path is not None:
        out += ["", f"![latency vs offered rate]({plot_path.name})"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def vegeta_path() -> Path:
    version = read_versions(BENCH / "versions.env")["VEGETA_VERSION"]
    return cache_dir() / "bin" / f"vegeta-{version}" / "vegeta"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a tiny run (< 30 s) checking the harness end to end")
    p.add_argument(
        "--rates", help="comma-separated offered rates (default: 50,100,150,200,300,500,...,8000; smoke: 200,500)"
    )
    p.add_argument("--sizes", default="10k,75k", help="pod sizes among 10k,75k")
    p.add_argument("--servers", default="kvinject,peer", help="servers among kvinject,peer")
    p.add_argument("--duration", type=float, help="measured seconds per step (default 20; smoke 1)")
    p.add_argument("--step-warmup", type=float, help="seconds dropped at the start of each step (default 1; smoke 0.5)")
    p.add_argument("--warmup", type=float, help="seconds of load at the first rate before a series (default 5)")
    p.add_argument("--slo-ms", type=float, default=10.0, help="p99 objective in ms")
    p.add_argument("--connections", type=int, default=64, help="vegeta -connections and -max-connections")
    p.add_argument("--max-workers", type=int, default=64, help="vegeta -max-workers (max requests in flight)")
    p.add_argument("--timeout", type=float, default=5.0, help="vegeta -timeout in seconds")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU of vegeta, the harness and the control plane")
    p.add_argument("--out", type=Path, default=BENCH / "out", help="directory of the JSON and markdown results")
    p.add_argument("--plot", type=Path, help="PNG to write (default bench/latency.png; smoke bench/out/...)")
    p.add_argument("--render", type=Path, help="re-make the report and plot from a saved load-<mode>.json")
    p.add_argument("--no-stop", action="store_true", help="run every rate even after the objective is missed")
    return p.parse_args(argv)


@contextmanager
def servers_running(
    names: list[str], workdir: Path, cpu: int | None, binaries: Binaries
) -> Iterator[tuple[dict[str, Server], dict[str, str]]]:
    info: dict[str, str] = {}
    with ExitStack() as stack:
        running: dict[str, Server] = {}
        if "kvinject" in names:
            running["kvinject"] = start_kvinject(workdir, cpu)
            stack.callback(running["kvinject"].stop)
        if "peer" in names:
            t0 = time.monotonic()
            cp = stack.enter_context(ControlPlane(workdir / "controlplane", binaries=binaries))
            prepare_peer_cluster(cp)
            print(f"control plane ready in {time.monotonic() - t0:.1f}s", flush=True)
            running["peer"] = start_peer(workdir, cp, binaries, cpu)
            stack.callback(running["peer"].stop)
            out = subprocess.run([str(binaries.azwi_webhook), "--version"], capture_output=True, text=True, timeout=10)
            info["peer_version"] = "azwi-webhook " + json.loads(out.stdout or "{}").get("buildVersion", "?")
        yield running, info


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render(args.render, args.out, args.plot)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    size_keys = [k.strip() for k in args.sizes.split(",") if k.strip()]
    if not set(names) <= set(SERVERS) or not set(size_keys) <= set(SIZES):
        print(f"unknown server or size: {names} {size_keys}", file=sys.stderr)
        return 2
    sizes = [SIZES[k] for k in size_keys]
    mode = "smoke" if args.smoke else "full"
    rates = [int(r) for r in args.rates.split(",")] if args.rates else ([200, 500] if args.smoke else list(FULL_RATES))
    s = LoadSettings(
        vegeta=vegeta_path(),
        duration=args.duration if args.duration is not None else (1.0 if args.smoke else 20.0),
        step_warmup=args.step_warmup if args.step_warmup is not None else (0.5 if args.smoke else 1.0),
        connections=args.connections,
        max_workers=args.max_workers,
        timeout=args.timeout,
        slo_ms=args.slo_ms,
        max_error_ratio=0.001,
        min_throughput_ratio=0.95,
    )
    warmup = args.warmup if args.warmup is not None else (0.0 if args.smoke else 5.0)
    plot_path = args.plot or (BENCH / "out" / "latency-smoke.png" if args.smoke else BENCH / "latency.png")
    stop_early = not (args.no_stop or args.smoke)

    binaries = Binaries.locate()
    missing = [p for p in [s.vegeta] if not os.access(p, os.X_OK)]
    if "peer" in names:
        missing += binaries.missing(*Binaries.CONTROL_PLANE, "azwi_webhook")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        missing.append(Path("matplotlib (python package)"))
    if missing:
        print("TOOLS MISSING: run tests/e2e/build_binaries.sh and bench/build_tools.sh; missing:", file=sys.stderr)
        for p in missing:
            print(f"  {p}", file=sys.stderr)
        return EXIT_TOOLS_MISSING
    if "peer" in names and not isolated_network():
        print(
            "NOT ISOLATED: the Azure Workload Identity webhook binds every interface on :9443; run inside a "
            "private network namespace: tests/isolated.sh .venv/bin/python bench/load.py ...",
            file=sys.stderr,
        )
        return EXIT_NOT_ISOLATED

    cpus = os.sched_getaffinity(0)
    server_cpu: int | None = args.server_cpu
    if {args.server_cpu, args.client_cpu} <= cpus and args.server_cpu != args.client_cpu:
        os.sched_setaffinity(0, {args.client_cpu})  # vegeta, the control plane and this harness inherit it
    else:
        print(f"warning: CPUs {args.server_cpu},{args.client_cpu} not both available ({cpus}); not pinning")
        server_cpu = None

    info = machine()
    out = subprocess.run([str(s.vegeta), "-version"], capture_output=True, text=True, timeout=10).stdout
    info["vegeta_version"] = out.split()[1] if len(out.split()) > 1 else "?"
    command = "tests/isolated.sh .venv/bin/python bench/load.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else ""
    )
    started = time.monotonic()
    steps: list[Step] = []
    bodies = {size.name: review_body(size) for size in sizes}
    info["body_bytes"] = {n: len(b) for n, b in bodies.items()}
    info["body_sizes"] = ", ".join(f"{n}: {len(b):,} bytes ({len(b) / 1024:.1f} KiB)" for n, b in bodies.items())
    print(f"AdmissionReview bodies: {info['body_sizes']}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kvinject-load-") as tmp:
        work = Path(tmp)
        body_files = {}
        for name, body in bodies.items():
            body_files[name] = work / f"review-{name.replace(' ', '')}.json"
            body_files[name].write_bytes(body)
        with servers_running(names, work, server_cpu, binaries) as (running, peer_info):
            info.update(peer_info)
            for server in running.values():
                affinity = thread_affinities(server.pid)
                info[f"tls_{server.name}"] = tls_version(server)
                print(
                    f"{LABELS[server.name]}: pid {server.pid}, threads on CPU {','.join(sorted(affinity))}, "
                    f"{info[f'tls_{server.name}']}, {server.mutate_url}",
                    flush=True,
                )
                if server_cpu is not None and affinity != {str(server_cpu)}:
                    raise RuntimeError(f"{server.name} is not pinned to CPU {server_cpu}: {affinity}")
                for size in sizes:
                    print(f"  {size.name}: {preflight(server, size, bodies[size.name])}", flush=True)
            gets_before = {name: api_gets(server) for name, server in running.items()}
            print(HEADER, flush=True)
            for size in sizes:
                for name in names:
                    server = running[name]
                    if warmup > 0:
                        run_attack(s, server, body_files[size.name], rates[0], warmup, work / "warmup.bin")
                    misses = 0
                    for rate in rates:
                        st = measure(s, server, size, body_files[size.name], rate, work, server_cpu)
                        steps.append(st)
                        print(row(st), flush=True)
                        misses = 0 if st.ok else misses + 1
                        if stop_early and misses >= 2 and rate >= max(RATIO_RATES):
                            break
            for name, server in running.items():
                server.check_alive()
                if isinstance(server, AzwiWebhook):
                    sent = sum(x.requests for x in steps if x.server == name)
                    gets = api_gets(server) - gets_before[name]
                    info[f"api_gets_{name}"] = f"{gets} API GETs for {sent} measured admissions"
                    print(f"{LABELS[name]}: {info[f'api_gets_{name}']} (ServiceAccount served from its cache)")

    info["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    result = {
        "mode": mode,
        "command": command,
        "machine": info,
        "settings": {**asdict(s), "vegeta": str(s.vegeta), "warmup": warmup, "rates": rates},
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "steps": [asdict(st) for st in steps],
    }
    report(result, sizes, args.out, plot_path)
    return 0


def report(result: dict[str, Any], sizes: list[PodSize], out: Path, plot_path: Path) -> None:
    """Print the ratios; write load-<mode>.json, load-<mode>.md and the plot."""
    steps = [Step(**x) for x in result["steps"]]
    info, mode = result["machine"], result["mode"]
    fields = {k: v for k, v in result["settings"].items() if k in LoadSettings.__dataclass_fields__}
    settings = LoadSettings(**{**fields, "vegeta": Path(fields["vegeta"])})
    ratios = ratio_lines(steps, sizes, settings.slo_ms)
    result["ratios"] = ratios
    result["sustained_rps"] = {f"{st.server} {st.size}": sustained(steps, st.server, st.size) for st in steps}
    print()
    for line in ratios:
        print(line)
    print(f"\n{mode} run: {len(steps)} steps in {result['elapsed_seconds']:.0f}s")
    out.mkdir(parents=True, exist_ok=True)
    plot(steps, sizes, plot_path, settings.slo_ms, f"{info['cpu']}; {info['date']}")
    (out / f"load-{mode}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    (out / f"load-{mode}.md").write_text(markdown(steps, ratios, info, result["command"], settings, plot_path))
    print(f"wrote {out / f'load-{mode}.json'}, {out / f'load-{mode}.md'} and {plot_path}")


def render(path: Path, out: Path, plot_path: Path | None) -> int:
    """Re-make the table, ratios, markdown and plot from a saved load-<mode>.json (no load is run)."""
    result = json.loads(path.read_text())
    names = {x["size"] for x in result["steps"]}
    sizes = [z for z in SIZES.values() if z.name in names]
    print(HEADER)
    for x in result["steps"]:
        print(row(Step(**x)))
    default_plot = BENCH / "out" / "latency-smoke.png" if result["mode"] == "smoke" else BENCH / "latency.png"
    report(result, sizes, out, plot_path or default_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
