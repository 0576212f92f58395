"""The design lives in the repo: docs/design.md cites tests that exist, and code cites sections that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = ("docs/design.md", "docs/architecture.md", "CONTRIBUTING.md")
CITING = ("bayesian_hf", "tests", "benchmarks", "scripts", "docs", "README.md", "CONTRIBUTING.md")
TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
SECTION_REF = re.compile(r"docs/design\.md\s*§\s*(\d+(?:\.\d+)?)")


def _design_sections() -> set[str]:
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, flags=re.MULTILINE))


def _citing_files() -> list[Path]:
    files: list[Path] = []
    for name in CITING:
        path = REPO / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in path.rglob("*") if p.suffix in (".py", ".md") and p.is_file())
    return files


def test_every_cited_test_exists():
    missing = []
    for doc in DOCS:
        for file, name in set(TEST_REF.findall((REPO / doc).read_text(encoding="utf-8"))):
            path = REPO / file
            if not path.is_file() or not re.search(rf"^\s*(async )?def {name}\(", path.read_text(encoding="utf-8"), re.MULTILINE):
                missing.append(f"{doc}: {file}::{name}")
    assert not missing, "docs cite tests that do not exist (renamed or moved?):\n" + "\n".join(sorted(missing))


def test_every_design_citation_names_an_existing_section():
    sections = _design_sections()
    assert {str(n) for n in range(1, 16)} <= sections, sorted(sections)
    bad = []
    for path in _citing_files():
        for section in SECTION_REF.findall(path.read_text(encoding="utf-8", errors="replace")):
            if section not in sections:
                bad.append(f"{path.relative_to(REPO)}: docs/design.md §{section}")
    assert not bad, "citations of sections docs/design.md does not have:\n" + "\n".join(sorted(bad))


def test_nothing_cites_a_design_outside_the_repository():
    outside = re.compile(r"DESIGN(\.md| *§| +\d)")
    bad = [f"{path.relative_to(REPO)}:{i}" for path in _citing_files()
           for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
           if outside.search(line)]
    assert not bad, "cite docs/design.md §N instead of the design spec outside the repository:\n" + "\n".join(bad)
