"""dvc.yaml's code dependencies, derived from the package's import closure (codedeps.py), never kept by hand.

Every stage lists exactly the source files its work executes, between the marker comments
`# >>> code deps of STAGE` and `# <<< code deps` in dvc.yaml:
    download   the stage dispatch (prepare.py: generators, fetching, importers, the raw-media extractors)
    check      the canonical format's reader and the dataset registry
    train      the training loop and every registered method (`model` is a parameter, so any may run)
    sweep      the same, plus the grid and per-run staleness logic (sweep.py) that the stage runs first
    resolve    the single experiment's resolution (sweep.py's experiment_record, with every method's Config)
    pretrain   every module of the pretrain package (the stage's command and AE-MT's encoder pretraining)
               with everything they import (the encoders' blocks, the data loader, the config)
    evaluate   the evaluation (evaluate.py and the metrics); figures: the report package's figures
    tables     the report package and every registered method (their `paper_names` join the papers' rows)
The CLI (top floor: argument parsing only) is left out, so a new option does not invalidate results.

    python -m msarepro.dvcdeps            rewrite the marked blocks of ./dvc.yaml
    python -m msarepro.dvcdeps --check    exit 1, naming the stages, when dvc.yaml is out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import codedeps
from .sweep import TRAIN_MODULE, method_module

BEGIN = "# >>> code deps of "
END = "# <<< code deps"
_BLOCK = re.compile(rf"^(?P<indent>[ \t]*){re.escape(BEGIN)}(?P<stage>[\w-]+)[^\n]*\n(?P<body>.*?)^[ \t]*{re.escape(END)}[^\n]*\n",
                    re.M | re.S)


def stage_modules() -> dict[str, list[str]]:
    """Stage name -> the modules whose import closure is the stage's code."""
    from .methods import all_methods

    methods = sorted({method_module(m) for m in all_methods()})
    pretrain = sorted(m for m in codedeps.module_files() if m.startswith(f"{codedeps.PACKAGE}.pretrain"))
    pkg = codedeps.PACKAGE
    return {"download": [f"{pkg}.prepare"],
            "check": [f"{pkg}.data", f"{pkg}.data.registry", f"{pkg}.io"],
            "pretrain": pretrain,
            "train": [TRAIN_MODULE] + methods,
            "sweep": [f"{pkg}.sweep", TRAIN_MODULE] + methods,
            "resolve": [f"{pkg}.sweep"] + methods,
            "evaluate": [f"{pkg}.evaluate"],
            "robustness": [f"{pkg}.robustness_eval.stage", f"{pkg}.robustness_eval.evaluate"] + methods,
            "tables": [f"{pkg}.report"] + methods,
            "figures": [f"{pkg}.report.figures_papers"]}


def stage_code_deps(src_root: Path = Path("src")) -> dict[str, list[str]]:
    """Stage name -> sorted source paths (relative to the project root, `src/msarepro/...`)."""
    base = codedeps.PACKAGE_DIR.parent
    return {stage: sorted((src_root / p.relative_to(base)).as_posix() for p in codedeps.closure_files(mods))
            for stage, mods in stage_modules().items()}


def render(text: str, deps: dict[str, list[str]]) -> str:
    """dvc.yaml's text with every marked block replaced by its stage's deps. Raises ValueError naming a stage
    that has no block, or a block whose stage is unknown."""
    seen = set()

    def block(m: re.Match) -> str:
        stage, indent = m["stage"], m["indent"]
        if stage not in deps:
            raise ValueError(f"dvc.yaml: block '{BEGIN}{stage}' names no stage with derived code deps "
                             f"({', '.join(sorted(deps))})")
        seen.add(stage)
        lines = [f"{indent}{BEGIN}{stage} (generated: python -m msarepro.dvcdeps)\n"]
        lines += [f"{indent}- {p}\n" for p in deps[stage]]
        return "".join(lines) + f"{indent}{END}\n"

    out = _BLOCK.sub(block, text)
    missing = sorted(set(deps) - seen)
    if missing:
        raise ValueError(f"dvc.yaml: no '{BEGIN}STAGE' ... '{END}' block in the deps of {', '.join(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m msarepro.dvcdeps", description=__doc__.split("\n")[0])
    ap.add_argument("--dvc-yaml", default="dvc.yaml", type=Path)
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when the file is out of date")
    args = ap.parse_args(argv)
    if not args.dvc_yaml.exists():
        print(f"msarepro.dvcdeps: error: {args.dvc_yaml} not found; run from the project root", file=sys.stderr)
        return 2
    text = args.dvc_yaml.read_text()
    try:
        new = render(text, stage_code_deps())
    except ValueError as e:
        print(f"msarepro.dvcdeps: error: {e}", file=sys.stderr)
        return 2
    if new == text:
        print(f"{args.dvc_yaml}: code deps up to date")
        return 0
    if args.check:
        old, now = ({m["stage"]: m["body"] for m in _BLOCK.finditer(t)} for t in (text, new))
        stale = sorted(s for s in now if old.get(s) != now[s])
        print(f"{args.dvc_yaml}: code deps of {', '.join(stale)} differ from the import closure; "
              f"run: python -m msarepro.dvcdeps", file=sys.stderr)
        return 1
    from .io import write_text
    write_text(args.dvc_yaml, new)
    print(f"{args.dvc_yaml}: code deps rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
