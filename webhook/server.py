"""Run the app over TLS with uvicorn; reload the certificate from disk when it changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from webhook.settings import Settings

log = logging.getLogger(__name__)


def _fingerprint(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    result = []
    for p in paths:
        st = p.stat()
        result.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(result)


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class CertReloader:
    """Polls the certificate files; loads a new pair into the live context for new handshakes."""

    def __init__(self, ctx: ssl.SSLContext, cert_file: Path, key_file: Path, interval: float):
        self.ctx, self.cert_file, self.key_file, self.interval = ctx, cert_file, key_file, interval
        self.seen = _fingerprint(cert_file, key_file)
        self.loaded = cert_file.read_bytes()  # the certificate (PEM) new handshakes present
        self.reloads = 0

    def check(self) -> bool:
        try:
            now = _fingerprint(self.cert_file, self.key_file)
            if now == self.seen:
                return False
            loaded = self.cert_file.read_bytes()
            tls_context(self.cert_file, self.key_file)  # validate the pair before touching the live context
            self.ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            log.warning("certificate files changed but cannot be loaded yet (%s); keeping the current one", exc)
            return False
        self.seen, self.loaded = now, loaded
        self.reloads += 1
        log.info("reloaded serving certificate from %s", self.cert_file)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()


class CloseWhileDraining:
    """ASGI wrapper: while the app drains, every response says `Connection: close`.

    Endpoints stop sending a draining replica new connections, but the apiserver keeps its keep-alive
    connections (pinned to this pod by conntrack behind a ClusterIP) and would go on using them until the
    process exits and resets them under requests in flight. Closing each connection after its next answer
    moves the apiserver to the other replicas while this one still serves (the client closes, no race)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and self.app.state.draining:
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, receive, closing)


class DrainingServer(uvicorn.Server):
    """uvicorn with a drain: the first SIGTERM/SIGINT flips readiness and closes each connection after its next
    answer (CloseWhileDraining), serving goes on for `drain` seconds, then uvicorn's own graceful shutdown (stop
    accepting, finish in-flight requests) runs."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain: float):
        super().__init__(config)
        self.app, self.drain = app, drain
        self.draining = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.draining or self.drain <= 0:
            super().handle_exit(sig, frame)
            return
        self.draining = True
        self.app.state.draining = True
        log.info(
            "received signal %s: not ready; serving %.1fs more, then finishing in-flight requests", sig, self.drain
        )
        timer = threading.Timer(self.drain, lambda: setattr(self, "should_exit", True))
        timer.daemon = True
        timer.start()


def serve(app: FastAPI, settings: Settings) -> None:
    config = uvicorn.Config(
        CloseWhileDraining(app),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.cert_file),
        ssl_keyfile=str(settings.key_file),
        timeout_keep_alive=settings.keep_alive_seconds,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's records go to kvinject's handler, in its one format (commands.logs)
        access_log=False,
        server_header=False,
        lifespan="on",
    )
    config.load()
    # Replace uvicorn's context with ours: TLS 1.2+, and one object the reloader can update.
    config.ssl = tls_context(settings.cert_file, settings.key_file)
    reloader = CertReloader(config.ssl, settings.cert_file, settings.key_file, settings.cert_reload_seconds)
    app.state.tls = reloader  # readiness may ask which certificate is served
    server = DrainingServer(config, app, settings.shutdown_drain_seconds)

    async def main() -> None:
        task = asyncio.create_task(reloader.run())
        try:
            await server.serve()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())
