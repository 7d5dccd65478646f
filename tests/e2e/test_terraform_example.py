"""The Kubernetes half of the Terraform example (examples/terraform) on the real apiserver with kvinject installed:
the CRD's schema accepts its SecretAccessPolicy, and kvinject admits a pod of its ServiceAccount asking for the
granted secrets and denies one asking for more. (The Azure half's correspondence: tests/unit/test_terraform_example.py.)
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.harness import ControlPlane, KvinjectServer, apply_docs, dry_run, get_json, pod_manifest, wait_for
from tests.harness.terraform import apply, load


def _pod(namespace: str, account: str, vault: str, objects: list[str]) -> dict[str, Any]:
    annotations = {"kvinject.io/vault": vault, **{f"kvinject.io/secret-{o}": o for o in objects}}
    pod = pod_manifest(namespace, annotations)
    pod["spec"]["serviceAccountName"] = account
    return pod


def test_example_manifests_are_accepted_and_enforced(control_plane: ControlPlane, kvinject: KvinjectServer) -> None:
    cp = control_plane
    applied = apply(load())
    (account,) = applied.manifests("ServiceAccount")
    (policy,) = applied.manifests("SecretAccessPolicy")
    # A namespace of its own (the example's `payments` is the examples' cluster, used by other tests).
    namespace = f"tf-{uuid.uuid4().hex[:6]}"
    account["metadata"]["namespace"] = namespace
    policy["metadata"]["name"] = f"{policy['metadata']['name']}-{namespace}"
    for entry in policy["spec"]["federatedServiceAccounts"]:
        entry["namespace"] = namespace
    name, (rule,) = account["metadata"]["name"], policy["spec"]["allow"]

    cp.kubectl("create", "namespace", namespace)
    try:
        apply_docs(cp, [account, policy])  # server-side apply: the CRD's schema judges the policy
        assert get_json(cp, "secretaccesspolicy", policy["metadata"]["name"])["spec"] == policy["spec"]

        allowed = _pod(namespace, name, rule["vault"], rule["objects"])
        wait_for(lambda: dry_run(cp, allowed).returncode == 0, "kvinject admits the example's pod")
        injected = dry_run(cp, allowed)
        assert "kvinject-secrets" in injected.stdout, injected.stdout

        denied = dry_run(cp, _pod(namespace, name, rule["vault"], [*rule["objects"], "admin-password"]))
        assert denied.returncode != 0
        assert f"may not read {rule['vault']}/admin-password" in denied.stderr, denied.stderr
    finally:
        cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        cp.kubectl("delete", "secretaccesspolicy", policy["metadata"]["name"], check=False)
