"""data/ is a lower floor: no module in it imports features/, methods/ or anything above them, not even inside a
function (a static reading of every import statement with ast)."""
from __future__ import annotations

import ast
from pathlib import Path

import msarepro

PACKAGE = Path(msarepro.__file__).resolve().parent
ABOVE_DATA = ("features", "methods", "pretrain", "train", "sweep", "evaluate", "report", "regression", "prepare",
              "cli", "pipeline_cli")


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module `path` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # `from . import methods` names a module
    return names


def test_imported_modules_reads_relative_and_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .format import X\n\ndef g():\n    from ..features.media import y\n    from .. import methods\n")
    got = imported_modules(f, "msarepro.data")
    assert {"msarepro.data.format", "msarepro.features.media", "msarepro.methods"} <= got


def test_data_imports_nothing_above_it():
    upward = {}
    for path in sorted((PACKAGE / "data").rglob("*.py")):
        bad = sorted(m for m in imported_modules(path, "msarepro.data")
                     if any(m == f"msarepro.{a}" or m.startswith(f"msarepro.{a}.") for a in ABOVE_DATA))
        if bad:
            upward[path.relative_to(PACKAGE).as_posix()] = bad
    assert upward == {}, f"data/ imports upward: {upward}"
