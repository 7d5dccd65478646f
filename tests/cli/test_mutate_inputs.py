"""`kvinject mutate` on the inputs `kubectl` hands out: AdmissionReviews of other kinds, `kind: List`, and
`--patch` on workloads (a patch that applies to the workload as given)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml

from tests.cli.test_mutate_cli import CLUSTER, kvinject
from tests.harness import admission_review, controller_pod

TEMPLATE_PATHS = {
    "Deployment": ["spec", "template"],
    "StatefulSet": ["spec", "template"],
    "DaemonSet": ["spec", "template"],
    "Job": ["spec", "template"],
    "CronJob": ["spec", "jobTemplate", "spec", "template"],
}


def workload(kind: str, name: str = "api", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    pod = controller_pod(annotations)
    node: dict[str, Any] = {
        "metadata": {"labels": pod["metadata"]["labels"], "annotations": pod["metadata"]["annotations"]},
        "spec": pod["spec"],
    }
    for key in reversed(TEMPLATE_PATHS[kind]):
        node = {key: node}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "payments"}, **node}


def bare_pod(name: str) -> dict[str, Any]:
    pod = controller_pod()
    pod["metadata"].update(name=name, namespace="payments")
    del pod["metadata"]["generateName"], pod["metadata"]["ownerReferences"]
    return {"apiVersion": "v1", "kind": "Pod", **pod}


def write(tmp_path: Path, *docs: Any) -> str:
    f = tmp_path / "in.yaml"
    f.write_text(yaml.safe_dump_all(list(docs)))
    return str(f)


@pytest.mark.parametrize("kind", list(TEMPLATE_PATHS), ids=str.lower)
def test_patch_applies_to_the_workload_as_given(tmp_path: Path, kind: str) -> None:
    doc = workload(kind)
    f = write(tmp_path, doc)
    patched = kvinject("mutate", f, "--cluster", CLUSTER, "--patch")
    whole = kvinject("mutate", f, "--cluster", CLUSTER)
    assert patched.returncode == 0 and whole.returncode == 0, patched.stderr + whole.stderr
    ops, _ = list(yaml.safe_load_all(patched.stdout))
    expected, _ = list(yaml.safe_load_all(whole.stdout))
    prefix = "".join(f"/{k}" for k in TEMPLATE_PATHS[kind]) + "/"
    assert ops and all(op["path"].startswith(prefix) for op in ops)
    assert jsonpatch.apply_patch(copy.deepcopy(doc), ops) == expected
    assert expected != doc


@pytest.mark.parametrize(
    ("kind", "group", "said"),
    [("Deployment", "apps", "an AdmissionReview of a Deployment (apps)"), ("ConfigMap", "", "of a ConfigMap")],
    ids=["deployment-review", "configmap-review"],
)
def test_review_of_another_kind_is_unusable(kind: str, group: str, said: str) -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    review = admission_review(workload("Deployment") if kind == "Deployment" else configmap, kind=kind)
    review["request"]["kind"]["group"] = group
    result = kvinject("mutate", "-", "--cluster", CLUSTER, stdin=orjson.dumps(review).decode())
    assert result.returncode == 2, result.stderr
    assert said in result.stderr and "kvinject mutates Pods only" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_review_without_object_is_unusable() -> None:
    review = admission_review(None)
    result = kvinject("mutate", "-", "--cluster", CLUSTER, stdin=orjson.dumps(review).decode())
    assert result.returncode == 2 and "no request.object" in result.stderr, result.stderr


def kube_list(*items: dict[str, Any]) -> dict[str, Any]:
    """What `kubectl get pods,deployments,services -o yaml` prints."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list(items)}


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "payments"}, "spec": {}}


def test_list_is_judged_item_by_item(tmp_path: Path) -> None:
    listed = kube_list(bare_pod("one"), workload("Deployment"), SERVICE)
    result = kvinject("mutate", write(tmp_path, listed), "--cluster", CLUSTER)
    assert result.returncode == 0, result.stderr
    out, spc = list(yaml.safe_load_all(result.stdout))
    assert out["kind"] == "List" and [i["kind"] for i in out["items"]] == ["Pod", "Deployment", "Service"]
    pod, deployment, service = out["items"]
    assert pod["metadata"]["annotations"]["kvinject.io/status"] == "injected"
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"]["kvinject.io/status"] == "injected"
    assert service == SERVICE
    assert spc["kind"] == "SecretProviderClass"


def test_list_patch_applies_to_the_list(tmp_path: Path) -> None:
    listed = kube_list(SERVICE, bare_pod("one"), workload("CronJob"))
    f = write(tmp_path, listed)
    patched = kvinject("mutate", f, "--cluster", CLUSTER, "--patch")
    whole = kvinject("mutate", f, "--cluster", CLUSTER)
    assert patched.returncode == 0 and whole.returncode == 0, patched.stderr + whole.stderr
    ops = next(yaml.safe_load_all(patched.stdout))
    assert {op["path"].split("/")[2] for op in ops} == {"1", "2"}
    assert jsonpatch.apply_patch(copy.deepcopy(listed), ops) == next(yaml.safe_load_all(whole.stdout))


def test_list_exit_is_the_worst_item(tmp_path: Path) -> None:
    denied = bare_pod("two")
    denied["metadata"]["annotations"] = {"kvinject.io/secret-x": "other-kv/x"}  # no policy grants other-kv
    result = kvinject("mutate", write(tmp_path, kube_list(bare_pod("one"), denied)), "--cluster", CLUSTER)
    assert result.returncode == 1 and result.stdout == ""
    assert "document 1 item 2: kvinject denied pod two" in result.stderr, result.stderr
