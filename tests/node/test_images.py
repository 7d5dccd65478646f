"""The two images built from our Dockerfile (tests/node/images.sh), read from their docker-archive tars: each holds
exactly its lock file's packages at the locked versions plus kvinject's own wheel (the fetch image: no web server,
no Kubernetes client), runs kvinject as 65532 with its own default command. (They run on the node in test_node.py
and, the fetch image as the init container, in test_secrets_on_node.py.)"""

from __future__ import annotations

import json
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from tests.harness import NodeArtifacts
from tests.harness.locks import LOCKS, read_lock
from webhook import __version__

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
