"""Golden AdmissionReviews through the real ASGI app: request file in, response file out.

Regenerate expectations after an intended change with `UPDATE_GOLDEN=1 pytest tests/golden`
and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import RELAXABLE, apply, golden_cluster
from webhook import review
from webhook.app import create_app
from webhook.settings import Settings

CASES = Path(__file__).parent / "cases"
NAMES = sorted(p.name.removesuffix(".request.json") for p in CASES.glob("*.request.json"))


async def answer(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    cluster = golden_cluster()
    app = create_app(Settings(relaxable_namespaces=RELAXABLE), cluster)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://kvinject") as client:
        resp = await client.post("/mutate", content=orjson.dumps(doc), headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    return resp.json(), [c["metadata"]["name"] for c in cluster.created]


def readable(result: dict[str, Any], created: list[str]) -> dict[str, Any]:
    response = dict(result["response"])
    if "patch" in response:
        response["patch"] = review.decode_patch(result)
    return {"response": response, "created": created}


@pytest.mark.parametrize("name", NAMES)
async def test_golden(name: str) -> None:
    request = orjson.loads((CASES / f"{name}.request.json").read_bytes())
    result, created = await answer(request)
    assert result["response"]["uid"] == request["request"]["uid"]
    got = readable(result, created)
    expected_file = CASES / f"{name}.response.json"
    if os.environ.get("UPDATE_GOLDEN") == "1" or not expected_file.exists():
        expected_file.write_bytes(orjson.dumps(got, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert got == orjson.loads(expected_file.read_bytes())


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("deny") and "ignored" not in n])
async def test_golden_outputs_are_fixed_points(name: str) -> None:
    """Re-admitting kvinject's own output yields an empty patch (reinvocation is safe)."""
    request = orjson.loads((CASES / f"{name}.request.json").read_bytes())
    result, _ = await answer(request)
    pod = request["request"]["object"]
    if pod is None or "patch" not in result["response"]:
        return
    request["request"]["object"] = apply(pod, review.decode_patch(result))
    again, _ = await answer(request)
    assert again["response"]["allowed"] is True
    assert "patch" not in again["response"]
