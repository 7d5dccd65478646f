"""The lock files in requirements/ (written by `make lock`, read by the Dockerfile) as data, and what pyproject.toml
declares, for the tests that hold them to each other and to the images."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from tests.harness.builders import ROOT

REQUIREMENTS = ROOT / "requirements"
LOCKS = {"serve": REQUIREMENTS / "serve.txt", "fetch": REQUIREMENTS / "fetch.txt", "build": REQUIREMENTS / "build.txt"}


@dataclass(frozen=True)
class Locked:
    requirement: Requirement  # as written: name, specifier, marker
    hashes: tuple[str, ...]

    @property
    def name(self) -> NormalizedName:
        return canonicalize_name(self.requirement.name)

    @property
    def pinned(self) -> str | None:
        """The exact version when the specifier is one `==` (what a lock must hold), else None."""
        (spec, *more) = [*self.requirement.specifier] or [None]
        if spec is None or more or spec.operator != "==" or "*" in spec.version:
            return None
        return spec.version

    def applies(self) -> bool:
        """Whether pip installs it here (CPython 3.11 on Linux, as in both images)."""
        return self.requirement.marker is None or self.requirement.marker.evaluate()


def read_lock(path: Path) -> dict[NormalizedName, Locked]:
    """pip's requirements format as uv writes it: `name==version ; marker \\` then `--hash=sha256:...` lines."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        pending += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    if pending:
        logical.append(pending.strip())
    entries: dict[NormalizedName, Locked] = {}
    for entry in logical:
        words = entry.split()
        hashes = tuple(w.removeprefix("--hash=") for w in words if w.startswith("--hash="))
        options = [w for w in words if w.startswith("-") and not w.startswith("--hash=")]
        if options:
            raise ValueError(f"{path.name}: unexpected option(s) {options} in {entry!r}")
        requirement = Requirement(" ".join(w for w in words if not w.startswith("--hash=")))
        locked = Locked(requirement, hashes)
        if locked.name in entries:
            raise ValueError(f"{path.name}: {locked.name} locked twice")
        entries[locked.name] = locked
    return entries


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def declared() -> dict[str, list[Requirement]]:
    """What each image's lock must satisfy: fetch = [project] dependencies; serve = those and the [serve] extra;
    build = [build-system] requires."""
    data = pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    base = [Requirement(r) for r in project["dependencies"]]
    serve = [Requirement(r) for r in project["optional-dependencies"]["serve"]]
    build_system = data["build-system"]
    assert isinstance(build_system, dict)
    return {"fetch": base, "serve": base + serve, "build": [Requirement(r) for r in build_system["requires"]]}
