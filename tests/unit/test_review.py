"""AdmissionReview v1 parsing and the response shapes."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.helpers import admission_review, controller_pod
from webhook import review


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"[]", "body must be a JSON object"),
        (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}', "expected apiVersion"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no request object"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}', "request.uid"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}}', "request.uid"),
    ],
    ids=["not-json", "not-object", "v1beta1", "no-request", "no-uid", "uid-not-string"],
)
def test_malformed(body: bytes, message: str) -> None:
    with pytest.raises(review.MalformedReview, match=message):
        review.parse(body)


def test_parse_pod_create() -> None:
    doc = admission_review(controller_pod(), dry_run=True, uid="abc")
    req = review.parse(orjson.dumps(doc))
    assert (req.uid, req.namespace, req.dry_run, req.is_pod_create) == ("abc", "payments", True, True)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.update(operation="UPDATE"), False),
        (lambda r: r.update(subResource="ephemeralcontainers"), False),
        (lambda r: r.update(kind={"group": "apps", "version": "v1", "kind": "Deployment"}), False),
        (lambda r: r.update(kind="Pod"), False),
        (lambda r: None, True),
    ],
    ids=["update", "subresource", "deployment", "kind-not-object", "pod-create"],
)
def test_is_pod_create(mutate: object, expected: bool) -> None:
    doc = admission_review(controller_pod())
    assert callable(mutate)
    mutate(doc["request"])
    assert review.parse(orjson.dumps(doc)).is_pod_create is expected


def test_response_shapes() -> None:
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]
    patched = review.patched("u1", ops, ["w"], {"k": "v"})
    assert patched["apiVersion"] == "admission.k8s.io/v1" and patched["kind"] == "AdmissionReview"
    resp = patched["response"]
    assert resp["uid"] == "u1" and resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    assert orjson.loads(base64.b64decode(resp["patch"])) == ops
    assert resp["warnings"] == ["w"] and resp["auditAnnotations"] == {"k": "v"}
    assert review.decode_patch(patched) == ops

    empty = review.patched("u2", [])["response"]
    assert "patch" not in empty and "patchType" not in empty and empty["allowed"] is True

    denied = review.denied("u3", "no", 400)["response"]
    assert denied == {"uid": "u3", "allowed": False, "status": {"code": 400, "message": "no", "reason": "BadRequest"}}
