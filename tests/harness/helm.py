"""Helm from tests/e2e/build_helm.sh, and the two renderers the chart is compared with (helm, kubectl kustomize).

Helm runs with its cache, config and data homes in a directory of the caller's (never ~/.config/helm), offline
for lint/template, and against a control plane's kubeconfig for install/upgrade/uninstall.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import Binaries, BinariesMissing, cache_dir, read_versions

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kvinject"
MANIFESTS = ROOT / "manifests"
BUILD_SCRIPT = "tests/e2e/build_helm.sh"


def helm_binary() -> Path:
    """The cached helm of the pinned HELM_VERSION (raises BinariesMissing when absent)."""
    path = cache_dir() / "bin" / f"helm-{read_versions()['HELM_VERSION']}" / "helm"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BinariesMissing(f"helm missing; run `{BUILD_SCRIPT}` (or `make e2e-binaries`). Missing:\n  {path}")
    return path


def kubectl_binary() -> Path:
    """The cached kubectl (its built-in kustomize renders manifests/)."""
    return Binaries.locate().require("kubectl").kubectl


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass(frozen=True)
class Helm:
    """One helm binary with private homes under ``home``; ``kubeconfig`` for commands that reach a cluster."""

    home: Path
    binary: Path
    kubeconfig: Path | None = None
    kube_version: str = ""

    @classmethod
    def create(cls, home: Path, kubeconfig: Path | None = None) -> Helm:
        home.mkdir(parents=True, exist_ok=True)
        kube_version = read_versions()["KUBERNETES_VERSION"]
        return cls(home, helm_binary(), kubeconfig, kube_version)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_") and k != "KUBECONFIG"}
        for name in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{name}_HOME"] = str(self.home / name.lower())
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env(), timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def values_args(self, values: Mapping[str, Any] | None) -> list[str]:
        """Values as one JSON document on a file (exact types, no --set parsing)."""
        if not values:
            return []
        path = self.home / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.json"
        path.write_text(json.dumps(values))
        return ["--values", str(path)]

    def template_text(
        self, values: Mapping[str, Any] | None = None, namespace: str = "kvinject", release: str = "kvinject"
    ) -> str:
        """`helm template` of the chart: the YAML it prints."""
        return self.run(
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            self.kube_version,
            *self.values_args(values),
        ).stdout

    def template(
        self, values: Mapping[str, Any] | None = None, namespace: str = "kvinject", release: str = "kvinject"
    ) -> list[dict[str, Any]]:
        """`helm template` of the chart: the rendered objects."""
        return documents(self.template_text(values, namespace, release))

    def release(
        self, verb: str, values: Mapping[str, Any] | None, namespace: str, release: str = "kvinject", *extra: str
    ) -> subprocess.CompletedProcess[str]:
        """`helm install|upgrade RELEASE CHART` into ``namespace`` (no --wait: the tier may have no node)."""
        return self.run(verb, release, str(CHART), "--namespace", namespace, *self.values_args(values), *extra)


def kustomize(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH`: the rendered objects."""
    result = subprocess.run(
        [str(kubectl_binary()), "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return documents(result.stdout)


def reparsed(text: str, workdir: Path) -> list[dict[str, Any]]:
    """A rendering (YAML text) read through `kubectl kustomize`, i.e. by the YAML parser that read the base.

    kustomize's parser and PyYAML differ on folded scalars with more-indented lines (the base's CEL
    expressions): comparing the chart's text only after the same parser has read it keeps that out of the
    comparison, while any difference in the text itself stays in.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rendered.yaml").write_text(text)
    (workdir / "kustomization.yaml").write_text("resources: [rendered.yaml]\n")
    return kustomize(workdir)


def key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """kind, namespace, name: what identifies an object in a rendering."""
    meta = obj.get("metadata", {})
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def by_key(objs: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The objects by (kind, namespace, name); a duplicate is an error (a rendering must not repeat one)."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for obj in objs:
        k = key(obj)
        if k in out:
            raise AssertionError(f"{k} rendered twice")
        out[k] = dict(obj)
    return out
