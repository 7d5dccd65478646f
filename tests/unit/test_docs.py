"""The README and docs/: the README opens with the two commands, every relative link (file and anchor) resolves, and
every repository path the README names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import ROOT

DOCS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
TWO_COMMANDS = """```sh
make run    # install into .venv, then serve https://127.0.0.1:8443 on examples/cluster.yaml (no cluster needed)
make test   # install into .venv, then run lint, type checks and every test tier
```
"""
_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose(path: Path) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a shell block is no heading)."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`, repeats numbered."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose(path):
        if match := _HEADING.match(line):
            slug = re.sub(r"[^\w\- ]", "", match.group(2).lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            result.add(slug if n == 0 else f"{slug}-{n}")
    return result


def links(path: Path) -> list[str]:
    return [
        target
        for line in prose(path)
        for target in _LINK.findall(line)
        if not re.match(r"^[a-z]+:", target)  # http:, https:, mailto:
    ]


def test_readme_opens_with_the_two_commands() -> None:
    assert (ROOT / "README.md").read_text().startswith(TWO_COMMANDS)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in links(doc):
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        if not path.exists():
            broken.append(f"{target}: no file {relative}")
            continue
        if anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {relative}")
    assert not broken, "\n".join(broken)


def test_anchor_rule_matches_githubs() -> None:
    """The slug rule the link check relies on, on headings this repository uses."""
    readme = anchors(ROOT / "README.md")
    for slug in (
        "policy-who-may-read-what",
        "the-validating-webhook-validate",
        "live-verification-opt-in",
        "government-china-and-custom-clouds",
        "audit-first-rollout",
    ):
        assert slug in readme
    # `# everything at once ...` opens a shell block in the README: code is no heading.
    assert not [a for a in readme if a.startswith("everything-at-once")]


# A path into this repository as the docs write it in backticks or commands: manifests/base, charts/kvinject, ...
_TOP = "manifests|charts|docs|examples|tests|webhook|bench|requirements"
_REPO_PATH = re.compile(rf"(?<![\w.<-])((?:{_TOP})/[\w.\-/]*[\w\-])")


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_repository_path_named_exists(doc: Path) -> None:
    """Install commands (`kubectl apply -k manifests/overlays/...`, `helm install ... charts/kvinject`) and the files
    the docs point at are only as good as the paths in them (written from the repository's root)."""
    named = sorted(set(_REPO_PATH.findall(doc.read_text())))
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, missing


def test_the_readme_names_the_install_paths() -> None:
    named = set(_REPO_PATH.findall((ROOT / "README.md").read_text()))
    assert {"manifests/base", "charts/kvinject", "manifests/overlays/enforce-all"} <= named
