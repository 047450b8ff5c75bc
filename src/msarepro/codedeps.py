"""The package's static import graph: which of msarepro's source files a piece of work executes.

Ground floor: standard library only, imports nothing from msarepro (it reads the package's files as text), so
every layer may use it. It answers "which code does X depend on" by asking the code, never a hand-kept list:
a run's and a pretraining's fingerprints (sweep.py), the code deps that dvc.yaml lists (dvcdeps.py) and the
layering test all use it.

What counts as an import of module A by module B (every statement anywhere in B's file, at module level or
inside a function, a method or an `if`, is read):
    import msarepro.x.y             msarepro.x.y (and, as Python does, the packages msarepro and msarepro.x)
    from . import x                 the package, and x when x is a submodule of it
    from ..a import b               msarepro.a, and msarepro.a.b when b is a submodule (else b is an attribute)
Importing a module also runs its parent packages' __init__.py: each module depends on its parent package.
Not imports: names built at run time (`importlib.import_module(f"...{name}")`, pkgutil discovery). The method
registry discovers method modules that way; that is deliberately not an edge, or every method's file would be
in every run's closure. A run's code is therefore closure(training loop) | closure(the method's own module).
Imports under `if TYPE_CHECKING:` count too (read, not run: the safe side).
Third-party imports are outside the graph (their versions are not source files of this package).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name


def module_files(root: Path | None = None) -> dict[str, Path]:
    """Module name -> source file, for every .py file of the package rooted at `root` (default: this one)."""
    root = Path(PACKAGE_DIR if root is None else root)
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if "__pycache__" in parts or any(not p.isidentifier() for p in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((root.name,) + parts)] = path
    return out


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(name: str, files: dict[str, Path]) -> set[str]:
    """The package modules that module `name`'s file imports, anywhere in the file."""
    path = files[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = name if _is_package(name, files) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_parents(alias.name) + [alias.name])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = here.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.update(_parents(base) + [base])
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    found.update(_parents(name))  # importing a module first runs its parent packages
    found.discard(name)
    return {m for m in found if m in files}


_CACHE: dict[tuple, dict[str, set[str]]] = {}


def import_graph(root: Path | None = None) -> dict[str, set[str]]:
    """Module name -> the package modules it imports directly (see the module docstring). Parsed again
    whenever a file of the package is added, removed or modified."""
    files = module_files(root)
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(files.values()))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = {name: _imports(name, files) for name in files}
    return {name: set(deps) for name, deps in _CACHE[key].items()}


def closure(modules, root: Path | None = None, graph: dict[str, set[str]] | None = None) -> set[str]:
    """The modules themselves and everything they import, transitively. Unknown names raise KeyError."""
    graph = import_graph(root) if graph is None else graph
    todo = list(modules)
    for m in todo:
        if m not in graph:
            raise KeyError(f"{m!r} is not a module of the package at {root or PACKAGE_DIR}")
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m] - seen)
    return seen


def closure_files(modules, root: Path | None = None, graph: dict[str, set[str]] | None = None) -> list[Path]:
    """The source files of closure(modules), sorted."""
    files = module_files(root)
    return sorted(files[m] for m in closure(modules, root, graph))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's import cycles between different modules (strongly connected components of two or more),
    ignoring the edge from a module to its own parent packages (Python runs those first; not a cycle)."""
    edges = {m: {d for d in ds if not m.startswith(d + ".")} for m, ds in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)
