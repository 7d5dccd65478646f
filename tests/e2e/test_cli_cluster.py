"""`kvinject mutate` and `kvinject report` against the real control plane, through a kubeconfig.

Both run as a ServiceAccount bound only to the read-only ClusterRole that docs/report.md documents: that proves
the role is enough, and that neither command writes (a write would be refused, and is checked for besides).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_policy import OTHER_CLIENT, csi, hand_written_pod, provider_class
from tests.harness import (
    CLIENT_ID,
    ROOT,
    ControlPlane,
    K,
    KvinjectServer,
    apply_docs,
    create,
    federated_namespace,
    get_json,
    kvinject_webhooks_removed,
    pod_manifest,
    provider_classes,
    service_account_kubeconfig,
    wait_for,
)

REPORT_DOC = ROOT / "docs" / "report.md"
READER = "kvinject-report"


def documented_role() -> dict[str, Any]:
    """The ClusterRole docs/report.md tells operators to grant, as written there."""
    blocks = re.findall(r"```yaml\n(.*?)```", REPORT_DOC.read_text(), re.S)
    roles = [d for b in blocks for d in yaml.safe_load_all(b) if d and d.get("kind") == "ClusterRole"]
    assert len(roles) == 1, "docs/report.md documents one ClusterRole"
    role: dict[str, Any] = roles[0]
    return role


@pytest.fixture(scope="module")
def reader_kubeconfig(
    control_plane: ControlPlane, kvinject: KvinjectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A kubeconfig of a ServiceAccount bound only to the documented ClusterRole (get and list)."""
    ns = f"reader-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", ns)
    role = documented_role()
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{READER}-{ns}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": READER, "namespace": ns}],
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": READER, "namespace": ns}}
    apply_docs(control_plane, [role, account, binding])
    path = service_account_kubeconfig(control_plane, tmp_path_factory.mktemp("reader") / "kubeconfig", ns, READER)
    # The role really is read-only: the API refuses this account a write.
    denied = control_plane.kubectl("--kubeconfig", str(path), "create", "configmap", "probe", "-n", ns, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    yield path
    control_plane.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"], check=False)
    control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def kvinject_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KVINJECT_") and k != "KUBECONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**clean, **(env or {})},
        timeout=120,
    )


# -- kvinject mutate through a kubeconfig ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"], ids=["kubeconfig-flag", "KUBECONFIG-env"])
def test_mutate_reads_policies_through_kubeconfig(
    control_plane: ControlPlane, reader_kubeconfig: Path, tmp_path: Path, how: str
) -> None:
    ns = federated_namespace(control_plane, "cli", {"shape-kv": ["db"]})
    pod = pod_manifest(ns, {K + "secret-db": "shape-kv/db"})
    f = tmp_path / "pod.yaml"
    f.write_text(yaml.safe_dump(pod))
    flags = ["--kubeconfig", str(reader_kubeconfig)] if how == "flag" else []
    env = {"KUBECONFIG": str(reader_kubeconfig)} if how == "env" else {}

    result = kvinject_cli("mutate", str(f), *flags, env=env)
    assert result.returncode == 0, result.stderr
    mutated, generated = list(yaml.safe_load_all(result.stdout))
    assert mutated["metadata"]["annotations"][K + "status"] == "injected"
    volume = next(v for v in mutated["spec"]["volumes"] if v["name"] == "kvinject-secrets")
    assert volume["csi"]["volumeAttributes"]["secretProviderClass"] == generated["metadata"]["name"]
    assert generated["spec"]["parameters"]["clientID"] == CLIENT_ID
    assert provider_classes(control_plane, ns) == []  # a preview creates nothing

    # The same identity, an object its policy does not grant: a real judgement, not a blanket allow.
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(pod_manifest(ns, {K + "secret-x": "shape-kv/not-granted"})))
    refused = kvinject_cli("mutate", str(other), *flags, env=env)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "may not read shape-kv/not-granted" in refused.stderr, refused.stderr


