"""A tiny threaded HTTPS server on 127.0.0.1 for the Azure test doubles.

The TLS handshake runs in each connection's own thread (not in the accept loop), so a
slow or broken client cannot stall the others. Requests are logged one line each
(method, path, status, duration): never a body, a query string or a header value, so
assertions and tokens stay out of the logs.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
        all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, json.dumps(obj).encode(), all_headers)


App = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, ssl_context: ssl.SSLContext, app: App, log: TextIO, name: str) -> None:
        self.ssl_context = ssl_context
        self.app = app
        self.log = log
        self.log_lock = threading.Lock()
        self.double_name = name
        self.errors: list[str] = []
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.write_log(f"TLS handshake from {client_address[0]}:{client_address[1]} failed: {exc}")
            return
        try:
            _Handler(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def write_log(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self.log_lock:
            self.log.write(f"{stamp} [{self.double_name}] {line}\n")
            self.log.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    server: _Server

    def _dispatch(self) -> None:
        t0 = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=unquote(split.path),
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            response = self.server.app(request)
        except Exception:
            trace = traceback.format_exc()
            self.server.errors.append(trace)
            self.server.write_log(f"handler error on {self.command} {split.path}:\n{trace}")
            response = Response.json(500, {"error": {"code": "InternalError", "message": "test double crashed"}})
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        elapsed_ms = (time.monotonic() - t0) * 1000
        self.server.write_log(f"{self.command} {split.path} -> {response.status} ({elapsed_ms:.1f} ms)")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own stderr logging (``_dispatch`` logs instead)."""


def server_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class HttpsServer:
    """Serve ``app`` over HTTPS on 127.0.0.1:``port`` (0 = a free port) in a daemon thread."""

    def __init__(
        self, app: App, cert_file: Path, key_file: Path, log: TextIO, name: str = "https", port: int = 0
    ) -> None:
        self._server = _Server(port, server_ssl_context(cert_file, key_file), app, log, name)
        self.port: int = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{name}:{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def errors(self) -> list[str]:
        """Tracebacks of handler exceptions (each answered with a 500)."""
        return self._server.errors

    def write_log(self, line: str) -> None:
        self._server.write_log(line)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
