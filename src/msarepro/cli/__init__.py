"""The `msarepro` command: the pipeline's steps by hand.

Each command group is one module of this package that adds its subcommands to the parser; every command is a
thin call into the package (no logic of its own here):
    info.py      list
    data.py      data synth | download | import-mmsa | import-imagetext | tokenize | extract | extract-images | check
    train.py     train, pretrain (and `pretrain --stage`, the pipeline's pretrain stage)
    pipeline.py  sweep, evaluate, tables, figures, check-regression, check-presets
    robustness.py  robustness (issue 18: checkpoints under test-time perturbations)
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import data, info, pipeline, robustness, train

    p = argparse.ArgumentParser(prog="msarepro", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for group in (info, data, train, pipeline, robustness):
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake ends in one line `msarepro: error: ...` and exit status 2."""
    from ..config import ConfigError
    from ..data import DatasetError
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, DatasetError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"msarepro: error: {msg}", file=sys.stderr)
        return 2
