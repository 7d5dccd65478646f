"""Drive request bodies through the real ASGI app in-process and check the properties every answer must have.

The app is called as `app(scope, receive, send)` directly (no HTTP client, no sockets), on one event loop,
with the cluster of the golden tests. For every input:

- the HTTP status is 200, 400 or 413; no exception escapes the app and none is logged by it;
- a body larger than the limit (or declaring so in Content-Length) is a 413 with a JSON error;
- a parseable AdmissionReview with a non-empty string request.uid, sent as application/json within the limit,
  is a 200 whose response.uid is that uid; anything else is never a 200;
- a 200 is an AdmissionReview v1 whose response.allowed is a bool, that never carries a 500 status or a
  "kvinject internal error" (the catch-all for unhandled exceptions), and whose patch, when present, is a
  base64 JSONPatch that applies cleanly to request.object;
- re-admitting the patched pod (mutate) is allowed with no patch: kvinject's output is a fixed point; and
  validating it (what the apiserver does next) finds no tampering;
- a body over the parse budget (review.MAX_CONTAINERS, MAX_SEPARATORS: counted on the bytes, so independent
  of the machine) is a 400 before anything is parsed;
- peak memory per request stays under a bound that grows linearly with the body (the rise of the process' peak
  RSS above its RSS before the request; Linux: VmHWM, reset before each request through /proc/self/clear_refs).
- CPU and wall time are measured and reported. Only `make fuzz` (run_fuzz.py) bounds CPU time, as a ratio to a
  normal request of the same size measured in the same run (`Calibration`); tests never do.

Objects kvinject creates (generated SecretProviderClasses) are removed after each input, so every input sees
the same cluster and every failure reproduces on its own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import orjson

from tests.harness import admission_review, controller_pod, golden_cluster
from webhook import review
from webhook.app import MAX_BODY, create_app
from webhook.review import API_VERSION, KIND
from webhook.settings import Settings

ENDPOINTS = ("/mutate", "/validate")
JSON = b"application/json"
OK_STATUSES = frozenset({200, 400, 413})
INTERNAL_ERROR = "kvinject internal error"
TAMPERED = "was changed after kvinject injected it"
MEMORY_BASE = 64 * 1024 * 1024
MEMORY_PER_BODY_BYTE = 48  # a body of empty JSON objects becomes about 40 times its size in Python objects
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_KB = {name: re.compile(rf"^{name}:\s+(\d+) kB", re.M) for name in ("VmRSS", "VmHWM")}


def _memory() -> tuple[int, int]:
    """(RSS, peak RSS) in bytes; (0, 0) where /proc does not tell."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return 0, 0
    found = [_KB[name].search(text) for name in ("VmRSS", "VmHWM")]
    return (int(found[0].group(1)) * 1024, int(found[1].group(1)) * 1024) if found[0] and found[1] else (0, 0)


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return False
    return True


CHUNK = 64 * 1024  # how a server hands the body over


def memory_bound(body_size: int) -> int:
    return MEMORY_BASE + MEMORY_PER_BODY_BYTE * body_size


def over_budget(body: bytes) -> bool:
    """The body is refused before parsing: more containers or separators than one request may cost."""
    containers, separators = review.work(body)
    return containers > review.MAX_CONTAINERS or separators > review.MAX_SEPARATORS


@dataclass(frozen=True, slots=True)
class Calibration:
    """CPU seconds of a normal request, small and at the body limit, measured on this machine in this run.

    Any input may cost `ratio` times the normal request at the limit: the parse budget, not the body's size,
    is what bounds the work, so the worst accepted body is compared with the largest normal one.
    """

    small: float
    full: float
    ratio: float

    def limit(self) -> float:
        return self.ratio * self.full


