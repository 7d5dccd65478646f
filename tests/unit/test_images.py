"""What names and builds the two images (docs/images.md): the Dockerfile's default base is pinned by digest and each
target installs its own lock with hashes; the kustomize base, the server's KVINJECT_INIT_IMAGE default and the
package version name the same images. (The images themselves: tests/node/test_images.py.)"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.harness import ROOT
from webhook import __version__
from webhook.names import FETCH_IMAGE_REPOSITORY, IMAGE_REPOSITORY
from webhook.settings import Settings

DOCKERFILE = (ROOT / "Dockerfile").read_text()
BASE = ROOT / "manifests" / "base"


def stages() -> list[tuple[str, str, list[str]]]:
    """(base, name, instructions) of each FROM, in order."""
    found: list[tuple[str, str, list[str]]] = []
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            found.append((words[1], words[3] if len(words) > 3 else "", []))
        elif found:
            found[-1][2].append(" ".join(words))
    return found


def test_the_default_base_image_is_pinned_by_digest() -> None:
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", default), default
    assert DOCKERFILE.index("ARG BASE_IMAGE=") < DOCKERFILE.index("FROM ")  # a build argument can override it
    earlier: set[str] = set()
    for base, name, _ in stages():  # every stage starts from the base or from an earlier stage
        assert base == "${BASE_IMAGE}" or base in earlier, base
        earlier.add(name)


def test_two_targets_serve_last_both_non_root_installing_their_lock_with_hashes() -> None:
    built = {name: (base, steps) for base, name, steps in stages()}
    assert stages()[-1][1] == "serve"  # `docker build` without --target builds the server
    for target, lock in (("serve", "serve"), ("fetch", "fetch")):
        base, steps = built[target]
        assert any(s == f"COPY --from={target}-env /opt/kvinject /opt/kvinject" for s in steps)
        env_steps = " ".join(built[f"{target}-env"][1])
        assert f"--require-hashes --only-binary :all: -r requirements/{lock}.txt" in env_steps
        assert "--no-deps --no-index /wheels/" in env_steps
        runtime = built[base][1]
        assert "USER 65532:65532" in runtime and 'ENTRYPOINT ["/opt/kvinject/bin/kvinject"]' in runtime
    assert 'CMD ["fetch"]' in built["fetch"][1] and 'CMD ["serve"]' in built["serve"][1]


def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return doc


def test_the_kustomize_base_names_both_images_at_the_package_version() -> None:
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization()["images"]}
    assert images == {
        "kvinject": f"{IMAGE_REPOSITORY}:{__version__}",
        "kvinject-fetch": f"{FETCH_IMAGE_REPOSITORY}:{__version__}",
    }
    # what the server injects when nothing sets KVINJECT_INIT_IMAGE is the same fetch image
    assert Settings().init_image == images["kvinject-fetch"]


def test_the_deployment_takes_its_init_image_from_the_kvinject_fetch_entry() -> None:
    (deployment,) = [d for d in yaml.safe_load_all((BASE / "deployment.yaml").read_text()) if d]
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {"images.kvinject.io/fetch": "kvinject-fetch"}
    (server,) = template["spec"]["containers"]
    assert server["image"] == "kvinject"
    (init_image,) = [e for e in server["env"] if e["name"] == "KVINJECT_INIT_IMAGE"]
    assert init_image["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.annotations['images.kvinject.io/fetch']"}}
    config = yaml.safe_load((BASE / kustomization()["configurations"][0]).read_text())
    assert config == {
        "images": [{"path": "spec/template/metadata/annotations/images.kvinject.io\\/fetch", "kind": "Deployment"}]
    }
