"""The chart's metadata agrees with the project and the kustomize base (no binaries needed)."""

from __future__ import annotations

import json

import yaml

import webhook
from tests.harness.helm import CHART, MANIFESTS


def test_app_version_is_the_project_version() -> None:
    """appVersion is the default tag of both images: it must be the version the server reports and builds."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == webhook.__version__


def test_default_image_is_the_base_image() -> None:
    """registry/repository:appVersion is the image the kustomize base names."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    (image,) = [i for i in base["images"] if i["name"] == "kvinject"]
    assert f"{image['newName']}:{image['newTag']}" == (
        f"{values['image']['registry']}/{values['image']['repository']}:{chart['appVersion']}"
    )


def test_schema_knows_every_default_value() -> None:
    """values.schema.json refuses unknown keys: every key of values.yaml must be in it (two levels deep)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    for key, value in values.items():
        assert key in schema["properties"], key
        sub = schema["properties"][key]
        if isinstance(value, dict) and sub.get("additionalProperties") is False:
            assert set(value) <= set(sub["properties"]), key