@dataclass(frozen=True, slots=True)
class Input:
    kind: str  # how it was made: structured, bytes, edge, ... (for the report)
    endpoint: str
    body: bytes
    content_type: bytes | None = JSON
    content_length: bytes | None = None  # None: the true length; b"": no header (streamed)
    chunk: int = CHUNK
    label: str = ""  # what a hand-made input is about

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"host", b"kvinject")]
        if self.content_type is not None:
            headers.append((b"content-type", self.content_type))
        length = str(len(self.body)).encode() if self.content_length is None else self.content_length
        if length:
            headers.append((b"content-length", length))
        return headers


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    seconds: float  # wall time
    cpu: float  # CPU time of the process: what the bound is checked against (neighbours on the machine add wall time)
    peak: int  # rise of the peak RSS above the RSS before the request (0 where it cannot be measured)
    error: BaseException | None  # an exception that escaped the app
    logged: list[logging.LogRecord]


@dataclass(slots=True)
class Failure:
    input: Input
    problems: list[str]
    signature: str


@dataclass
class Stats:
    inputs: Counter[str] = field(default_factory=Counter)  # by kind
    requests: int = 0  # HTTP requests, fixed-point re-admissions included
    answers: Counter[str] = field(default_factory=Counter)  # 400, 413, allowed, patched, denied-403, ...
    max_seconds: float = 0.0
    max_seconds_at: str = ""
    max_cpu: float = 0.0
    max_cpu_at: str = ""
    calibration: Calibration | None = None
    max_ratio: float = 0.0  # CPU of an input over a normal request at the body limit (with a calibration)
    max_ratio_at: str = ""
    max_peak: int = 0
    max_peak_at: str = ""
    max_rss: int = 0  # the process' peak RSS over the run
    rss_start: int = 0
    fixpoints: int = 0
    failures: int = 0
    signatures: Counter[str] = field(default_factory=Counter)
    smallest: dict[str, Failure] = field(default_factory=dict)  # the smallest failing input per signature

    def summary(self) -> str:
        lines = [
            f"inputs run: {sum(self.inputs.values())} ({self.requests} HTTP requests incl. {self.fixpoints}"
            " fixed-point re-admissions)",
            "by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(self.inputs.items())),
            "answers: " + ", ".join(f"{k}={v}" for k, v in sorted(self.answers.items())),
            f"failures: {self.failures} ({len(self.signatures)} distinct)",
            f"max wall time per request: {self.max_seconds * 1000:.1f} ms ({self.max_seconds_at})",
            f"max CPU time per request: {self.max_cpu * 1000:.1f} ms ({self.max_cpu_at})",
        ]
        if self.calibration is not None:
            c = self.calibration
            lines += [
                f"normal request (calibration): {c.small * 1000:.2f} ms of CPU small, {c.full * 1000:.2f} ms at the"
                f" {MAX_BODY}-byte limit; bound {c.ratio:g}x",
                f"worst CPU cost over a normal request at the limit: {self.max_ratio:.1f}x ({self.max_ratio_at})",
            ]
        lines += [
            f"max memory per request (peak RSS rise): {self.max_peak / 2**20:.1f} MiB ({self.max_peak_at})",
            f"RSS of the process: {self.rss_start / 2**20:.1f} MiB at the start, {_memory()[0] / 2**20:.1f} MiB now,"
            f" {self.max_rss / 2**20:.1f} MiB at the peak",
        ]
        lines += [f"  {n} x {sig}" for sig, n in self.signatures.most_common()]
        return "\n".join(lines)


class _Collect(logging.Filter):
    """On every logger of the webhook package: keeps error records, lets no record through.

    A filter rather than a handler: handlers that others (pytest, hypothesis) attach to a logger or its parents
    would still receive the records, and thousands of expected tracebacks must not flood the output.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
        return False


def _webhook_loggers() -> list[logging.Logger]:
    names = [n for n in logging.root.manager.loggerDict if n == "webhook" or n.startswith("webhook.")]
    return [logging.getLogger(n) for n in names]


HANG_SECONDS = 60.0


class Hang(BaseException):
    """Raised into a request that runs longer than HANG_SECONDS, so that one input cannot stop the run."""


class _Watchdog:
    """SIGALRM after `seconds` raises Hang in the main thread (where the app runs); a no-op elsewhere."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        self._previous: Any = None

    def _fire(self, _signum: int, _frame: Any) -> None:
        raise Hang(f"no answer after {self.seconds} s")

    def __enter__(self) -> None:
        if self.armed:
            self._previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *_: object) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)


