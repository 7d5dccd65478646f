"""The chart and manifests/ render the same objects: the base for the defaults, each overlay for its values.

Both sides are rendered at test time (manifests/ as it is now, by the cached kubectl's kustomize), so a change to
either that the other does not follow fails here. What may differ is listed below and nothing else.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.helm import MANIFESTS, Helm, by_key, kustomize, reparsed

pytestmark = pytest.mark.e2e

# What may differ, and nothing else: Helm's own labels (the chart adds them, kustomize does not), the CRD's keep
# policy (crds.keep: a Helm-only instruction), the order of a container's env entries (below) and the Namespace.
HELM_ONLY_LABELS = frozenset(
    {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}
)
HELM_ONLY_ANNOTATIONS = frozenset({"helm.sh/resource-policy"})
# Container env lists are compared by name: their order means nothing here (no value refers to another with
# $(NAME), checked below), and a kustomize strategic-merge patch moves the entries it sets to the front.
# `helm install` stores its release in the namespace before creating anything, so the chart renders the
# Namespace only with namespace.create=true (compared in its own case below).
NAMESPACE = ("Namespace", "", "kvinject")

CERT_MANAGER = {"certificates": {"mode": "cert-manager"}}
LIVE = {"liveVerification": {"enabled": True}}

# (id, kustomization under manifests/, chart values, whether the chart renders the Namespace)
CASES = [
    ("defaults=base", "base", {}, False),
    ("namespace.create=base-with-namespace", "base", {"namespace": {"create": True}}, True),
    ("cert-manager=overlays/cert-manager", "overlays/cert-manager", CERT_MANAGER, False),
    ("live-verification=overlays/live-verification", "overlays/live-verification", LIVE, False),
    (
        "cert-manager+live-verification=composed-overlay",
        "overlays/cert-manager-live-verification",
        {**CERT_MANAGER, **LIVE},
        False,
    ),
    # The audit-first rollout's last step (docs/rollout.md).
    ("rollout=enforce=overlays/enforce-all", "overlays/enforce-all", {"rollout": "enforce"}, False),
]


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    for field, allowed in (("labels", HELM_ONLY_LABELS), ("annotations", HELM_ONLY_ANNOTATIONS)):
        kept = {k: v for k, v in meta.get(field, {}).items() if k not in allowed}
        meta.pop(field, None)
        if kept:
            meta[field] = kept
    spec = out.get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        if "env" in c:
            assert not any("$(" in str(e.get("value", "")) for e in c["env"]), c["env"]
            c["env"] = sorted(c["env"], key=lambda e: e["name"])
    return out


def diff(kustomized: dict[str, Any], charted: dict[str, Any], what: str) -> str:
    a = yaml.safe_dump(normalized(kustomized), sort_keys=True).splitlines()
    b = yaml.safe_dump(normalized(charted), sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(a, b, f"kustomize {what}", f"chart {what}", lineterm=""))


@pytest.mark.parametrize(
    ("kustomization", "values", "with_namespace"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_chart_renders_what_kustomize_renders(
    helm: Helm, tmp_path: Path, kustomization: str, values: dict[str, Any], with_namespace: bool
) -> None:
    kustomized = by_key(kustomize(MANIFESTS / kustomization))
    charted = by_key(reparsed(helm.template_text(values, namespace="kvinject"), tmp_path / "chart"))
    assert NAMESPACE in kustomized
    if not with_namespace:
        assert NAMESPACE not in charted
        del kustomized[NAMESPACE]
    problems = [diff(kustomized[k], charted[k], str(k)) for k in sorted(set(kustomized) & set(charted))]
    if set(kustomized) != set(charted):
        problems.insert(0, f"only in kustomize: {sorted(set(kustomized) - set(charted))}")
        problems.insert(1, f"only in the chart: {sorted(set(charted) - set(kustomized))}")
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


def test_the_allowed_differences_are_the_only_ones(helm: Helm, tmp_path: Path) -> None:
    """The normalization removes Helm's own metadata and nothing else: the base's labels stay compared."""
    rendered = reparsed(helm.template_text(), tmp_path / "chart")
    crd = next(o for o in rendered if o["kind"] == "CustomResourceDefinition")
    assert set(crd["metadata"]["labels"]) >= HELM_ONLY_LABELS
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert normalized(crd)["metadata"]["labels"] == {
        "app.kubernetes.io/name": "kvinject",
        "app.kubernetes.io/part-of": "kvinject",
    }
    assert "annotations" not in normalized(crd)["metadata"]
    # A label the user adds is a real difference.
    extra = reparsed(helm.template_text({"commonLabels": {"team": "platform"}}), tmp_path / "extra")
    assert normalized(extra[0])["metadata"]["labels"]["team"] == "platform"


def test_components_compose_without_duplicates(tmp_path: Path) -> None:
    """A user's kustomization takes the base and both components: cert-manager's objects, the live verification
    rules, each object once (by_key refuses a duplicate), and the base's objects otherwise unchanged."""
    user = tmp_path / "mine"
    user.mkdir()
    rel = Path(os.path.relpath(MANIFESTS, user))  # kustomize refuses absolute paths
    (user / "kustomization.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(rel / "base")],
                "components": [str(rel / "components" / "cert-manager"), str(rel / "components" / "live-verification")],
            }
        )
    )
    base = by_key(kustomize(MANIFESTS / "base"))
    composed = by_key(kustomize(user))
    added = sorted(set(composed) - set(base))
    assert added == [
        ("Certificate", "kvinject", "kvinject-ca"),
        ("Certificate", "kvinject", "kvinject-serving"),
        ("Issuer", "kvinject", "kvinject-ca"),
        ("Issuer", "kvinject", "kvinject-selfsigned"),
        ("ValidatingAdmissionPolicy", "", "kvinject-token-requests"),
        ("ValidatingAdmissionPolicyBinding", "", "kvinject-token-requests"),
    ]
    assert set(base) <= set(composed)
    rules = composed[("ClusterRole", "", "kvinject")]["rules"]
    assert rules.count({"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}) == 1
    (server,) = composed[("Deployment", "kvinject", "kvinject")]["spec"]["template"]["spec"]["containers"]
    assert [e for e in server["env"] if e["name"] == "KVINJECT_LIVE_VERIFY"] == [
        {"name": "KVINJECT_LIVE_VERIFY", "value": "true"}
    ]
    for k in (
        ("MutatingWebhookConfiguration", "", "kvinject"),
        ("ValidatingWebhookConfiguration", "", "kvinject"),
        ("ValidatingWebhookConfiguration", "", "kvinject-provider-classes"),
    ):
        assert composed[k]["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "kvinject/kvinject-ca"}
    # The components change nothing else in the base's objects.
    untouched = set(base) - {
        ("ClusterRole", "", "kvinject"),
        ("Deployment", "kvinject", "kvinject"),
        ("MutatingWebhookConfiguration", "", "kvinject"),
        ("ValidatingWebhookConfiguration", "", "kvinject"),
        ("ValidatingWebhookConfiguration", "", "kvinject-provider-classes"),
    }
    assert {k: composed[k] for k in untouched} == {k: base[k] for k in untouched}
    # And the shipped composed overlay is this composition.
    assert by_key(kustomize(MANIFESTS / "overlays" / "cert-manager-live-verification")) == composed


@pytest.mark.parametrize("overlay", ["cert-manager", "live-verification"])
def test_each_overlay_is_the_base_with_its_component(overlay: str, tmp_path: Path) -> None:
    """`kubectl apply -k manifests/overlays/<x>` keeps working: the overlay renders the base plus its component."""
    rendered = by_key(kustomize(MANIFESTS / "overlays" / overlay))
    base = by_key(kustomize(MANIFESTS / "base"))
    assert set(base) < set(rendered)
    component = yaml.safe_load((MANIFESTS / "components" / overlay / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    own = [
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
        for r in component["resources"]
        for d in yaml.safe_load_all((MANIFESTS / "components" / overlay / r).read_text())
        if d
    ]
    assert sorted(set(rendered) - set(base)) == sorted(own)
