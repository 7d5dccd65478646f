"""kvinject installed as a platform team installs it: its Deployment runs on a real node (tests/harness/node.py),
the apiserver calls its Service (tests/harness/services.py makes ClusterIPs answer).

Two ways in, one result (`Installed`):
- `kustomize_install`: `kubectl kustomize` of an overlay written into a temp directory over manifests/base, with
  only what this cluster needs: the locally built image (imagePullPolicy Never), and, unless the base lets
  kvinject own its certificate (KVINJECT_CERT_MODE=self), a kvinject-tls Secret from `kvinject certs`-style
  certificates (webhook/certs.py) and that CA as every webhook's caBundle. A `revision` annotation on the pod
  template makes a new rollout of the same image (an upgrade, as far as the cluster can tell).
- `helm_install`: the chart (charts/kvinject) with only the same local settings as values (image.registry/
  repository/fetchRepository/tag, image.pullPolicy Never, the revision in podAnnotations): `helm install` the first
  time, `helm upgrade` after. What the session installed from manifests/ is migrated as a platform team moves from
  kustomize to Helm: `helm install --take-ownership` adopts the existing objects (CRD, RBAC, ServiceAccount,
  webhooks, policies) in place, so no SecretAccessPolicy, webhook or ServiceAccount token is lost on the way.
  `helm_uninstall` hands them back rather than deleting them (see there).

The kustomize objects are applied with server-side apply, except webhook configurations still sending to a URL:
the session's kvinject registered them with `url` clientConfigs (tests/harness/kube.py point_webhooks_at), which a
merge (server-side apply, or Helm's patch when it takes an object over) would keep beside `service`; both installers
replace those whole first. `uninstall` removes what the session's install did not make; the replicas must be gone
before the webhooks are pointed elsewhere (in certificate mode self they write the caBundle).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import ControlPlane
from tests.harness.helm import Helm, documents, helm_binary
from tests.harness.kube import MANIFESTS, pick
from webhook import certs

NAMESPACE = "kvinject"
SERVICE = "kvinject"
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
REVISION_ANNOTATION = "kvinject.io/test-revision"
RELEASE = "kvinject"


@dataclass(frozen=True)
class Installed:
    how: str  # a key of INSTALLERS
    docs: list[dict[str, Any]]  # what was applied
    ca_bundle: str  # the CA the webhooks trust (base64), "" when kvinject owns its certificate

    @property
    def deployment(self) -> dict[str, Any]:
        (found,) = [d for d in self.docs if d["kind"] == "Deployment"]
        return found


def rendered_base(cp: ControlPlane) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(cp.kubectl("kustomize", str(MANIFESTS / "base")).stdout) if d]


def owns_certificate(docs: list[dict[str, Any]]) -> bool:
    """Whether the Deployment runs kvinject in KVINJECT_CERT_MODE=self (it issues its CA, Secret and caBundle)."""
    (deployment,) = pick(docs, "Deployment")
    env = [e for c in deployment["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])]
    return any(e["name"] == "KVINJECT_CERT_MODE" and e.get("value") == "self" for e in env)


def serving_certificate(workdir: Path) -> certs.Issued:
    """What `kvinject certs` writes for the shipped Service: a CA and a certificate for kvinject.kvinject.svc."""
    return certs.issue(workdir, certs.service_names(SERVICE, NAMESPACE), ips=[], days=1)


def kustomize_overlay(
    base: list[dict[str, Any]], directory: Path, image: str, revision: str, issued: certs.Issued | None
) -> Path:
    """Write the overlay over manifests/base into `directory` (JSON patches by the base's own structure)."""
    container = "/spec/template/spec/containers/0"
    deployment_patch: list[dict[str, Any]] = [
        {"op": "replace", "path": f"{container}/image", "value": image},
        {"op": "add", "path": f"{container}/imagePullPolicy", "value": "Never"},
        {
            "op": "add",
            "path": f"/spec/template/metadata/annotations/{REVISION_ANNOTATION.replace('/', '~1')}",
            "value": revision,
        },
    ]
    (deployment,) = pick(base, "Deployment")
    if not deployment["spec"]["template"]["metadata"].get("annotations"):
        deployment_patch.insert(2, {"op": "add", "path": "/spec/template/metadata/annotations", "value": {}})
    patches: list[dict[str, Any]] = [
        {
            "target": {"kind": "Deployment", "name": deployment["metadata"]["name"]},
            "patch": yaml.safe_dump(deployment_patch),
        }
    ]
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS / "base", directory)],
        "patches": patches,
    }
    if issued is not None:
        (directory / "tls.crt").write_bytes(issued.cert_file.read_bytes())
        (directory / "tls.key").write_bytes(issued.key_file.read_bytes())
        kustomization["secretGenerator"] = [
            {
                "name": "kvinject-tls",
                "namespace": NAMESPACE,
                "type": "kubernetes.io/tls",
                "files": ["tls.crt", "tls.key"],
            }
        ]
        kustomization["generatorOptions"] = {"disableNameSuffixHash": True}
        for config in pick(base, *WEBHOOK_KINDS):
            ca = [
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": issued.ca_bundle}
                for i in range(len(config["webhooks"]))
            ]
            target = {"kind": config["kind"], "name": config["metadata"]["name"]}
            patches.append({"target": target, "patch": yaml.safe_dump(ca)})
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


