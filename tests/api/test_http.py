"""The HTTP surface over ASGI: status codes, error channels, probes, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import admission_review, controller_pod, example_cluster
from webhook.app import MAX_BODY, create_app
from webhook.cluster import FileCluster
from webhook.settings import Settings

JSON = {"Content-Type": "application/json"}


class ExplodingCluster(FileCluster):
    """Our own seam: a data source that fails in an unexpected way."""

    async def _fetch_service_account(self, namespace: str, name: str) -> Any:
        raise RuntimeError("token=abc.def.ghi must never reach the apiserver")


class NotReadyCluster(FileCluster):
    def ready(self) -> bool:
        return False


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), example_cluster())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://kvinject") as c:
        yield c


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (b"{", JSON, "malformed AdmissionReview: body is not valid JSON"),
        (b"{}", JSON, "malformed AdmissionReview: expected apiVersion admission.k8s.io/v1 kind AdmissionReview"),
        (
            orjson.dumps(admission_review(controller_pod())),
            {"Content-Type": "text/plain"},
            "Content-Type must be application/json, not 'text/plain'",
        ),
        (orjson.dumps(admission_review(controller_pod())), {}, "Content-Type must be application/json"),
    ],
    ids=["bad-json", "not-a-review", "wrong-content-type", "no-content-type"],
)
async def test_bad_requests_get_400_with_a_clear_message(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], fragment: str
) -> None:
    resp = await client.post("/mutate", content=body, headers=headers)
    assert resp.status_code == 400
    assert fragment in resp.json()["error"]


async def test_oversized_body_gets_413(client: httpx.AsyncClient) -> None:
    resp = await client.post("/mutate", content=b" " * (MAX_BODY + 1), headers=JSON)
    assert resp.status_code == 413


async def test_unexpected_error_is_an_in_band_denial_not_a_500(caplog: pytest.LogCaptureFixture) -> None:
    cluster = ExplodingCluster([])
    cluster.apply("ADDED", {"kind": "Namespace", "metadata": {"name": "payments"}})
    app = create_app(Settings(), cluster)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://k") as c:
        doc = admission_review(controller_pod(annotations={"kvinject.io/secret-a": "kv-one/a"}), uid="u-err")
        resp = await c.post("/mutate", content=orjson.dumps(doc), headers=JSON)
    assert resp.status_code == 200
    answer = resp.json()["response"]
    assert answer["uid"] == "u-err" and answer["allowed"] is False
    assert answer["status"]["code"] == 500
    assert answer["status"]["message"] == "kvinject internal error (RuntimeError); see webhook logs"
    assert "\n" not in answer["status"]["message"] and "abc.def.ghi" not in resp.text


async def test_allowed_answer_echoes_uid_and_carries_json_patch(client: httpx.AsyncClient) -> None:
    doc = admission_review(controller_pod(), uid="u-1")
    resp = await client.post(
        "/mutate", content=orjson.dumps(doc), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    body = resp.json()
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == "u-1" and body["response"]["patchType"] == "JSONPatch"


async def test_probes_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    await client.post("/mutate", content=orjson.dumps(admission_review(controller_pod())), headers=JSON)
    await client.post("/mutate", content=b"{", headers=JSON)
    text = (await client.get("/metrics")).text
    assert 'kvinject_admissions_total{endpoint="mutate",reason="",result="injected"} 1.0' in text
    assert 'kvinject_bad_requests_total{code="400",endpoint="mutate"} 1.0' in text
    assert "kvinject_admission_duration_seconds_bucket" in text


async def test_readyz_is_503_until_caches_sync() -> None:
    app = create_app(Settings(), NotReadyCluster([]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://k") as c:
        resp = await c.get("/readyz")
    assert resp.status_code == 503 and resp.text == "caches not synced"


async def test_namespace_comes_from_the_request_not_the_object(client: httpx.AsyncClient) -> None:
    pod = controller_pod()
    pod["metadata"]["namespace"] = "elsewhere"  # must be ignored
    resp = await client.post("/mutate", content=orjson.dumps(admission_review(pod, namespace="payments")), headers=JSON)
    answer = resp.json()["response"]
    assert answer["allowed"] is True and answer["auditAnnotations"]["service-account"] == "payments/api"


async def test_get_on_mutate_is_405_not_500(client: httpx.AsyncClient) -> None:
    assert (await client.get("/mutate")).status_code == 405
