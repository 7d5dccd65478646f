"""The two images built from our Dockerfile (tests/node/images.sh), read from their docker-archive tars: each holds
exactly its lock file's packages at the locked versions plus kvinject's own wheel (the fetch image: no web server,
no Kubernetes client), runs kvinject as 65532 with its own default command. (They run on the node in test_node.py
and, the fetch image as the init container, in test_secrets_on_node.py.) And one `images:` edit of the kustomize
base names both: the server's container image and, through the pod annotation, its KVINJECT_INIT_IMAGE."""

from __future__ import annotations

import json
import os
import sys
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.utils import canonicalize_name

from tests.harness import MANIFESTS, Node, NodeArtifacts, create, pick
from tests.harness.locks import LOCKS, read_lock
from tests.node.test_node import pod_manifest, wait_phase
from webhook import __version__
from webhook.names import FETCH_IMAGE_REPOSITORY, IMAGE_REPOSITORY

VENV = "opt/kvinject/"
SITE = VENV + "lib/python3.11/site-packages/"


@dataclass
class Contents:
    config: dict[str, Any]
    distributions: dict[str, str] = field(default_factory=dict)  # installed in the venv: name -> version
    venv_bytes: int = 0


def read_image(tar_path: Path) -> Contents:
    with tarfile.open(tar_path) as archive:
        manifest = archive.extractfile("manifest.json")
        assert manifest is not None
        (entry,) = json.load(manifest)
        config_file = archive.extractfile(entry["Config"])
        assert config_file is not None
        contents = Contents(json.load(config_file)["config"])
        for name in entry["Layers"]:
            layer_file = archive.extractfile(name)
            assert layer_file is not None
            with tarfile.open(fileobj=layer_file, mode="r|*") as layer:
                for member in layer:
                    path = member.name.removeprefix("./")
                    if path.startswith(VENV):
                        contents.venv_bytes += member.size
                    top = path.removeprefix(SITE).split("/")[0] if path.startswith(SITE) else ""
                    if top.endswith(".dist-info"):
                        dist, version = top.removesuffix(".dist-info").split("-", 1)
                        contents.distributions[canonicalize_name(dist)] = version
    return contents


@pytest.fixture(scope="module")
def images(node_artifacts: NodeArtifacts) -> dict[str, Contents]:
    found = {
        "serve": read_image(node_artifacts.images["kvinject"].tar),
        "fetch": read_image(node_artifacts.images["fetch"].tar),
    }
    for name, image in (("kvinject", "serve"), ("fetch", "fetch")):
        size = node_artifacts.images[name].tar.stat().st_size
        sys.stderr.write(f"\n[images] {name}: {size / 1e6:.0f} MB tar, venv {found[image].venv_bytes / 1e6:.0f} MB\n")
    return found


@pytest.mark.parametrize("image", ["serve", "fetch"])
def test_the_image_holds_exactly_its_lock(images: dict[str, Contents], image: str) -> None:
    locked = {e.name: e.pinned for e in read_lock(LOCKS[image]).values() if e.applies()}
    assert images[image].distributions == {**locked, "kvinject": __version__}


def test_the_fetch_image_has_no_web_server_and_no_kubernetes_client(images: dict[str, Contents]) -> None:
    server_side = {
        "fastapi",
        "starlette",
        "uvicorn",
        "kubernetes",
        "pydantic",
        "pydantic-settings",
        "prometheus-client",
    }
    assert server_side <= set(images["serve"].distributions)
    assert not server_side & set(images["fetch"].distributions)
    assert {"azure-identity", "azure-keyvault-secrets"} <= set(images["fetch"].distributions)
    assert images["fetch"].venv_bytes < images["serve"].venv_bytes


@pytest.mark.parametrize(("image", "command"), [("serve", ["serve"]), ("fetch", ["fetch"])])
def test_the_image_runs_kvinject_as_non_root(images: dict[str, Contents], image: str, command: list[str]) -> None:
    config = images[image].config
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/kvinject/bin/kvinject"] and config["Cmd"] == command
    assert any(e.startswith("PATH=/opt/kvinject/bin:") for e in config["Env"])  # the injected `kvinject fetch`


def test_one_images_edit_names_both_images(node: Node, tmp_path: Path) -> None:
    """An overlay's `images:` (what `kustomize edit set image` writes there) moves both to another registry and tag;
    in a running container the server's KVINJECT_INIT_IMAGE is then the fetch image's new name (the Deployment's env,
    run with busybox)."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    images = [  # an overlay names the images as the base left them
        {"name": IMAGE_REPOSITORY, "newName": "registry.example/platform/kvinject", "newTag": "9.9.9"},
        {"name": FETCH_IMAGE_REPOSITORY, "newName": "registry.example/platform/kvinject-fetch", "newTag": "9.9.9"},
    ]
    kustomization = {"resources": [os.path.relpath(MANIFESTS / "base", overlay)], "images": images}
    (overlay / "kustomization.yaml").write_text(json.dumps(kustomization))
    rendered = [d for d in yaml.safe_load_all(node.cp.kubectl("kustomize", str(overlay)).stdout) if d]
    (deployment,) = pick(rendered, "Deployment")
    template = deployment["spec"]["template"]
    (server,) = template["spec"]["containers"]
    assert server["image"] == "registry.example/platform/kvinject:9.9.9"

    namespace = f"images-{uuid.uuid4().hex[:8]}"
    node.kubectl("create", "namespace", namespace)
    try:
        pod = pod_manifest(
            "init-image",
            namespace,
            node.images["busybox"],
            container={"command": ["sh", "-c", "echo $KVINJECT_INIT_IMAGE"], "env": server["env"]},
            restartPolicy="Never",
        )
        pod["metadata"]["annotations"] = template["metadata"]["annotations"]
        create(node.cp, pod)
        wait_phase(node, namespace, "init-image", "Succeeded")
        assert node.logs(namespace, "init-image").strip() == "registry.example/platform/kvinject-fetch:9.9.9"
    finally:
        node.kubectl("delete", "namespace", namespace, "--wait=false")
