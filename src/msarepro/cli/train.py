"""`msarepro train` (one run), `msarepro resolve` (the train stage's resolved experiment) and `msarepro pretrain`
(AE-MT's encoders; `--stage`: the pipeline's pretrain stage)."""
from __future__ import annotations

import json
from pathlib import Path

from .common import load_params, with_params


def cmd_train(args) -> int:
    from ..train import RunSpec, run
    params = load_params(args)
    spec = RunSpec(model=args.model or params.model, dataset=args.dataset or params.dataset,
                   seed=params.seed if args.seed is None else args.seed, out=Path(args.out),
                   resume=args.resume, device=args.device, progress=not args.no_progress, preset=args.preset)
    if args.reuse_from and args.preset:
        from ..config import ConfigError
        raise ConfigError("train: --reuse-from copies the sweep's run, which used the dataset's own preset; drop "
                          "--preset, or --reuse-from to train with another preset")
    if args.reuse_from:  # the same run already trained by the sweep: copy it (the train stage after the sweep)
        from ..runtime import pick_device
        from ..sweep import Job, copy_run, reusable_run
        src = reusable_run(params, Job(spec.model, spec.dataset, spec.seed), pick_device(spec.device).type,
                           Path(args.reuse_from))
        if src is not None:
            copy_run(src, spec.out)
            print(f"{spec.out}: the same run as {src} (same fingerprint and device type); copied, not retrained")
            result = json.loads((spec.out / "metrics.json").read_text())
            print(json.dumps({"best_epoch": result["best_epoch"], "test": result["test"]}, indent=2))
            return 0
    result = run(params, spec)
    print(json.dumps({"best_epoch": result["best_epoch"], "test": result["test"]}, indent=2))
    return 0


def cmd_resolve(args) -> int:
    """The `resolve` DVC stage: the single experiment (model, dataset, seed) resolved to what it runs."""
    from ..io import write_json
    from ..sweep import experiment_record
    record = experiment_record(load_params(args))
    write_json(Path(args.out), record)
    print(f"{args.out}: {record['method']} ({record.get('variant_of', 'a method')}) on {record['dataset']}, "
          f"seed {record['seed']}")
    return 0


def cmd_pretrain(args) -> int:
    params = load_params(args)
    dataset = args.dataset or params.dataset
    if args.stage:
        from ..config import ConfigError
        if args.seed is not None:
            raise ConfigError("pretrain --stage: --seed does not apply; the stage pretrains with params.yaml's "
                              "pipeline.pretrain_seed (set that, or drop --stage)")
        if args.preset is not None:
            raise ConfigError("pretrain --stage: --preset does not apply; the stage pretrains with each dataset's own "
                              "preset (drop --stage to pretrain with another)")
        if args.model is not None:
            raise ConfigError("pretrain --stage: --model does not apply; the stage pretrains for every run of the "
                              "grid and the train stage that needs it, once per pretraining key (drop --stage to "
                              "pretrain for one name)")
        return pretrain_stage(params, dataset, args.out, device=args.device, progress=not args.no_progress)
    from ..pretrain.run import run_pretraining
    if args.preset:
        from ..train import known_presets
        from ..config import ConfigError
        if args.preset not in known_presets(params):
            raise ConfigError(f"pretrain --preset {args.preset!r}: params.yaml has no such preset; known: "
                              f"{', '.join(sorted(known_presets(params)))}")
    r = run_pretraining(params, dataset, params.seed if args.seed is None else args.seed, args.out,
                        device=args.device, progress=not args.no_progress, name=args.model or "aemt",
                        preset=args.preset)
    print(json.dumps({k: r[k] for k in ("dataset", "key", "pool", "best_epoch", "tamper_chance", "initial", "best")},
                     indent=2))
    return 0


def pretrain_stage(params, dataset: str, out, device: str | None = None, progress: bool = True) -> int:
    """The pipeline's pretrain stage for one dataset (pretrain/stage.py); prints what it did per key."""
    from ..pretrain.stage import run_stage
    r = run_stage(params, dataset, out, device=device, progress=progress)
    for key, k in r.get("keys", {}).items():
        if k["status"] == "pretrained":
            print(json.dumps({"dataset": dataset, "key": key, **{n: k.get(n) for n in ("runs", "best_epoch", "best")}},
                             default=str))
    return 0


def add_commands(sub) -> None:
    from ..data import DATASETS
    from ..methods import all_methods

    t = sub.add_parser("train", help="train one (method, dataset, seed) run")
    t.add_argument("--model", help=f"a registered method ({', '.join(sorted(all_methods()))}) or a variant of "
                   "params.yaml `variants:` (`msarepro list` shows them); default: params.yaml `model`")
    t.add_argument("--dataset", help=f"registered name ({', '.join(sorted(DATASETS))}) or a dataset directory")
    t.add_argument("--seed", type=int)
    t.add_argument("--preset", help="resolve methods.<m>.presets (and pretrain.presets) for this params.yaml preset "
                   "instead of the dataset manifest's `preset` (e.g. the embedded synth-mosi preset on synth-like-mosi, "
                   "a dataset in MOSI's real shapes); config.json records it under `preset`")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ... (or MSAREPRO_DEVICE)")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--reuse-from", metavar="SWEEP_DIR", help="copy the run from SWEEP_DIR/<model>/<dataset>/<seed> "
                   "instead of training, when it is exactly this run (same fingerprint, same device type); the train "
                   "stage passes runs/sweep")
    with_params(t)
    t.set_defaults(fn=cmd_train)

    r = sub.add_parser("resolve", help="write the train stage's experiment (model, dataset, seed) resolved: its "
                       "method, a variant's settings applied, the dataset preset (the `resolve` DVC stage)")
    r.add_argument("--out", required=True, help="JSON file to write")
    with_params(r)
    r.set_defaults(fn=cmd_resolve)

    pt = sub.add_parser("pretrain", help="AE-MT autoencoder pretraining on a dataset's unlabeled pool")
    pt.add_argument("--dataset", help="registered name or a dataset directory (default: params.yaml `dataset`)")
    pt.add_argument("--model", help="the run name to pretrain for: aemt (default) or one of its variants of "
                    "params.yaml `variants:` (its `pretrain:` and encoder settings apply); not with --stage")
    pt.add_argument("--seed", type=int, help="default: params.yaml `seed` (not with --stage: the stage uses pipeline.pretrain_seed)")
    pt.add_argument("--preset", help="resolve pretrain.presets and methods.<m>.presets for this params.yaml preset "
                    "instead of the dataset manifest's (as `train --preset`; not with --stage)")
    pt.add_argument("--out", required=True, help="output directory (encoders.pt, history.csv, metrics.json)")
    pt.add_argument("--stage", action="store_true",
                    help="the pipeline's pretrain stage: pretrain only if an AE-MT run (or variant) of the sweep, "
                    "the ablations or the train stage needs DATASET (else write OUT/skipped.json), into OUT/<key>/ "
                    "once per distinct pretraining key (runs with the same pretraining settings share it), keeping "
                    "encoders whose fingerprint (settings, data, pipeline.pretrain_seed, code) is unchanged")
    pt.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ... (or MSAREPRO_DEVICE)")
    pt.add_argument("--no-progress", action="store_true")
    with_params(pt)
    pt.set_defaults(fn=cmd_pretrain)
