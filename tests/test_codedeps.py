"""The static import graph (codedeps.py): every import form, imports inside functions, dynamic discovery left
out, and the real package's closures that run fingerprints and dvc.yaml rely on."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from msarepro import codedeps


def _package(tmp_path: Path) -> Path:
    """A small package `pkg` that uses each import form once."""
    files = {
        "__init__.py": "",
        "top.py": "import os\nfrom .a import helper\n",  # helper: a function of a/__init__, not a module
        "a/__init__.py": "from .b import thing\ndef helper():\n    return thing\n",
        "a/b.py": "thing = 1\n",
        "a/c.py": "def late():\n    from ..d import e  # function-level: e is a submodule\n    return e\n",
        "d/__init__.py": "",
        "d/e.py": "import pkg.f\n",
        "f.py": "",
        "g.py": "from . import f, top\n",
        "reg.py": "import importlib\nfor n in ('f',):\n    importlib.import_module(f'pkg.{n}')\n",
        "lone.py": "class C:\n    def m(self):\n        from .a.c import late\n",
    }
    root = tmp_path / "pkg"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_every_import_form_and_function_level_imports(tmp_path):
    root = _package(tmp_path)
    g = codedeps.import_graph(root)
    assert g["pkg.top"] == {"pkg", "pkg.a"}  # `helper` is an attribute of pkg.a, not a module
    assert g["pkg.a"] == {"pkg", "pkg.a.b"}
    assert g["pkg.a.c"] == {"pkg", "pkg.a", "pkg.d", "pkg.d.e"}  # inside a function; ..d resolved
    assert g["pkg.d.e"] == {"pkg", "pkg.d", "pkg.f"}  # absolute `import pkg.f`
    assert g["pkg.g"] == {"pkg", "pkg.f", "pkg.top"}  # `from . import f, top`: submodules
    assert g["pkg.reg"] == {"pkg"}  # a name built at run time is not an import
    assert codedeps.closure(["pkg.lone"], root) == {"pkg", "pkg.lone", "pkg.a", "pkg.a.b", "pkg.a.c", "pkg.d",
                                                    "pkg.d.e", "pkg.f"}
    files = codedeps.closure_files(["pkg.d.e"], root)
    assert files == sorted(files) and [p.relative_to(root).as_posix() for p in files] == [
        "__init__.py", "d/__init__.py", "d/e.py", "f.py"]
    with pytest.raises(KeyError, match="pkg.nope"):
        codedeps.closure(["pkg.nope"], root)


def test_cycles_are_found_and_parent_packages_are_not_cycles(tmp_path):
    root = _package(tmp_path)
    assert codedeps.cycles(codedeps.import_graph(root)) == []  # pkg.a -> pkg.a.b -> (parent) pkg.a is no cycle
    (root / "f.py").write_text("from .g import x\n")  # g -> f -> g
    assert codedeps.cycles(codedeps.import_graph(root)) == [["pkg.f", "pkg.g"]]


def test_codedeps_is_ground_floor():
    """Standard library only, nothing from msarepro: every layer can use it."""
    tree = ast.parse(Path(codedeps.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert imported <= {"__future__", "ast", "pathlib"}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))


def test_package_closures():
    """AE-MT's module reaches MulT's and the shared blocks; pretraining reaches the encoder blocks, the loader and
    the config; the registry's discovery does not pull every method into every closure."""
    aemt = codedeps.closure(["msarepro.methods.aemt"])
    assert {"msarepro.methods.mult", "msarepro.methods.blocks", "msarepro.methods"} <= aemt
    pre = codedeps.closure(["msarepro.pretrain.run"])
    assert {"msarepro.methods.blocks", "msarepro.config", "msarepro.data.loader", "msarepro.io"} <= pre
    text_only = codedeps.closure(["msarepro.methods.text_only"])
    assert "msarepro.methods.mult" not in text_only and "msarepro.methods.aemt" not in text_only
