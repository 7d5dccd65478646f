"""The README's install instructions match what ships: the Helm values it names exist with the defaults it states, and
its kustomize install renders what it says with the kubectl the e2e tier builds (the user kustomization with the base,
both components, an image and the tenant; the audit-first rollout's switch to enforce)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import ROOT, TENANT_ID, Binaries, unavailable

README = ROOT / "README.md"


def yaml_block_after(heading: str, workdir: Path) -> dict[str, Any]:
    """The first ```yaml block after a README heading, its placeholders filled in for a kustomization in workdir."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"```yaml\n(.*?)```", re.S).search(text, start)
    assert match, f"no yaml block after {heading}"
    block = match.group(1).replace("<path to kvinject>", os.path.relpath(ROOT, workdir))
    doc: dict[str, Any] = yaml.safe_load(block.replace("<your Entra tenant id>", TENANT_ID))
    return doc


@pytest.fixture(scope="module")
def kubectl() -> Path:
    binaries = Binaries.locate()
    if binaries.missing("kubectl"):
        unavailable("kubectl is not built: make e2e-binaries")
    return binaries.kubectl


def render(kubectl: Path, workdir: Path, kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = subprocess.run([str(kubectl), "kustomize", str(workdir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def env(docs: list[dict[str, Any]], name: str) -> list[str]:
    (container,) = one(docs, "Deployment", "kvinject")["spec"]["template"]["spec"]["containers"]
    return [e.get("value") for e in container["env"] if e["name"] == name]


def webhooks(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        w["name"]: w
        for name in ("kvinject", "kvinject-provider-classes")
        for w in one(docs, "ValidatingWebhookConfiguration", name)["webhooks"]
    }


def test_users_kustomization_composes_base_components_image_and_tenant(kubectl: Path, tmp_path: Path) -> None:
    docs = render(kubectl, tmp_path, yaml_block_after("### With kustomize", tmp_path))
    (container,) = one(docs, "Deployment", "kvinject")["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("registry.example.com/kvinject/kvinject:")
    assert env(docs, "KVINJECT_TENANT_ID") == [TENANT_ID]
    assert env(docs, "KVINJECT_LIVE_VERIFY") == ["true"]  # the live-verification component
    rules = one(docs, "ClusterRole", "kvinject")["rules"]
    assert {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]} in rules
    for kind, name in [
        ("MutatingWebhookConfiguration", "kvinject"),
        ("ValidatingWebhookConfiguration", "kvinject"),
        ("ValidatingWebhookConfiguration", "kvinject-provider-classes"),
    ]:
        annotations = one(docs, kind, name)["metadata"].get("annotations", {})
        assert annotations.get("cert-manager.io/inject-ca-from") == "kvinject/kvinject-serving", (kind, name)
    # As installed, the rollout is audit-first: what is not kvinject's is audited and fails open.
    assert env(docs, "KVINJECT_NOT_OPTED_IN_ENFORCEMENT") == ["audit"]
    others = {n: w["failurePolicy"] for n, w in webhooks(docs).items() if "others" in n}
    assert others == {"validate-others.kvinject.io": "Ignore", "validate-classes-others.kvinject.io": "Ignore"}


def test_rollout_switch_to_enforce_fails_every_webhook_closed(kubectl: Path, tmp_path: Path) -> None:
    kustomization = yaml_block_after("### With kustomize", tmp_path)
    kustomization["patches"] += yaml_block_after("## Audit-first rollout", tmp_path)["patches"]
    docs = render(kubectl, tmp_path, kustomization)
    assert env(docs, "KVINJECT_NOT_OPTED_IN_ENFORCEMENT") == ["enforce"]
    assert env(docs, "KVINJECT_TENANT_ID") == [TENANT_ID]
    hooks = webhooks(docs)
    assert {"validate-others.kvinject.io", "validate-classes-others.kvinject.io"} <= set(hooks)
    # Merged into the shipped entries by name, not added as new, incomplete ones.
    assert all("clientConfig" in w and w["failurePolicy"] == "Fail" for w in hooks.values()), hooks


def helm_value_rows() -> list[tuple[list[str], list[str]]]:
    """(value names, stated defaults) of each row of the README's table of Helm values, as written in backticks."""
    text = README.read_text()
    section = text[text.index("\n### With Helm\n") : text.index("\n### With kustomize\n")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "no table of values under ### With Helm"
    cells = [row.split("|")[1:3] for row in rows]
    return [(re.findall(r"`([^`]*)`", names), re.findall(r"`([^`]*)`", defaults)) for names, defaults in cells]


def test_readme_helm_values_exist_with_the_stated_defaults() -> None:
    values = yaml.safe_load((ROOT / "charts" / "kvinject" / "values.yaml").read_text())

    def lookup(dotted: str) -> Any:
        node = values
        for key in dotted.split("."):
            assert isinstance(node, dict) and key in node, f"the chart has no value {dotted}"
            node = node[key]
        return node

    stated = 0
    for names, defaults in helm_value_rows():
        actual = [lookup(name) for name in names]
        for name, value, default in zip(names, actual, defaults, strict=False):
            assert value == yaml.safe_load(default), f"{name}: the README says {default}, the chart has {value!r}"
            stated += 1
    assert stated >= 5  # rollout, certificates.mode, enforcement, liveVerification.enabled, the images