# -- kvinject report -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_namespace(control_plane: ControlPlane, kvinject: KvinjectServer) -> Iterator[dict[str, str]]:
    """A namespace as a cluster may hold it before kvinject enforces: an allowed kvinject pod (injected by the
    webhook), and, written while kvinject was not installed, a hand-written CSI pod mounting a class that reads
    as another team's identity, a class reading with the node's identity, and a pod with kvinject annotations
    but `inject: "yes"`."""
    cp = control_plane
    ns = federated_namespace(cp, "rpt", {"shape-kv": ["db"]})
    allowed = create(cp, pod_manifest(ns, {K + "secret-db": "shape-kv/db"}))
    assert allowed["metadata"]["annotations"][K + "status"] == "injected"
    with kvinject_webhooks_removed(cp, kvinject):
        apply_docs(
            cp,
            [
                provider_class(ns, "team-b", clientID=OTHER_CLIENT),
                provider_class(ns, "node-identity", useVMManagedIdentity="true"),
            ],
        )
        foreign = create(cp, hand_written_pod(ns, {"volumes": [csi("team-b")]}))
        # A controller's pod, which the report names with its owner.
        legacy = {
            "metadata": {"labels": {"app": "legacy"}},
            "spec": hand_written_pod(ns, {"volumes": [csi("team-b")]})["spec"],
        }
        apply_docs(
            cp,
            [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "legacy", "namespace": ns},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "legacy"}}, "template": legacy},
                }
            ],
        )
        wait_for(lambda: get_json(cp, "pods", "-n", ns, "-l", "app=legacy")["items"], "the Deployment's pod")
        (made,) = get_json(cp, "pods", "-n", ns, "-l", "app=legacy")["items"]
        unlabelled = pod_manifest(ns, {K + "secret-db": "shape-kv/db"})
        unlabelled["metadata"]["labels"] = {K + "inject": "yes"}
        ignored = create(cp, unlabelled)
    yield {
        "namespace": ns,
        "allowed": allowed["metadata"]["name"],
        "foreign": foreign["metadata"]["name"],
        "ignored": ignored["metadata"]["name"],
        "legacy": made["metadata"]["name"],
        "legacy-owner": f"ReplicaSet/{made['metadata']['ownerReferences'][0]['name']}",
    }
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def snapshot(cp: ControlPlane, ns: str) -> dict[str, str]:
    """Every object of the kinds the report reads, by kind/name, with its resourceVersion."""
    items = get_json(cp, "pods,secretproviderclasses,serviceaccounts", "-n", ns)["items"]
    items += get_json(cp, "secretaccesspolicies")["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def test_report_lists_what_would_be_denied_and_writes_nothing(
    control_plane: ControlPlane, reader_kubeconfig: Path, mixed_namespace: dict[str, str]
) -> None:
    ns = mixed_namespace["namespace"]
    before = snapshot(control_plane, ns)
    kubeconfig = ["--kubeconfig", str(reader_kubeconfig)]

    # The hand-written objects here are not kvinject's: judged as a platform that enforces them (docs/rollout.md).
    enforcing = {"KVINJECT_NOT_OPTED_IN_ENFORCEMENT": "enforce"}
    result = kvinject_cli("report", "-n", ns, "-o", "json", *kubeconfig, env=enforcing)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "ImpactReport" and report["namespace"] == ns
    assert report["checked"] == {"pods": 4, "secretProviderClasses": 3}  # with the generated class
    rows = {(f["kind"], f["name"]): f for f in report["findings"]}
    assert set(rows) == {
        ("Pod", mixed_namespace["foreign"]),
        ("Pod", mixed_namespace["legacy"]),
        ("Pod", mixed_namespace["ignored"]),
        ("SecretProviderClass", "node-identity"),
        # Another identity's class is fine on its own, but pods that may not read it mount it: a write of it would
        # be denied while they run (a class write is judged for every live pod mounting it).
        ("SecretProviderClass", "team-b"),
    }
    shared = rows[("SecretProviderClass", "team-b")]
    assert shared["effect"] == "deny"
    # Pods alike (ServiceAccount and volume) are judged once, named by one of them.
    named = re.search(r"SecretProviderClass team-b is mounted by pod (\S+) ", shared["message"])
    assert named is not None and named.group(1) in (mixed_namespace["foreign"], mixed_namespace["legacy"])
    assert f"reads as client id {OTHER_CLIENT}, not {CLIENT_ID}" in shared["message"]
    foreign = rows[("Pod", mixed_namespace["foreign"])]
    assert (foreign["effect"], foreign["mode"], foreign["reason"]) == ("deny", "enforce", "provider-class")
    assert f"reads as client id {OTHER_CLIENT}, not {CLIENT_ID}" in foreign["message"]
    assert foreign["owner"] == ""
    legacy = rows[("Pod", mixed_namespace["legacy"])]
    assert (legacy["effect"], legacy["reason"], legacy["owner"]) == (
        "deny",
        "provider-class",
        mixed_namespace["legacy-owner"],
    )
    node = rows[("SecretProviderClass", "node-identity")]
    assert node["effect"] == "deny" and "useVMManagedIdentity" in node["message"]
    ignored = rows[("Pod", mixed_namespace["ignored"])]
    assert (ignored["effect"], ignored["reason"]) == ("warning", "not-opted-in")
    assert f'{K}inject="yes", not "true"' in ignored["message"]
    assert report["summary"] == {"deny": 4, "would-deny": 0, "warning": 1}

    table = kvinject_cli("report", "-n", ns, *kubeconfig, env=enforcing)
    assert table.returncode == 1, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "KIND", "NAME", "OWNER", "EFFECT", "REASON", "MESSAGE"]
    assert any(mixed_namespace["foreign"] in line and "deny (enforce)" in line for line in lines[1:])
    assert any(mixed_namespace["legacy-owner"] in line for line in lines[1:])
    assert mixed_namespace["allowed"] not in table.stdout
    assert (
        lines[-1]
        == "checked 4 pods and 3 SecretProviderClasses: 4 denied, 0 would be denied when enforcing, 1 warnings"
    )

    # The shipped audit-first default: the hand-written objects would be denied once the platform enforces.
    shipped = json.loads(kvinject_cli("report", "-n", ns, "-o", "json", *kubeconfig).stdout)
    assert shipped["summary"] == {"deny": 0, "would-deny": 4, "warning": 1}
    assert {(f["name"], f["mode"]) for f in shipped["findings"] if f["effect"] == "would-deny"} == {
        (mixed_namespace["foreign"], "audit"),
        (mixed_namespace["legacy"], "audit"),
        ("node-identity", "audit"),
        ("team-b", "audit"),
    }

    # Judged as if auditing: the same findings, none denied today.
    audited = kvinject_cli("report", "-n", ns, "--enforcement", "audit", "-o", "json", *kubeconfig)
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout)["summary"] == {"deny": 0, "would-deny": 4, "warning": 1}

    # Cluster-wide, the namespace's findings are among everything else's.
    everywhere = kvinject_cli("report", "-o", "json", env={"KUBECONFIG": str(reader_kubeconfig), **enforcing})
    assert everywhere.returncode == 1, everywhere.stderr
    assert {(f["namespace"], f["name"]) for f in json.loads(everywhere.stdout)["findings"]} >= {
        (ns, name) for _, name in rows
    }

    assert snapshot(control_plane, ns) == before


def test_report_with_no_finding_exits_0(control_plane: ControlPlane, reader_kubeconfig: Path) -> None:
    ns = federated_namespace(control_plane, "clean", {"shape-kv": ["db"]})
    create(control_plane, pod_manifest(ns, {K + "secret-db": "shape-kv/db"}))
    result = kvinject_cli("report", "-n", ns, "--kubeconfig", str(reader_kubeconfig))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "checked 1 pods and 1 SecretProviderClasses: 0 denied, 0 would be denied when enforcing, 0 warnings"
    ]


def test_report_refused_a_read_is_unusable(control_plane: ControlPlane, tmp_path: Path) -> None:
    """A ServiceAccount without the role: exit 2 with the API's answer, not an empty report."""
    ns = f"norole-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", ns)
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    kubeconfig = service_account_kubeconfig(control_plane, tmp_path / "kubeconfig", ns, "nobody")
    result = kvinject_cli("report", "--kubeconfig", str(kubeconfig))
    assert result.returncode == 2 and result.stdout == ""
    assert "HTTP 403" in result.stderr and "forbidden" in result.stderr, result.stderr
    control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