def kustomize_install(cp: ControlPlane, workdir: Path, image: str, revision: str = "1") -> Installed:
    """kvinject from manifests/base through a kustomize overlay (see the module docstring)."""
    base = rendered_base(cp)
    issued = None if owns_certificate(base) else _certificate(workdir)
    with tempfile.TemporaryDirectory(prefix="kvinject-overlay-") as tmp:
        overlay = kustomize_overlay(base, Path(tmp), image, revision, issued)
        docs = [d for d in yaml.safe_load_all(cp.kubectl("kustomize", str(overlay)).stdout) if d]
    apply(cp, docs)
    return Installed("kustomize", docs, issued.ca_bundle if issued else "")


def _certificate(workdir: Path) -> certs.Issued:
    """One certificate per workdir: a second install (an upgrade) keeps the first's, as a cluster would."""
    directory = workdir / "certs"
    if (directory / "tls.crt").exists():
        return certs.Issued(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    directory.mkdir(parents=True, exist_ok=True)
    return serving_certificate(directory)


def apply(cp: ControlPlane, docs: list[dict[str, Any]]) -> None:
    """Server-side apply, but webhook configurations that send to a URL (the session's kvinject) are replaced:
    a merge would keep `url` beside `service`. Once they name the Service, an upgrade merges as a user's apply
    does, leaving a caBundle kvinject wrote itself (certificate mode self) in place."""
    configs = [c for c in pick(docs, *WEBHOOK_KINDS) if _sends_to_url(cp, c)]
    rest = [d for d in docs if d not in configs]
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(rest))
    for config in configs:
        cp.kubectl("replace", "-f", "-", input=yaml.safe_dump(config))


def _sends_to_url(cp: ControlPlane, config: dict[str, Any]) -> bool:
    found = cp.kubectl("get", config["kind"].lower(), config["metadata"]["name"], "-o", "json", check=False)
    if found.returncode != 0:
        return False
    return any("url" in hook["clientConfig"] for hook in json.loads(found.stdout).get("webhooks") or [])


def uninstall(cp: ControlPlane) -> None:
    """Remove the Deployment and what only it needs (the session's install keeps the namespace, RBAC, CRD and
    policies). Its replicas stop at once (grace 1 s): call it when nothing sends them admissions."""
    for kind, name in (
        ("deployment", "kvinject"),
        ("poddisruptionbudget", "kvinject"),
        ("service", SERVICE),
        ("secret", "kvinject-tls"),
    ):
        cp.kubectl("delete", kind, name, "-n", NAMESPACE, "--ignore-not-found", "--wait=false")
    # No load any more: their graceful shutdown is not what is being tested here.
    cp.kubectl(
        "delete", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=kvinject", "--grace-period=1", "--wait=false"
    )


def chart_values(image: str, revision: str) -> dict[str, Any]:
    """The chart's values for a locally built image `registry/repository:tag` (images.sh names kvinject-fetch
    beside it with the same tag, as the chart's one image.tag expects)."""
    name, _, tag = image.rpartition(":")
    registry, _, repository = name.rpartition("/")
    return {
        "image": {
            "registry": registry,
            "repository": repository,
            "fetchRepository": f"{repository}-fetch",
            "tag": tag,
            "pullPolicy": "Never",
        },
        "podAnnotations": {REVISION_ANNOTATION: revision},
    }


