"""The README's install instructions match what ships: the Helm values it names exist with the defaults it states, its
kustomize install renders what it says with the kubectl the e2e tier builds (the user kustomization with the base,
both components, both images and the tenant; a certificate of your own; the audit-first rollout's switch to enforce,
which is what overlays/enforce-all applies), every `helm install|upgrade` it shows renders with the helm the e2e tier
builds, and every `kvinject` flag it uses exists."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import ROOT, TENANT_ID, Binaries, BinariesMissing, unavailable
from tests.harness.helm import CHART, Helm, by_key, kustomize

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
    template = one(docs, "Deployment", "kvinject")["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["image"].startswith("registry.example.com/kvinject/kvinject:")
    # The second images: entry reaches KVINJECT_INIT_IMAGE through the pod annotation.
    fetch = template["metadata"]["annotations"]["images.kvinject.io/fetch"]
    assert fetch.startswith("registry.example.com/kvinject/kvinject-fetch:"), fetch
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
        assert annotations.get("cert-manager.io/inject-ca-from") == "kvinject/kvinject-ca", (kind, name)
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


def test_own_certificate_patch_serves_the_secret_in_mode_files(kubectl: Path, tmp_path: Path) -> None:
    kustomization = yaml_block_after("### With kustomize", tmp_path)
    kustomization.pop("components")  # your certificate instead of cert-manager's
    kustomization["patches"] += yaml_block_after("### Certificates", tmp_path)["patches"]
    docs = render(kubectl, tmp_path, kustomization)
    assert env(docs, "KVINJECT_CERT_MODE") == ["files"]
    assert env(docs, "KVINJECT_TENANT_ID") == [TENANT_ID]
    volumes = one(docs, "Deployment", "kvinject")["spec"]["template"]["spec"]["volumes"]
    (certs,) = [v for v in volumes if v["name"] == "certs"]
    assert certs == {"name": "certs", "secret": {"secretName": "kvinject-tls"}}


def webhooks_by_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The objects by key, each configuration's webhooks by name (a strategic-merge patch moves the entries it sets
    to the front; the apiserver calls a configuration's webhooks in no promised order)."""
    objects = by_key(docs)
    for obj in objects.values():
        if "webhooks" in obj:
            obj["webhooks"] = {w["name"]: w for w in obj["webhooks"]}
    return objects


def test_enforce_all_overlay_is_the_readmes_switch(kubectl: Path, tmp_path: Path) -> None:
    """`kubectl apply -k manifests/overlays/enforce-all` and the README's patches over the base are the same objects."""
    patches = yaml_block_after("## Audit-first rollout", tmp_path)["patches"]
    base = os.path.relpath(ROOT / "manifests" / "base", tmp_path)
    by_readme = webhooks_by_name(render(kubectl, tmp_path, {"resources": [base], "patches": patches}))
    assert by_readme == webhooks_by_name(kustomize(ROOT / "manifests" / "overlays" / "enforce-all"))


# Placeholders of the README's commands, and what stands for them here.
PLACEHOLDERS = {
    "<your Entra tenant id>": TENANT_ID,
    '"$(base64 -w0 certs/ca.crt)"': "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
}


def readme_helm_commands() -> list[list[str]]:
    """Every `helm install|upgrade kvinject charts/kvinject ...` of the README (blocks and inline), as arguments."""
    text = README.read_text().replace("\\\n", " ")
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    commands = [shlex.split(m) for m in re.findall(r"helm (?:install|upgrade) kvinject charts/kvinject[^`\n]*", text)]
    # The Logs paragraph's extraEnv, on top of an install.
    (log_format,) = re.findall(r"`(--set 'extraEnv[^`]*)`", text)
    return [*commands, ["helm", "install", "kvinject", "charts/kvinject", *shlex.split(log_format)]]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        return Helm.create(tmp_path_factory.mktemp("helm"))
    except BinariesMissing as exc:
        unavailable(str(exc))
        raise


def test_readme_helm_commands_render(helm: Helm) -> None:
    commands = readme_helm_commands()
    assert len(commands) >= 4, commands  # install, your certificate, rollout=enforce, the log format
    for command in commands:
        args = " ".join(command[4:]).replace("--reuse-values", "").replace("-f values.yaml", "").split()
        result = helm.run("template", "kvinject", str(CHART), *args, "--kube-version", helm.kube_version, check=False)
        assert result.returncode == 0, (command, result.stderr)
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        sets = " ".join(args)
        assert env(docs, "KVINJECT_TENANT_ID") == ([TENANT_ID] if "tenantId=" in sets else [""]), command
        if "rollout=enforce" in sets:
            assert env(docs, "KVINJECT_NOT_OPTED_IN_ENFORCEMENT") == ["enforce"]
            assert {w["failurePolicy"] for w in webhooks(docs).values()} == {"Fail"}
        if "certificates.mode=secret" in sets:
            assert env(docs, "KVINJECT_CERT_MODE") == ["files"]
            every = [*webhooks(docs).values(), *one(docs, "MutatingWebhookConfiguration", "kvinject")["webhooks"]]
            assert len(every) == 5 and all(w["clientConfig"].get("caBundle") for w in every)
        if "extraEnv" in sets:
            assert env(docs, "KVINJECT_LOG_FORMAT") == ["json"]


def readme_kvinject_flags() -> list[tuple[str, str]]:
    """(command, flag) for every `kvinject COMMAND ... --flag` the README shows."""
    found = set()
    for line in README.read_text().splitlines():
        for match in re.finditer(r"kvinject (serve|mutate|report|certs|fetch)\b([^`#|]*)", line):
            found |= {(match.group(1), flag) for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2))}
    return sorted(found)


def test_readme_kvinject_flags_exist() -> None:
    flags = readme_kvinject_flags()
    assert ("report", "--enforcement") in flags and ("certs", "--out") in flags, flags
    helps: dict[str, str] = {}
    for command, flag in flags:
        if command not in helps:
            result = subprocess.run(
                [sys.executable, "-m", "webhook", command, "--help"], capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, result.stderr
            helps[command] = result.stdout
        assert re.search(rf"(?<![\w-]){flag}(?![\w-])", helps[command]), f"kvinject {command} has no {flag}"


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
