"""The HTTP surface: /mutate, /validate, /healthz, /readyz, /metrics. Errors never escape as a 500."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from webhook import review
from webhook.cluster import Cluster
from webhook.cluster.events import EventRecorder
from webhook.injection import Outcome
from webhook.metrics import Metrics
from webhook.mutation import Mutator
from webhook.notices import Notices
from webhook.restarter import Restarter
from webhook.settings import Settings
from webhook.validation import Validator

log = logging.getLogger(__name__)

# The apiserver accepts requests up to 3 MiB; a CREATE review holds one object plus a small envelope.
# Parsing costs ~30x the body in memory, so this also keeps one request well inside the pod's limit.
MAX_BODY = 4 * 1024 * 1024


def _json(doc: object, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def _problem(status: int, message: str) -> Response:
    return _json({"error": message}, status)


async def _freeze_when_ready(cluster: Cluster) -> None:
    """Move the start-up heap and the filled caches out of the collector's reach.

    Full collections otherwise walk every cached object (100,000 ServiceAccounts, the SDKs) a few
    times a second under load, for 15-25 ms each: the p99 of large pods. Freezing costs nothing later.
    """
    gc.collect()
    gc.freeze()
    while not cluster.ready():
        await asyncio.sleep(0.5)
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings,
    cluster: Cluster,
    metrics: Metrics | None = None,
    not_ready: Callable[[FastAPI], str | None] | None = None,
    restarter: Restarter | None = None,
) -> FastAPI:
    """`not_ready`: a further readiness condition (why not ready, or None), e.g. the served certificate's CA
    published in the webhook configurations (cert_mode self). `restarter`: restart-on-change, run on the
    server's event loop beside the event writer."""
    metrics = metrics or Metrics()
    mutator = Mutator(settings, cluster, metrics)
    validator = Validator(settings, cluster, metrics)
    recorder = EventRecorder(cluster, metrics, socket.gethostname())
    notices = Notices(metrics, recorder)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        cluster.start()
        settle = asyncio.create_task(_freeze_when_ready(cluster))
        recorder.start()
        if restarter is not None:
            restarter.start(metrics, recorder)
        try:
            yield
        finally:
            settle.cancel()
            if restarter is not None:
                await restarter.stop()
            await recorder.stop()
            cluster.stop()

    app = FastAPI(title="kvinject", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    app.state.cluster = cluster
    app.state.draining = False  # set on SIGTERM: readiness goes false before the listener closes

    async def admit(endpoint: str, http: Request, handler: Callable[[review.Request], Awaitable[Outcome]]) -> Response:
        started = time.perf_counter()
        content_type = http.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            metrics.bad_requests.labels(endpoint, "400").inc()
            return _problem(400, f"Content-Type must be application/json, not {content_type or 'missing'!r}")
        length = http.headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > MAX_BODY:
            metrics.bad_requests.labels(endpoint, "413").inc()
            return _problem(413, f"AdmissionReview larger than {MAX_BODY} bytes")
        body = bytearray()
        async for chunk in http.stream():
            body += chunk
            if len(body) > MAX_BODY:
                metrics.bad_requests.labels(endpoint, "413").inc()
                return _problem(413, f"AdmissionReview larger than {MAX_BODY} bytes")
        try:
            request = review.decode_review(bytes(body))
        except review.MalformedReview as exc:
            metrics.bad_requests.labels(endpoint, "400").inc()
            return _problem(400, f"malformed AdmissionReview: {exc}")
        try:
            outcome = await handler(request)
        except Exception as exc:  # the apiserver must get an answer, never a 500 or a trace
            log.exception("unexpected error answering uid=%s", request.uid)
            outcome = Outcome(
                review.denied(request.uid, f"kvinject internal error ({type(exc).__name__}); see webhook logs", 500),
                "error",
                type(exc).__name__,
            )
        metrics.admissions.labels(endpoint, outcome.result, outcome.reason).inc()
        try:
            notices.after(request, outcome)
        except Exception:  # the answer is already decided: never lose it to a notice
            log.exception("notice for uid=%s failed", request.uid)
        metrics.duration.labels(endpoint).observe(time.perf_counter() - started)
        return _json(outcome.response)

    @app.post("/mutate")
    async def mutate(http: Request) -> Response:
        return await admit("mutate", http, mutator.mutate)

    @app.post("/validate")
    async def validate(http: Request) -> Response:
        return await admit("validate", http, validator.validate)

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz")
    async def readyz() -> Response:
        if app.state.draining:
            return PlainTextResponse("shutting down", status_code=503)
        reason = not_ready(app) if not_ready is not None else None
        if reason is not None:
            return PlainTextResponse(reason, status_code=503)
        if cluster.ready():
            return PlainTextResponse("ok")
        return PlainTextResponse("caches not synced", status_code=503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