def exception_site(exc: BaseException) -> str:
    """`TypeError at plan.py:123 add_mount`: the innermost frame of the webhook package."""
    site = "outside webhook/"
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        if f"{os.sep}webhook{os.sep}" in filename:
            site = f"{Path(filename).name}:{lineno} {frame.f_code.co_name}"
    return f"{type(exc).__name__} at {site}"


def normal_body(size: int = 0) -> bytes:
    """A controller's pod that kvinject patches, its body grown to `size` bytes by an ordinary annotation."""
    pod = controller_pod()
    raw = orjson.dumps(admission_review(pod, uid="normal"))
    if size > len(raw):
        pod["metadata"]["annotations"]["example.com/config"] = "x" * (size - len(raw) - len(',"example.com/config":""'))
        raw = orjson.dumps(admission_review(pod, uid="normal"))
    return raw


def parse_review(body: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """The uid and document of a parseable AdmissionReview v1, else (None, None)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        return None, None
    request = doc.get("request")
    if not isinstance(request, dict):
        return None, None
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return None, None
    return uid, doc


def _declared_too_big(inp: Input) -> bool:
    length = inp.content_length
    return length is not None and length.isdigit() and int(length) > MAX_BODY


def _json_accepted(inp: Input) -> bool:
    text = (inp.content_type or b"").decode("latin-1")
    return text.split(";")[0].strip().lower() == "application/json"


class Harness:
    """One app on the golden cluster, one event loop; `run()` one input, failures collected in `stats`."""

    def __init__(self, measure_memory: bool = True, fixpoint: bool = True, cpu_ratio: float | None = None) -> None:
        self.cluster = golden_cluster()
        self.app = create_app(Settings(live_verify=False), self.cluster)
        self.measure_memory = measure_memory and _reset_peak()
        self.fixpoint = fixpoint
        self.cpu_ratio = cpu_ratio
        self.stats = Stats()
        self._runner = asyncio.Runner()
        self._errors = _Collect()
        self._loggers = _webhook_loggers()  # every module of the app is imported by now

    def __enter__(self) -> Harness:
        self.stats.rss_start = _memory()[0]
        for logger in self._loggers:
            logger.addFilter(self._errors)
        if self.cpu_ratio is not None:
            self.stats.calibration = self.calibrate(self.cpu_ratio)
        return self

    def calibrate(self, ratio: float, repeat: int = 15) -> Calibration:
        """The median CPU time of a normal allowed-and-patched request, small and padded to the body limit."""
        small = normal_body()
        full = normal_body(MAX_BODY)

        def median(raw: bytes) -> float:
            times = sorted(self.send(Input("calibration", "/mutate", raw)).cpu for _ in range(repeat))
            self._forget_created()
            return times[repeat // 2]

        return Calibration(median(small), median(full), ratio)

    def __exit__(self, *_: object) -> None:
        for logger in self._loggers:
            logger.removeFilter(self._errors)
        self._runner.close()

    # -- transport -------------------------------------------------------------------------------
    def send(self, inp: Input) -> Reply:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "https",
            "path": inp.endpoint,
            "raw_path": inp.endpoint.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": inp.headers(),
            "client": ("10.0.0.1", 40000),
            "server": ("kvinject", 443),
            "state": {},
        }
        body = inp.body
        step = inp.chunk if inp.chunk > 0 else max(len(body), 1)
        pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        out = bytearray()
        status = 0
        position = 0

        async def receive() -> dict[str, Any]:
            nonlocal position
            if position < len(pieces):
                position += 1
                return {"type": "http.request", "body": pieces[position - 1], "more_body": position < len(pieces)}
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                out.extend(message.get("body", b""))

        error: BaseException | None = None
        self._errors.records.clear()
        rss = 0
        if self.measure_memory:
            _reset_peak()
            rss = _memory()[0]
        started, cpu_started = time.perf_counter(), time.process_time()
        watchdog = _Watchdog(HANG_SECONDS)
        try:
            with watchdog:
                self._runner.run(self.app(scope, receive, send))
        except Exception as exc:
            error = exc
        except Hang as exc:  # not an Exception: the app's own catch-all must not swallow it
            error = exc
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        peak = 0
        if self.measure_memory:
            peak_rss = _memory()[1]
            peak = max(peak_rss - rss, 0)
            self.stats.max_rss = max(self.stats.max_rss, peak_rss)
        return Reply(status, bytes(out), seconds, cpu, peak, error, list(self._errors.records))

    # -- checking --------------------------------------------------------------------------------
    def run(self, inp: Input) -> list[str]:
        """Send one input, check every property, record it; returns the problems found (empty: passed)."""
        self.stats.inputs[inp.kind] += 1
        problems, signature = self._check(inp)
        self._forget_created()
        if problems:
            self.record(Failure(inp, problems, signature))
        return problems

    def record(self, failure: Failure) -> None:
        self.stats.failures += 1
        self.stats.signatures[failure.signature] += 1
        known = self.stats.smallest.get(failure.signature)
        if known is None or len(failure.input.body) < len(known.input.body):
            self.stats.smallest[failure.signature] = failure

    def _forget_created(self) -> None:
        for obj in self.cluster.created:
            self.cluster.apply("DELETED", obj)
        self.cluster.created.clear()

    def _measure(self, inp: Input, reply: Reply) -> list[str]:
        stats = self.stats
        stats.requests += 1
        where = f"{inp.label or inp.kind} {inp.endpoint} {len(inp.body)} bytes"
        if reply.seconds > stats.max_seconds:
            stats.max_seconds, stats.max_seconds_at = reply.seconds, where
        if reply.cpu > stats.max_cpu:
            stats.max_cpu, stats.max_cpu_at = reply.cpu, where
        if reply.peak > stats.max_peak:
            stats.max_peak, stats.max_peak_at = reply.peak, where
        problems = []
        calibration = stats.calibration
        if calibration is not None:
            ratio = reply.cpu / calibration.full
            if ratio > stats.max_ratio:
                stats.max_ratio, stats.max_ratio_at = ratio, where
            if ratio > calibration.ratio:
                problems.append(
                    f"slow: {reply.cpu * 1000:.1f} ms of CPU for {where}, {ratio:.1f}x a normal request at the"
                    f" body limit (bound {calibration.ratio:g}x)"
                )
        if reply.peak > memory_bound(len(inp.body)):
            problems.append(f"memory: peak RSS rose {reply.peak} bytes for {where}")
        return problems

    def _check(self, inp: Input) -> tuple[list[str], str]:
        reply = self.send(inp)
        problems = self._measure(inp, reply)
        signature = ""
        if reply.error is not None:
            signature = "escaped: " + exception_site(reply.error)
            problems.append(f"exception escaped the app: {type(reply.error).__name__}: {reply.error}"[:500])
        for record in reply.logged:
            exc = record.exc_info[1] if record.exc_info else None
            signature = signature or ("logged: " + (exception_site(exc) if exc else record.getMessage()[:120]))
            problems.append(f"the app logged an error: {record.getMessage()[:300]}")
        if reply.status not in OK_STATUSES:
            problems.append(f"HTTP {reply.status}")
        problems += self._check_answer(inp, reply)
        if problems and not signature:
            first = problems[0].split(":")[0]
            signature = first[:120]
            if first in ("slow", "memory"):
                signature = f"{first}: {inp.label or inp.kind} {inp.endpoint}"
            elif " of the patched pod failed (" in problems[0]:
                signature = problems[0].split("): ")[0] + ")"
        return problems, signature

    def _check_answer(self, inp: Input, reply: Reply) -> list[str]:
        too_big = len(inp.body) > MAX_BODY or _declared_too_big(inp)
        json_ok = _json_accepted(inp)
        if reply.status in (400, 413):
            self.stats.answers[str(reply.status)] += 1
            problems = _check_problem_body(reply.body)
            if reply.status == 413 and not too_big:
                problems.append(f"413 for a {len(inp.body)}-byte body within the limit")
            if reply.status == 400 and json_ok and too_big:
                problems.append(f"400 instead of 413 for a {len(inp.body)}-byte body")
            if reply.status == 400 and json_ok and not too_big and not over_budget(inp.body):
                uid, _ = parse_review(inp.body)
                if uid is not None:
                    problems.append(f"400 for a parseable AdmissionReview with uid {uid!r}")
            return problems
        if reply.status != 200:
            return []
        if too_big:
            return [f"{reply.status} for a {len(inp.body)}-byte body over the {MAX_BODY}-byte limit"]
        if over_budget(inp.body):
            return [f"{reply.status} for a body over the parse budget {review.work(inp.body)}"]
        if not json_ok:
            return [f"200 for Content-Type {inp.content_type!r}"]
        uid, doc = parse_review(inp.body)
        if uid is None or doc is None:
            return ["200 for a body that is not a parseable AdmissionReview"]
        problems, response = _check_review(reply.body, uid)
        if problems or response is None:
            self.stats.answers["failed-200"] += 1
            return problems
        obj = doc["request"].get("object")
        patch = response.get("patch")
        if patch is None:
            self.stats.answers["allowed" if response["allowed"] else f"denied-{response['status']['code']}"] += 1
            return problems
        self.stats.answers["patched"] += 1
        problems, patched = _apply_patch(response, obj)
        if problems or patched is None or not self.fixpoint or inp.endpoint != "/mutate":
            return problems
        return self._check_fixpoint(inp, doc, patched, uid)

    def _check_fixpoint(self, inp: Input, doc: dict[str, Any], patched: dict[str, Any], uid: str) -> list[str]:
        """The patched pod, as the apiserver sends it on reinvocation (mutate) and then to validation."""
        doc["request"]["object"] = patched
        try:
            body = orjson.dumps(doc)
        except orjson.JSONEncodeError:  # nested deeper than orjson writes (254): nothing to re-admit
            return []
        if len(body) > MAX_BODY or over_budget(body):
            return []
        self.stats.fixpoints += 1
        problems: list[str] = []
        label = f"{inp.label or inp.kind} re-admitted"
        for endpoint in ENDPOINTS:
            again = Input("fixpoint", endpoint, body, inp.content_type, label=label)
            reply = self.send(again)
            problems += self._measure(again, reply)
            what = f"{endpoint} of the patched pod"
            if reply.error is not None or reply.logged or reply.status != 200:
                exc = reply.error or next((r.exc_info[1] for r in reply.logged if r.exc_info), None)
                site = exception_site(exc) if exc is not None else "no exception"
                problems.append(f"{what} failed ({site}): HTTP {reply.status}")
                continue
            review_problems, response = _check_review(reply.body, uid)
            problems += [f"{what}: {p}" for p in review_problems]
            if response is None:
                continue
            if TAMPERED in reply.body.decode(errors="replace"):
                problems.append(f"{what} reports tampering: {reply.body[:400]!r}")
            if endpoint == "/mutate" and not response["allowed"]:
                problems.append(f"{what} was denied: {response['status']['message'][:300]}")
            elif endpoint == "/mutate" and "patch" in response:
                ops = orjson.loads(base64.b64decode(response["patch"]))
                problems.append(f"{what} patched it again: {orjson.dumps(ops)[:300]!r}")
        return problems


def _check_problem_body(body: bytes) -> list[str]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [f"error body is not JSON: {body[:200]!r}"]
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str) or not doc["error"]:
        return [f"error body has no message: {body[:200]!r}"]
    return []


def _check_review(body: bytes, uid: str) -> tuple[list[str], dict[str, Any] | None]:
    """Problems with a 200 answer to `uid`, and its response object when it has the right shape."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [f"200 body is not JSON: {body[:200]!r}"], None
    if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        return [f"200 body is not an AdmissionReview v1: {body[:200]!r}"], None
    response = doc.get("response")
    if not isinstance(response, dict):
        return ["AdmissionReview without a response object"], None
    problems = []
    if response.get("uid") != uid:
        problems.append(f"response.uid {response.get('uid')!r} is not the request's {uid!r}")
    if not isinstance(response.get("allowed"), bool):
        problems.append(f"response.allowed is {response.get('allowed')!r}, not a bool")
    warnings = response.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        problems.append("response.warnings is not a list of strings")
    audit = response.get("auditAnnotations", {})
    if not isinstance(audit, dict) or not all(isinstance(v, str) for v in audit.values()):
        problems.append("response.auditAnnotations is not a map of strings")
    status = response.get("status")
    if response.get("allowed") is False:
        if not isinstance(status, dict) or not isinstance(status.get("code"), int):
            problems.append(f"a denial without a status code: {status!r}")
        else:
            message = str(status.get("message", ""))
            if status["code"] >= 500 and status["code"] != 503:
                problems.append(f"denied with status {status['code']}: {message[:300]}")
            if INTERNAL_ERROR in message:
                problems.append(f"internal error: {message[:300]}")
        if "patch" in response:
            problems.append("a denial carries a patch")
    if ("patch" in response) != ("patchType" in response):
        problems.append("patch and patchType must come together")
    if "patch" in response and response.get("patchType") != "JSONPatch":
        problems.append(f"patchType {response.get('patchType')!r}")
    return problems, None if problems else response


def _apply_patch(response: dict[str, Any], obj: Any) -> tuple[list[str], dict[str, Any] | None]:
    try:
        ops = orjson.loads(base64.b64decode(response["patch"], validate=True))
    except (binascii.Error, ValueError, TypeError) as exc:
        return [f"patch is not base64 JSON: {exc}"], None
    if not isinstance(ops, list) or not ops or not all(isinstance(op, dict) for op in ops):
        return [f"patch is not a non-empty list of operations: {str(ops)[:300]}"], None
    if not isinstance(obj, dict):
        return [f"a patch for request.object {type(obj).__name__}"], None
    try:
        patched = jsonpatch.apply_patch(obj, ops, in_place=True)  # obj is this check's own parsed copy
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        return [f"patch does not apply: {type(exc).__name__}: {exc}: {str(ops)[:300]}"], None
    if not isinstance(patched, dict):
        return ["the patched object is not an object"], None
    return [], patched


def write_reproducers(stats: Stats, directory: Path) -> list[Path]:
    """One file per failure signature: the smallest failing body plus how to send it."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (signature, failure) in enumerate(sorted(stats.smallest.items()), 1):
        inp = failure.input
        stem = directory / f"failure-{index:03d}"
        stem.with_suffix(".body").write_bytes(inp.body)
        meta = {
            "signature": signature,
            "count": stats.signatures[signature],
            "kind": inp.kind,
            "endpoint": inp.endpoint,
            "content_type": (inp.content_type or b"").decode("latin-1") if inp.content_type is not None else None,
            "content_length": inp.content_length.decode("latin-1") if inp.content_length is not None else None,
            "chunk": inp.chunk,
            "label": inp.label,
            "problems": failure.problems,
            "body_file": stem.with_suffix(".body").name,
            "replay": f".venv/bin/python tests/fuzz/run_fuzz.py --replay {stem.with_suffix('.json')}",
        }
        stem.with_suffix(".json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        written.append(stem.with_suffix(".json"))
    return written


def replay(meta_file: Path) -> tuple[Input, list[str]]:
    """Send a reproducer written by `write_reproducers` again; returns the problems (empty: fixed)."""
    meta = orjson.loads(meta_file.read_bytes())
    body = (meta_file.parent / meta["body_file"]).read_bytes()
    content_type = meta["content_type"].encode("latin-1") if meta["content_type"] is not None else None
    length = meta["content_length"].encode("latin-1") if meta["content_length"] is not None else None
    inp = Input(meta["kind"], meta["endpoint"], body, content_type, length, meta["chunk"], meta.get("label", ""))
    with Harness() as harness:
        return inp, harness.run(inp)
