"""Wrongly typed pods are named, not crashed on (found by the fuzzer)."""

from __future__ import annotations

from typing import Any

import pytest

from webhook import contract, shape


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        ({"metadata": {"labels": ["x"]}}, ["object.metadata.labels must be an object"]),
        ({"metadata": {"annotations": {"kvinject.io/secret-a": None}}}, []),
        (
            {"metadata": {"annotations": {"kvinject.io/secret-a": ["x"]}}},
            ["object.metadata.annotations['kvinject.io/secret-a'] must be a string"],
        ),
        ({"spec": "x"}, ["object.spec must be an object"]),
        ({"spec": {"containers": ["x"]}}, ["object.spec.containers[0] must be an object"]),
        ({"spec": {"initContainers": 74}}, ["object.spec.initContainers must be a list"]),
        ({"spec": {"containers": [None]}}, ["object.spec.containers[0] must not be null"]),
        (
            {"spec": {"volumes": [{"csi": {"volumeAttributes": "x"}}]}},
            ["object.spec.volumes[0].csi.volumeAttributes must be an object"],
        ),
        ({"spec": {"securityContext": {"fsGroup": True}}}, ["object.spec.securityContext.fsGroup must be an integer"]),
        ({"metadata": None, "spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]}}, []),
    ],
    ids=[
        "labels-list",
        "null-is-absent",
        "annotation-list",
        "spec-string",
        "container-string",
        "inits-number",
        "null-container",
        "volume-attributes-string",
        "fsgroup-bool",
        "valid",
    ],
)
def test_shape_problems(pod: dict[str, Any], expected: list[str]) -> None:
    assert shape.problems(pod) == expected


def test_problems_are_capped() -> None:
    assert len(shape.problems({"spec": {"containers": ["x"] * 100}})) == 5


@pytest.mark.parametrize(
    ("annotations", "fragment"),
    [
        ({f"kvinject.io/secret-a{i}": "kv-one/o" for i in range(300)}, "300 kvinject.io/secret-* annotations"),
        (
            {"kvinject.io/secret-a": "kv-one/o", **{f"kvinject.io/env-V{i}": "a" for i in range(300)}},
            "300 kvinject.io/env-* annotations",
        ),
        ({"kvinject.io/secret-a": "kv-one/" + "o" * 2000}, "value is 2007 characters, more than 1024"),
    ],
    ids=["too-many-secrets", "too-many-env", "value-too-long"],
)
def test_contract_limits(annotations: dict[str, str], fragment: str) -> None:
    with pytest.raises(contract.ContractError) as err:
        contract.parse_annotations(annotations)
    assert any(fragment in p for p in err.value.problems)


def test_null_annotation_values_are_absent() -> None:
    req = contract.parse_annotations({"kvinject.io/secret-a": "kv-one/a", "kvinject.io/env-X": None})  # type: ignore[dict-item]
    assert req.env == ()
