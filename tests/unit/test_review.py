"""AdmissionReview v1 parsing and the response shapes."""

from __future__ import annotations

import base64
import gc

import orjson
import pytest

from tests.harness import admission_review, controller_pod
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
        review.decode_review(body)


def test_parse_pod_create() -> None:
    doc = admission_review(controller_pod(), dry_run=True, uid="abc")
    req = review.decode_review(orjson.dumps(doc))
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
    assert review.decode_review(orjson.dumps(doc)).is_pod_create is expected


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


def _filled(unit: bytes, count: int) -> bytes:
    head = orjson.dumps(admission_review(controller_pod(), uid="u"))[:-2] + b',"filler":['
    return head + unit * count + b"0]}}"


def _units_to_budget(unit: bytes) -> int:
    """How many `unit`s a plain review can carry and stay exactly at the parse budget."""
    containers, separators = review.work(_filled(unit, 0))
    unit_containers, _ = review.work(unit)
    room = [review.MAX_SEPARATORS - separators]
    if unit_containers:
        room.append((review.MAX_CONTAINERS - containers) // unit_containers)
    return min(room)


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        pytest.param(b"[],", "more than 100000 JSON objects and arrays", id="empty-lists"),
        pytest.param(b'{"a":[]},', "more than 100000 JSON objects and arrays", id="objects-of-lists"),
        pytest.param(b'"a",', "more than 250000 JSON values", id="strings"),
        pytest.param(b"null,", "more than 250000 JSON values", id="nulls"),
    ],
)
def test_parse_budget_is_counted_on_the_bytes_before_parsing(unit: bytes, message: str) -> None:
    count = _units_to_budget(unit)
    at_budget = review.decode_review(_filled(unit, count))
    assert at_budget.uid == "u" and len(at_budget.raw["filler"]) == count + 1
    with pytest.raises(review.MalformedReview, match=message):
        review.decode_review(_filled(unit, count + 1))


def test_parse_leaves_the_collector_as_it_found_it() -> None:
    assert gc.isenabled()
    review.decode_review(_filled(b"[],", 10))
    with pytest.raises(review.MalformedReview):
        review.decode_review(b"{")
    assert gc.isenabled()
    gc.disable()
    try:
        review.decode_review(_filled(b"[],", 10))
        assert not gc.isenabled()
    finally:
        gc.enable()
