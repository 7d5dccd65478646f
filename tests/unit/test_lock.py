"""requirements/*.txt (what the Dockerfile installs with --require-hashes) agree with pyproject.toml: every declared
dependency is locked at a version its specifier allows, everything is pinned and hashed, each image's lock is
exactly what its declared dependencies need, and this environment (`make install`) has the locked versions.

When one fails after a pyproject.toml change: `make lock` (docs/images.md)."""

from __future__ import annotations

import re
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from tests.harness.locks import LOCKS, Locked, declared, read_lock

LOCKED = {image: read_lock(path) for image, path in LOCKS.items()}
SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


def closure(wanted: list[Requirement]) -> set[NormalizedName]:
    """The distributions `wanted` needs here, their extras included, from the installed packages' metadata."""
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    todo = [(r, frozenset(r.extras)) for r in wanted if r.marker is None or r.marker.evaluate()]
    while todo:
        requirement, extras = todo.pop()
        key = (canonicalize_name(requirement.name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            raise AssertionError(f"{requirement.name} is not installed: run `make lock` and `make install`") from None
        for text in requires:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((needed, frozenset(needed.extras)))
    return {name for name, _ in seen}


@pytest.mark.parametrize("image", ["serve", "fetch", "build"])
def test_every_declared_dependency_is_locked_at_a_version_it_allows(image: str) -> None:
    lock = LOCKED[image]
    for requirement in declared()[image]:
        entry = lock.get(canonicalize_name(requirement.name))
        assert entry is not None, f"{requirement} is not in requirements/{image}.txt: run `make lock`"
        assert entry.pinned is not None
        assert requirement.specifier.contains(entry.pinned, prereleases=True), (
            f"requirements/{image}.txt locks {entry.name}=={entry.pinned}, outside {requirement}: run `make lock`"
        )


@pytest.mark.parametrize("image", ["serve", "fetch", "build"])
def test_every_locked_package_is_pinned_exactly_and_hashed(image: str) -> None:
    lock = LOCKED[image]
    assert lock
    unpinned = [str(e.requirement) for e in lock.values() if e.pinned is None]
    assert not unpinned, f"requirements/{image}.txt: not pinned with ==: {unpinned}"
    unhashed = [e.name for e in lock.values() if not e.hashes or not all(SHA256.match(h) for h in e.hashes)]
    assert not unhashed, f"requirements/{image}.txt: without sha256 hashes: {unhashed}"


def test_the_fetch_lock_is_the_serve_lock_restricted_to_what_fetch_needs() -> None:
    serve, fetch = LOCKED["serve"], LOCKED["fetch"]
    differing = {n: (e.pinned, serve[n].pinned if n in serve else None) for n, e in fetch.items()}
    assert {n: v for n, v in differing.items() if v[0] != v[1]} == {}
    assert all(set(e.hashes) <= set(serve[n].hashes) for n, e in fetch.items())
    # the point of the fetch image: neither a web server nor a Kubernetes client
    assert {"fastapi", "starlette", "uvicorn", "kubernetes", "pydantic", "pydantic-settings"} <= set(serve)
    assert not {"fastapi", "starlette", "uvicorn", "kubernetes", "pydantic", "pydantic-settings"} & set(fetch)


@pytest.mark.parametrize("image", ["serve", "fetch"])
def test_the_lock_holds_exactly_what_the_declared_dependencies_need(image: str) -> None:
    """Nothing missing (pip --require-hashes would refuse the build), nothing extra (the image would carry it)."""
    applying = {n for n, e in LOCKED[image].items() if e.applies()}
    assert closure(declared()[image]) == applying


def test_this_environment_has_the_locked_versions() -> None:
    """`make install` constrains the runtime dependencies with the serve lock: development runs what the image runs."""
    entries: list[Locked] = [e for e in LOCKED["serve"].values() if e.applies()]
    installed = {e.name: metadata.version(e.name) for e in entries}
    assert installed == {e.name: e.pinned for e in entries}, "run `make install`"
