"""A small mutating webhook that appends a sidecar container to pods, as a service mesh's injector does: the
"later webhook" of the target-container tests, registered beside kvinject on the real apiserver.

What it does to a pod is chosen by the pod's annotation `sidecar.kvinject.test/inject`:
- `plain` (or absent): append the container `mesh`;
- `copy`: append `mesh` with a copy of the first container's volumeMounts and env (an injector copying the app's
  mounts, kvinject's among them);
- `widen`: append `mesh` and add it to kvinject's record of its targets (a webhook rewriting kvinject's annotation).
A pod that has `mesh` already is left alone, so a reinvocation changes nothing.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from tests.harness.doubles.https import Double, HttpsServer, Request, Response
from webhook.names import INJECTED_CONTAINERS

SIDECAR = "mesh"
SIDECAR_IMAGE = "mesh-proxy:1"
MODE = "sidecar.kvinject.test/inject"
LABEL = "sidecar.kvinject.test/enabled"
PATH = "/mutate"


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def sidecar_patch(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch this webhook answers for `pod` (empty when the sidecar is there already)."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    if any(c.get("name") == SIDECAR for c in containers):
        return []
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    mode = annotations.get(MODE, "plain")
    sidecar: dict[str, Any] = {"name": SIDECAR, "image": SIDECAR_IMAGE}
    if mode == "copy" and containers:
        for key in ("volumeMounts", "env"):
            if containers[0].get(key):
                sidecar[key] = copy.deepcopy(containers[0][key])
    ops: list[dict[str, Any]] = [{"op": "add", "path": "/spec/containers/-", "value": sidecar}]
    if mode == "widen" and INJECTED_CONTAINERS in annotations:
        widened = ",".join(filter(None, [annotations[INJECTED_CONTAINERS], SIDECAR]))
        ops.append({"op": "replace", "path": f"/metadata/annotations/{escape(INJECTED_CONTAINERS)}", "value": widened})
    return ops


def _admit(request: Request) -> Response:
    review = json.loads(request.body)
    admission = review["request"]
    answer: dict[str, Any] = {"uid": admission["uid"], "allowed": True}
    ops = sidecar_patch(admission.get("object") or {})
    if ops:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return Response.json(200, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer})


class SidecarWebhook(Double):
    """The sidecar injector on a free port of 127.0.0.1 with its own CA (`ca_bundle`); `url` is its endpoint."""

    def __init__(self, workdir: Any) -> None:
        super().__init__(workdir, "sidecar-webhook.log")
        self._server: HttpsServer | None = None

    def _open(self) -> None:
        self._server = self.serve(_admit, "sidecar-webhook")

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the webhook first"
        return self._server.url + PATH