def helm_install(cp: ControlPlane, workdir: Path, image: str, revision: str = "1") -> Installed:
    """kvinject from charts/kvinject: `helm install --take-ownership` over what manifests/ installed, then
    `helm upgrade` (see the module docstring)."""
    helm = Helm.create(workdir / "helm", cp.kubeconfig)
    values = chart_values(image, revision)
    if helm.run("status", RELEASE, "--namespace", NAMESPACE, check=False).returncode == 0:
        helm.release("upgrade", values, NAMESPACE, RELEASE)
    else:
        # Only the harness's doing: the session's kvinject runs outside the cluster, its webhooks send to a URL,
        # which a patch (Helm's adoption) would keep beside `service`. A kustomize install has the chart's form.
        rendered = helm.template(values, namespace=NAMESPACE, release=RELEASE)
        existing = uids(cp, rendered)
        for config in [c for c in pick(rendered, *WEBHOOK_KINDS) if _sends_to_url(cp, c)]:
            cp.kubectl("replace", "-f", "-", input=yaml.safe_dump(config))
        helm.release("install", values, NAMESPACE, RELEASE, "--take-ownership")
        # Taken over in place: a re-created CRD would have taken every SecretAccessPolicy with it, a re-created
        # ServiceAccount every token issued for it.
        now = uids(cp, rendered)
        replaced = sorted(" ".join(k) for k, uid in existing.items() if now.get(k) != uid)
        assert not replaced, f"helm install re-created {replaced} instead of taking them over"
        sys.stderr.write(f"\n[ha] helm install took over {len(existing)} of the chart's {len(rendered)} objects\n")
    manifest = helm.run("get", "manifest", RELEASE, "--namespace", NAMESPACE).stdout
    return Installed("helm", documents(manifest), "")


def live_objects(cp: ControlPlane, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Those of `docs` that exist, as the API has them."""
    out = cp.kubectl("get", "-f", "-", "-o", "json", "--ignore-not-found", input=yaml.safe_dump_all(docs)).stdout
    found = json.loads(out) if out.strip() else {"items": []}
    items: list[dict[str, Any]] = found["items"] if found.get("kind") == "List" else [found]
    return items


def uids(cp: ControlPlane, docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    """The UIDs of those of `docs` that exist, by kind, namespace and name."""
    return {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["metadata"]["uid"]
        for o in live_objects(cp, docs)
    }


HELM_OWNERSHIP = {
    "label": ["app.kubernetes.io/managed-by-"],
    "annotate": ["meta.helm.sh/release-name-", "meta.helm.sh/release-namespace-"],
}


def helm_uninstall(cp: ControlPlane) -> None:
    """`uninstall`, and the release forgotten with its objects kept, not `helm uninstall`: that would delete the
    ServiceAccount whose token the session's kvinject serves with (a new one has another UID: the token dies) and the
    admission policies other tests rely on. Helm's ownership marks are taken off again and its release records
    deleted, so the objects are the session's kustomize install's as before."""
    with tempfile.TemporaryDirectory(prefix="kvinject-helm-") as home:
        helm = Helm.create(Path(home), cp.kubeconfig)
        found = helm.run("get", "manifest", RELEASE, "--namespace", NAMESPACE, check=False)
    if found.returncode == 0:
        docs = yaml.safe_dump_all(documents(found.stdout))
        for verb, keys in HELM_OWNERSHIP.items():
            cp.kubectl(verb, "-f", "-", *keys, input=docs)
    uninstall(cp)
    cp.kubectl("delete", "secret", "-n", NAMESPACE, "-l", f"owner=helm,name={RELEASE}", "--ignore-not-found")


@dataclass(frozen=True)
class Installer:
    install: Callable[..., Installed]  # (cp, workdir, image, revision="1"): a second call upgrades
    uninstall: Callable[[ControlPlane], None]  # the replicas stopped, the session's objects left
    requires: Callable[[], object] = lambda: None  # raises BinariesMissing when a tool is not built


# How kvinject gets installed; tests/node/test_ha.py runs every scenario once per entry.
INSTALLERS: dict[str, Installer] = {
    "kustomize": Installer(kustomize_install, uninstall),
    "helm": Installer(helm_install, helm_uninstall, helm_binary),
}
