"""AdmissionReview v1 wire format: parse the request, build the one response shape.

This is the only module that base64-encodes patches. Responses are plain dicts
serialised with orjson by the caller.
"""

from __future__ import annotations

import base64
import gc
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.names import CLASS_GROUP, CLASS_KIND

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

# Work budget of one body, checked on the raw bytes before parsing (a C-speed count, ~1 ms per MiB).
# Building Python objects is what a body costs, not its bytes: 4 MiB of "[]," is 1.4 million lists.
# Brackets and commas inside strings count too, so these are upper bounds; a real Pod is far below
# them (the benchmark's 75 KiB pod has ~2,000 containers and ~6,000 commas).
MAX_CONTAINERS = 100_000  # JSON objects and arrays
MAX_SEPARATORS = 250_000  # commas: with the containers, a bound on the number of values


class MalformedReview(ValueError):
    """The body cannot be answered in-band (no usable uid): the caller returns HTTP 400."""


@dataclass(frozen=True, slots=True)
class Request:
    uid: str
    kind: str
    group: str
    operation: str
    namespace: str
    sub_resource: str
    dry_run: bool
    object: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def is_pod_create(self) -> bool:
        return self.group == "" and self.kind == "Pod" and self.operation == "CREATE" and not self.sub_resource

    @property
    def is_provider_class_write(self) -> bool:
        return (
            self.group == CLASS_GROUP
            and self.kind == CLASS_KIND
            and self.operation in ("CREATE", "UPDATE")
            and not self.sub_resource
        )

    @property
    def is_pod_update(self) -> bool:
        """A pod itself changed (not a subresource): after admission only its metadata and images may change."""
        return self.group == "" and self.kind == "Pod" and self.operation == "UPDATE" and not self.sub_resource

    @property
    def is_ephemeral_update(self) -> bool:
        """Ephemeral containers added to a running pod (`kubectl debug`)."""
        return (
            self.group == ""
            and self.kind == "Pod"
            and self.operation == "UPDATE"
            and self.sub_resource == "ephemeralcontainers"
        )


def decode_review(body: bytes) -> Request:
    """Parse an AdmissionReview v1 body; raises MalformedReview with a clear reason."""
    doc = _load_within_budget(body)
    if not isinstance(doc, dict):
        raise MalformedReview("body must be a JSON object (an AdmissionReview)")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise MalformedReview(f"expected apiVersion {API_VERSION} kind {KIND}")
    req = doc.get("request")
    if not isinstance(req, dict):
        raise MalformedReview("AdmissionReview has no request object")
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid must be a non-empty string")
    kind = req.get("kind")
    if not isinstance(kind, dict):
        kind = {}
    obj = req.get("object")
    return Request(
        uid=uid,
        kind=_str(kind.get("kind")),
        group=_str(kind.get("group")),
        operation=_str(req.get("operation")),
        namespace=_str(req.get("namespace")),
        sub_resource=_str(req.get("subResource")),
        dry_run=req.get("dryRun") is True,
        object=obj if isinstance(obj, dict) else None,
        raw=req,
    )


def work(body: bytes) -> tuple[int, int]:
    """(containers, separators) of a JSON body: upper bounds on what parsing it builds."""
    return body.count(b"{") + body.count(b"["), body.count(b",")


def _load_within_budget(body: bytes) -> Any:
    containers, separators = work(body)
    if containers > MAX_CONTAINERS:
        raise MalformedReview(f"body has more than {MAX_CONTAINERS} JSON objects and arrays")
    if separators > MAX_SEPARATORS:
        raise MalformedReview(f"body has more than {MAX_SEPARATORS} JSON values")
    # The collector would otherwise walk the growing young generation again and again while orjson
    # builds up to MAX_CONTAINERS lists and dicts: most of the cost of a large body. Parsing is
    # synchronous, so nothing else runs on this thread meanwhile.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedReview(f"body is not valid JSON: {exc}") from None
    finally:
        if enabled:
            gc.enable()


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def _base(uid: str, allowed: bool, warnings: list[str], audit: dict[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if warnings:
        response["warnings"] = warnings
    if audit:
        response["auditAnnotations"] = audit
    return response


def allowed(uid: str, warnings: list[str] | None = None, audit: dict[str, str] | None = None) -> dict[str, Any]:
    return _review(_base(uid, True, warnings or [], audit or {}))


def patched(
    uid: str,
    ops: list[dict[str, Any]],
    warnings: list[str] | None = None,
    audit: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = _base(uid, True, warnings or [], audit or {})
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(ops)).decode("ascii")
    return _review(response)


def denied(
    uid: str,
    message: str,
    code: int = 403,
    warnings: list[str] | None = None,
    audit: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = _base(uid, False, warnings or [], audit or {})
    response["status"] = {"code": code, "message": message, "reason": _REASONS.get(code, "Forbidden")}
    return _review(response)


_REASONS = {400: "BadRequest", 403: "Forbidden", 500: "InternalError", 503: "ServiceUnavailable"}


def decode_patch(review: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch carried by a response (empty when none): for tests and the CLI."""
    patch = review.get("response", {}).get("patch")
    if not patch:
        return []
    ops: list[dict[str, Any]] = orjson.loads(base64.b64decode(patch))
    return ops
