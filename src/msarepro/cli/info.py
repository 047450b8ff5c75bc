"""`msarepro list`: the registered methods and datasets, and the variants of params.yaml with the paper rows they
reproduce."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import with_params


def _settings_text(v) -> str:
    parts = [f"{k}={val!r}" if isinstance(val, str) else f"{k}={val}" for k, val in v.settings.items()]
    parts += [f"pretrain.{k}={val}" for k, val in v.pretrain.items()]
    return ", ".join(parts) or "(the method's own settings)"


def cmd_list(args) -> int:
    from ..config import ConfigError
    from ..data import DATASETS
    from ..methods import all_methods, load_params
    print("methods:")
    for name, cls in sorted(all_methods().items()):
        doc = (sys.modules[cls.__module__].__doc__ or name).strip().splitlines()[0]
        print(f"  {name:12s} {'/'.join(cls.families):20s} {doc}")
    print("datasets:")
    for name, info in sorted(DATASETS.items()):
        print(f"  {name:14s} {info.family:11s} {info.source:10s} {info.description}")
    if not Path(args.params).exists():
        print(f"variants: none ({args.params} not found; run from the project root or pass --params)")
        return 0
    try:
        params = load_params(args.params, args.set or [])
    except ConfigError as e:
        print(f"variants: {args.params} is not valid ({e})")
        return 1
    print(f"variants ({args.params}; run one with `msarepro train --model NAME` or `dvc exp run -S model=NAME`):")
    for name, v in sorted(params.variants.items()):
        rows = "; ".join(f"{p} {t}: {r}" for p, t, r in v.row_refs()) or "no paper row"
        print(f"  {name:26s} {v.method:8s} {rows}")
        print(f"  {'':26s} {'':8s} {'REFUSED: ' + v.refused if v.refused else _settings_text(v)}")
    if params.ablations.variants:
        ab = params.ablations
        print(f"ablation grid: {len(ab.variants)} variants x {', '.join(ab.datasets)} x seeds "
              f"{', '.join(map(str, ab.seeds))}")
    return 0


def add_commands(sub) -> None:
    sp = sub.add_parser("list", help="registered methods and datasets, and params.yaml's variants with their paper rows")
    with_params(sp)
    sp.set_defaults(fn=cmd_list)
