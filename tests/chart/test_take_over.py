"""Moving from kustomize to Helm (docs/helm.md): `helm install --take-ownership` over kvinject installed with
`kubectl apply -k manifests/` takes every object over in place. On a control plane of its own (the session's has
kvinject under the same cluster-wide names); no node, so no pod runs and helm runs without --wait.

What must survive the take-over: the objects themselves (same UIDs: the CRD with every SecretAccessPolicy, the
ServiceAccount with the tokens issued for it), the caBundle kvinject wrote into its webhooks (certificate mode self),
and the Deployment as it was (same settings, same pod template: nothing restarts).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Binaries, ControlPlane, get_json, install
from tests.harness.deploy import live_objects, uids
from tests.harness.helm import CHART, Helm, key

pytestmark = pytest.mark.e2e

NAMESPACE = "kvinject"
WEBHOOKS = (("mutatingwebhookconfiguration", "kvinject"), ("validatingwebhookconfiguration", "kvinject"))
POLICY = {
    "apiVersion": "kvinject.io/v1alpha1",
    "kind": "SecretAccessPolicy",
    "metadata": {"name": "grant"},
    "spec": {
        "identity": {
            "clientId": "11111111-2222-3333-4444-555555555555",
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        },
        "federatedServiceAccounts": [{"namespace": "team", "name": "api"}],
        "allow": [{"vault": "kv-team", "objects": ["db-password"]}],
    },
}


@pytest.fixture(scope="module")
def cluster(e2e_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    binaries = e2e_binaries
    with ControlPlane(tmp_path_factory.mktemp("take-over-controlplane"), binaries=binaries) as cp:
        cp.apply_crd(binaries.spc_crd)
        yield cp
        cp.check_alive()


def test_helm_takes_over_a_kustomize_install_in_place(cluster: ControlPlane, helm: Helm, tmp_path: Path) -> None:
    cp = cluster
    install(cp)  # kubectl apply -k manifests/
    cp.kubectl("apply", "-f", "-", input=json.dumps(POLICY))
    # what kvinject does in certificate mode self once it runs: its CA into its webhooks
    ca = base64.b64encode(Path(cp.ca_file).read_bytes()).decode()
    for kind, name in WEBHOOKS:
        hooks = get_json(cp, kind, name)["webhooks"]
        patch = [{"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": ca} for i in range(len(hooks))]
        cp.kubectl("patch", kind, name, "--type=json", "-p", json.dumps(patch))
    rendered = helm.template(namespace=NAMESPACE)
    before = uids(cp, rendered)
    assert set(before) == {key(o) for o in rendered}, "the chart renders an object manifests/ did not install"
    deployment = get_json(cp, "deployment", "kvinject", "-n", NAMESPACE)

    on_cluster = Helm.create(tmp_path / "helm", kubeconfig=cp.kubeconfig)
    plain = on_cluster.run("install", "kvinject", str(CHART), "--namespace", NAMESPACE, check=False)
    assert plain.returncode != 0 and "cannot be imported into the current release" in plain.stderr, plain.stderr
    on_cluster.run("install", "kvinject", str(CHART), "--namespace", NAMESPACE, "--take-ownership")

    assert uids(cp, rendered) == before
    for o in live_objects(cp, rendered):
        meta = o["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm", key(o)
        assert meta["annotations"]["meta.helm.sh/release-name"] == "kvinject", key(o)
    status = json.loads(on_cluster.run("status", "kvinject", "-n", NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed" and status["version"] == 1
    for kind, name in WEBHOOKS:
        config = get_json(cp, kind, name)
        assert {h["clientConfig"].get("caBundle") for h in config["webhooks"]} == {ca}, name
    assert get_json(cp, "secretaccesspolicy", "grant")["spec"] == POLICY["spec"]
    # Same spec, so the same pod template: no new ReplicaSet, nothing restarts (the generation does count Helm's
    # annotations: the API bumps it on any change of a Deployment's annotations).
    taken = get_json(cp, "deployment", "kvinject", "-n", NAMESPACE)
    assert taken["spec"] == deployment["spec"]
