"""The package's layering, read from its source (module-level and function-level imports, relative and absolute):
pretrain/ sits above methods/ and nothing it imports imports it back; the CLI's command modules do not import
each other; seeding, device choice and the progress bar have one home (runtime.py)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from msarepro import codedeps

GRAPH = codedeps.import_graph()  # module -> package modules it imports anywhere (also inside functions)
FLOORS = {  # lower floor -> what it must never reach, directly or through anything it imports
    "msarepro.config": ("methods", "train", "cli", "features", "pretrain", "data"),
    "msarepro.io": ("methods", "train", "cli", "features", "pretrain", "data"),
    "msarepro.metrics": ("methods", "train", "cli", "features", "pretrain", "data"),
    "msarepro.codedeps": ("methods", "train", "cli", "features", "pretrain", "data", "config"),
    "msarepro.runtime": ("methods", "train", "cli", "features", "pretrain", "data"),
    "msarepro.data": ("methods", "train", "cli", "features", "pretrain", "sweep", "evaluate", "report", "prepare",
                      "regression"),
    # the perturbations sit below the training loop, which uses them for training-time drops; scoring saved runs
    # under them (robustness_eval) sits above it
    "msarepro.robustness": ("methods", "train", "cli", "pretrain", "sweep", "evaluate", "report", "robustness_eval",
                            "presetcheck", "regression"),
    "msarepro.train": ("cli", "sweep", "report", "robustness_eval", "presetcheck", "regression"),
}


def _modules() -> dict[str, Path]:
    return codedeps.module_files()


def imports(module: str) -> set[str]:
    """What `module`'s own statements import (the parent packages that Python runs first are left out)."""
    parts = module.split(".")
    return GRAPH[module] - {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def closure(module: str) -> set[str]:
    return codedeps.closure([module], graph=GRAPH)


def external_imports(module: str) -> set[str]:
    path = _modules()[module]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.add((node.module or "").split(".")[0])
    return out


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += imports(m)
    return seen


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_import_reader_sees_function_level_and_relative_imports():
    assert "msarepro.methods" in imports("msarepro.sweep")  # `from .methods import ...` inside functions
    assert "msarepro.io" in imports("msarepro.train")


def test_the_package_has_no_import_cycles():
    assert codedeps.cycles(GRAPH) == []


@pytest.mark.parametrize("floor", sorted(FLOORS))
def test_lower_floors_reach_nothing_above_them(floor):
    """config, io, metrics, runtime, codedeps and every module of data/ import nothing from the floors above,
    not even through a module they import (the whole closure is checked)."""
    above = [f"msarepro.{a}" for a in FLOORS[floor]]
    for m in (x for x in GRAPH if _under(x, floor)):
        reached = sorted(x for x in closure(m) if any(_under(x, a) for a in above))
        assert not reached, f"{m} reaches {reached}"


def test_methods_never_import_pretrain():
    for m in _modules():
        if _under(m, "msarepro.methods"):
            assert not any(_under(i, "msarepro.pretrain") for i in imports(m)), m


def test_nothing_pretrain_imports_imports_pretrain_back():
    for m in _modules():
        if not _under(m, "msarepro.pretrain"):
            continue
        for dep in imports(m):
            if _under(dep, "msarepro.pretrain"):
                continue
            back = [x for x in closure(dep) if _under(x, "msarepro.pretrain")]
            assert not back, f"{m} imports {dep}, which imports {back} back"


def test_pretrain_does_not_borrow_the_training_loop():
    for m in _modules():
        if _under(m, "msarepro.pretrain"):
            assert "msarepro.train" not in imports(m), m


def test_cli_is_one_package_and_its_command_modules_do_not_import_each_other():
    cli = {m for m in _modules() if _under(m, "msarepro.cli")}
    assert "msarepro.pipeline_cli" not in _modules() and "msarepro.cli" in cli
    shared = {"msarepro.cli", "msarepro.cli.common", "msarepro.cli.__main__"}
    for m in cli - shared:
        assert not (imports(m) & (cli - {"msarepro.cli.common"})), m
    assert imports("msarepro.cli.common") & cli == set()
    for m in set(_modules()) - cli:  # the CLI is the top floor: nothing below imports it
        assert not (imports(m) & cli), m


@pytest.mark.parametrize("module", ["msarepro.cli.data", "msarepro.cli.train", "msarepro.cli.pipeline"])
def test_cli_modules_hold_no_business_logic(module):
    """Every function of a command module is a command, the parser assembly, or a few-line wrapper."""
    tree = ast.parse(_modules()[module].read_text())
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        if fn.name.startswith("cmd_") or fn.name == "add_commands":
            continue
        assert fn.end_lineno - fn.lineno < 15, f"{module}.{fn.name} is {fn.end_lineno - fn.lineno} lines"


def test_seeding_device_and_progress_bar_have_one_home():
    for m, path in _modules().items():
        if m == "msarepro.runtime":
            continue
        assert "tqdm" not in external_imports(m), f"{m} builds its own progress bar; use runtime.progress"
        defined = {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}
        assert not defined & {"seed_everything", "pick_device", "_progress", "progress", "_rng_state"}, m
