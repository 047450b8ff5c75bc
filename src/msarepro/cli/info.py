"""`msarepro list`: the registered methods and datasets."""
from __future__ import annotations

import sys


def cmd_list(args) -> int:
    from ..data import DATASETS
    from ..methods import all_methods
    print("methods:")
    for name, cls in sorted(all_methods().items()):
        doc = (sys.modules[cls.__module__].__doc__ or name).strip().splitlines()[0]
        print(f"  {name:12s} {'/'.join(cls.families):20s} {doc}")
    print("datasets:")
    for name, info in sorted(DATASETS.items()):
        print(f"  {name:14s} {info.family:11s} {info.source:10s} {info.description}")
    return 0


def add_commands(sub) -> None:
    sub.add_parser("list", help="registered methods and datasets").set_defaults(fn=cmd_list)
