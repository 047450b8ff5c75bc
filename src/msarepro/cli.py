"""The `msarepro` command: the pipeline's steps by hand."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _params(args):
    from . import config
    return config.load(args.params, args.set or [])


def cmd_list(args) -> int:
    from .data import DATASETS
    from .methods import all_methods
    print("methods:")
    for name, cls in sorted(all_methods().items()):
        doc = (sys.modules[cls.__module__].__doc__ or name).strip().splitlines()[0]
        print(f"  {name:12s} {'/'.join(cls.families):20s} {doc}")
    print("datasets:")
    for name, info in sorted(DATASETS.items()):
        print(f"  {name:14s} {info.family:11s} {info.source:10s} {info.description}")
    return 0


def cmd_data_synth(args) -> int:
    from .data.synth import generate
    m = generate(args.name, args.out, seed=args.seed, scale=args.scale)
    print(f"wrote {args.out}: {m.splits}")
    ref = m.provenance.get("reference", {})
    for k, v in ref.items():
        print(f"  reference {k}: " + ", ".join(f"{mk}={mv:.3f}" for mk, mv in v.items()))
    return 0


def cmd_train(args) -> int:
    from .train import RunSpec, run
    params = _params(args)
    spec = RunSpec(model=args.model or params.model, dataset=args.dataset or params.dataset,
                   seed=params.seed if args.seed is None else args.seed, out=Path(args.out),
                   resume=args.resume, device=args.device, progress=not args.no_progress)
    result = run(params, spec)
    print(json.dumps({"best_epoch": result["best_epoch"], "test": result["test"]}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import recompute
    for d in args.runs:
        r = recompute(Path(d))
        print(f"{d}: " + ", ".join(f"{k}={v:.4f}" for k, v in r["test"].items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .data.synth import GENERATORS
    from .methods import all_methods

    p = argparse.ArgumentParser(prog="msarepro", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_params(sp):
        sp.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        sp.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                        help="override a params.yaml value, DVC-style (e.g. -S methods.mult.lr=1e-3)")

    sub.add_parser("list", help="registered methods and datasets").set_defaults(fn=cmd_list)

    data = sub.add_parser("data", help="dataset commands").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("synth", help="generate an embedded synthetic dataset")
    s.add_argument("name", choices=sorted(GENERATORS))
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=float, default=1.0, help="multiply every split size")
    s.set_defaults(fn=cmd_data_synth)

    t = sub.add_parser("train", help="train one (method, dataset, seed) run")
    t.add_argument("--model", choices=sorted(all_methods()), help="default: params.yaml `model`")
    t.add_argument("--dataset", help=f"registered name ({', '.join(sorted(DATASETS))}) or a dataset directory")
    t.add_argument("--seed", type=int)
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ... (or MSAREPRO_DEVICE)")
    t.add_argument("--no-progress", action="store_true")
    with_params(t)
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="recompute metrics from saved predictions")
    e.add_argument("runs", nargs="+")
    e.set_defaults(fn=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .data import DatasetError
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, DatasetError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"msarepro: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
