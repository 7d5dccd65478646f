"""Azure's instance metadata service (IMDS) token endpoint, as a node's managed identity sees it.

Plain HTTP on 169.254.169.254:80 (on the loopback device of the test's own network namespace): `GET
/metadata/identity/oauth2/token?api-version=...&resource=...[&client_id=...]` with header `Metadata: true`
answers an access token for the node's identity (or the user-assigned identity `client_id` names, when it is
assigned to the node), minted by the Entra ID double so that the Key Vault double knows who holds it. Any
workload on the node that can reach the address, or make the Azure provider use the node's identity
(`useVMManagedIdentity`), reads as that identity: the risk kvinject refuses.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.harness.doubles.entra import FakeEntra
from tests.harness.process import Lifecycle

ADDRESS = "169.254.169.254"


class FakeImds(Lifecycle):
    """IMDS for one node: its system identity and the user-assigned identities given to it; ``start()`` it."""

    def __init__(self, entra: FakeEntra, identities: Iterable[str]) -> None:
        self.entra = entra
        self.identities = list(identities)  # the first is the system-assigned one
        self.requests: list[dict[str, str]] = []  # query parameters of every token request (no token in them)
        self._server: ThreadingHTTPServer | None = None
        self._added = False

    def _start(self) -> None:
        added = subprocess.run(["ip", "addr", "add", f"{ADDRESS}/32", "dev", "lo"], capture_output=True, text=True)
        if added.returncode != 0 and "File exists" not in added.stderr:
            raise RuntimeError(f"cannot add {ADDRESS} to lo (the test's own network namespace?): {added.stderr}")
        self._added = added.returncode == 0
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                split = urlsplit(self.path)
                query = dict(parse_qsl(split.query))
                status, body = imds.answer(split.path, query, self.headers.get("Metadata", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: requests are kept in `requests` instead."""

        self._server = ThreadingHTTPServer((ADDRESS, 80), Handler)
        threading.Thread(target=self._server.serve_forever, name="imds", daemon=True).start()

    def answer(self, path: str, query: dict[str, str], metadata: str) -> tuple[int, dict[str, Any]]:
        if path != "/metadata/identity/oauth2/token":
            return 404, {"error": "not_found", "error_description": f"no route {path}"}
        if metadata.lower() != "true":
            return 400, {"error": "invalid_request", "error_description": "Required metadata header not specified"}
        self.requests.append({k: v for k, v in query.items() if k in ("api-version", "resource", "client_id")})
        resource = query.get("resource", "")
        client_id = query.get("client_id") or self.identities[0]
        if not resource:
            return 400, {"error": "invalid_request", "error_description": "Required audience parameter not specified"}
        if client_id not in self.identities:
            return 400, {"error": "invalid_request", "error_description": "Identity not found"}
        token, issued = self.entra.mint(client_id, resource.rstrip("/") + "/.default")
        expires_in = self.entra.expires_in
        return 200, {
            "access_token": token,
            "client_id": client_id,
            "expires_in": str(expires_in),
            "expires_on": str(int(issued.expires_on)),
            "ext_expires_in": str(expires_in),
            "not_before": str(int(issued.expires_on) - expires_in),
            "resource": resource,
            "token_type": "Bearer",
        }

    def _stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._added:
            subprocess.run(["ip", "addr", "del", f"{ADDRESS}/32", "dev", "lo"], capture_output=True, check=False)
            self._added = False
