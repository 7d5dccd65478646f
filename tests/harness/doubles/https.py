"""A tiny threaded HTTPS server on 127.0.0.1, and the lifecycle the test doubles share.

The TLS handshake runs in each connection's own thread (not in the accept loop), so a
slow or broken client cannot stall the others. Requests are logged one line each
(method, path, status, duration): never a body, a query string or a header value, so
assertions and tokens stay out of the logs.

A `Double` owns a CA and a serving certificate under its workdir (``ca_file`` for clients to trust), one log for
all its servers, and the tracebacks of its handlers (``errors``); subclasses open their servers with ``serve``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.harness.pki import loopback
from tests.harness.process import Lifecycle

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

    def __init__(
        self,
        port: int,
        ssl_context: ssl.SSLContext,
        app: App,
        log: TextIO,
        name: str,
        errors: list[str],
        host: str = "127.0.0.1",
    ) -> None:
        self.ssl_context = ssl_context
        self.app = app
        self.log = log
        self.log_lock = threading.Lock()
        self.double_name = name
        self.errors = errors
        super().__init__((host, port), _Handler)

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


class HttpsServer(Lifecycle):
    """Serve ``app`` over HTTPS on ``host``:``port`` (127.0.0.1, 0 = a free port) in a daemon thread; ``start()``
    it. ``url`` names the server by ``hostname`` when given (a name the test's hosts file resolves)."""

    def __init__(
        self,
        app: App,
        cert_file: Path,
        key_file: Path,
        log: TextIO,
        name: str = "https",
        port: int = 0,
        host: str = "127.0.0.1",
        hostname: str = "",
    ) -> None:
        self.app, self.cert_file, self.key_file, self.log, self.name = app, cert_file, key_file, log, name
        self.port, self.host, self.hostname = port, host, hostname
        self.url = ""
        self.errors: list[str] = []  # tracebacks of handler exceptions (each answered with a 500)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        ssl_context = server_ssl_context(self.cert_file, self.key_file)
        self._server = _Server(self.port, ssl_context, self.app, self.log, self.name, self.errors, self.host)
        self.port = self._server.server_address[1]
        where = self.hostname or self.host
        self.url = f"https://{where}" if self.port == 443 else f"https://{where}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def _stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        if thread is not None:
            server.shutdown()
            thread.join(timeout=5)
        server.server_close()

    def write_log(self, line: str) -> None:
        assert self._server is not None, "start() the server first"
        self._server.write_log(line)


class Double(Lifecycle):
    """A test double: one CA and serving certificate under ``workdir``, one log, its HTTPS servers.

    By default it serves on free ports of 127.0.0.1. ``hostnames`` (put in the certificate; a wildcard such as
    ``*.vault.kvinject.test`` covers a label) and ``address`` make it serve on ``address``:443 instead, under
    names the test's own hosts file resolves, as the real service is reached by its clients."""

    def __init__(self, workdir: Path, log_name: str, *, hostnames: Sequence[str] = (), address: str = "") -> None:
        if bool(hostnames) != bool(address):
            raise ValueError("hostnames and address go together")
        self.hostnames = tuple(hostnames)
        self.address = address
        self.workdir = workdir
        self.log_path = workdir / log_name
        self.ca_file = workdir / "ca.crt"
        self._servers: list[HttpsServer] = []
        self._log: TextIO | None = None
        self._cert_file = self._key_file = workdir / "unset"

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        issued = loopback(self.workdir, *(self.hostnames or ["localhost"]))
        self.ca_file, self._cert_file, self._key_file = issued.ca_file, issued.cert_file, issued.key_file
        self._log = self.log_path.open("a", encoding="utf-8")
        self._open()

    @property
    def ca_bundle(self) -> str:
        """The double's CA, base64-encoded PEM (a webhook configuration's caBundle)."""
        return base64.b64encode(self.ca_file.read_bytes()).decode("ascii")

    def _open(self) -> None:
        """Open the double's servers with ``serve``."""
        raise NotImplementedError

    def serve(self, app: App, name: str, hostname: str = "") -> HttpsServer:
        """A started HTTPS server for ``app`` with the double's certificate and log: on a free port of 127.0.0.1,
        or on ``address``:443 when the double is named (``hostname`` then names it in ``url``)."""
        assert self._log is not None, "serve() runs while starting"
        server = HttpsServer(app, self._cert_file, self._key_file, self._log, name=name)
        if self.address:
            server.host, server.port, server.hostname = self.address, 443, hostname or self.hostnames[0]
        self._servers.append(server)
        return server.start()

    def _stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def errors(self) -> list[str]:
        """Tracebacks of handler exceptions (each answered with a 500), over all the double's servers."""
        return [e for server in self._servers for e in server.errors]
