"""User documentation lives in the repository: nothing points at files a clone does not have, every registered
method has its page, and every docs/ page that the code, params, dvc.yaml or the README names exists."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from msarepro.methods import all_methods

ROOT = Path(__file__).resolve().parents[1]
# Built from pieces so that this file does not match itself.
OUTSIDE = re.compile("|".join([re.escape(".." + "/shared"), "METHOD" + "_NOTES", re.escape("shared/" + "DESIGN"),
                               "papers" + r"/[\w.-]+\.md"]))
DOC_REF = re.compile(r"docs/[\w./-]*\.md")
MD_LINK = re.compile(r"\]\(([^)#\s]+)")
SKIP_DIRS = {".git", ".dvc", ".venv", "venv", "data", "runs", "pretrain", "checks", "features", "node_modules"}


def repo_files() -> list[Path]:
    """Tracked files plus untracked, not ignored ones (a new file is checked before it is committed); without git,
    every file outside the generated and hidden folders."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=True).stdout.decode()
        return [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*") if p.is_file()
                and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts[:-1])]


def text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def test_nothing_points_outside_the_repository():
    bad = []
    for f in repo_files():
        rel = f.relative_to(ROOT)
        if rel.parts[0] == ".ci" or not f.is_file():
            continue
        for n, line in enumerate((text(f) or "").splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not bad, "references to files a clone does not have (point at docs/ instead):\n" + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_every_method_has_a_page(name):
    page = ROOT / "docs" / "methods" / f"{name}.md"
    assert page.is_file(), f"method {name!r} is registered but {page.relative_to(ROOT)} does not exist"
    source = f"methods/{all_methods()[name].__module__.rsplit('.', 1)[-1]}.py"
    assert source in page.read_text(encoding="utf-8"), f"{page.relative_to(ROOT)} does not name its code, {source}"


def referenced_doc_pages() -> dict[str, list[str]]:
    """docs/...md paths named in src/, params.yaml, dvc.yaml and README.md -> where."""
    sources = [*sorted((ROOT / "src").rglob("*.py")), ROOT / "params.yaml", ROOT / "dvc.yaml", ROOT / "README.md"]
    refs: dict[str, list[str]] = {}
    for f in sources:
        for n, line in enumerate((text(f) or "").splitlines(), 1):
            for ref in DOC_REF.findall(line):
                refs.setdefault(ref, []).append(f"{f.relative_to(ROOT)}:{n}")
    return refs


def test_referenced_doc_pages_exist():
    refs = referenced_doc_pages()
    # the code states its deviations from the papers by pointing at their pages
    assert any(r.startswith("docs/methods/") for r in refs), "no method docstring or params comment names its page"
    missing = {r: where for r, where in refs.items() if not (ROOT / r).is_file()}
    assert not missing, f"referenced docs pages that do not exist: {missing}"


def test_links_inside_docs_resolve():
    bad = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for target in MD_LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                bad.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not bad, "broken links: " + ", ".join(bad)
