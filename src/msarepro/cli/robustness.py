"""`msarepro robustness RUN_DIR... --out FILE.csv | --out-dir DIR`: finished runs' valid-selected checkpoints
scored on their test split under test-time perturbations (LNLN's random drop, modality removal, noise, shift;
image-text token drops, patch masks, removal), one long CSV or one per dataset (docs/robustness.md).
`msarepro robustness --stage [--sweep runs/sweep] --out-dir reports/robustness`: the DVC stage, the sweep's runs
with params.yaml's `robustness:` settings (robustness_eval/stage.py)."""
from __future__ import annotations


def cmd_robustness(args) -> int:
    from ..config import ConfigError
    from ..robustness_eval.evaluate import evaluate_runs, parse_rates

    if args.stage:
        from ..robustness_eval.stage import run_stage
        from .common import load_params
        if args.runs or not args.out_dir:
            raise ConfigError("robustness --stage scores the sweep's runs (--sweep) into --out-dir; give no RUN_DIR")
        written = run_stage(load_params(args), args.sweep, args.out_dir, progress=not args.no_progress)
        print(f"{args.out_dir}: {len(written)} files")
        return 0
    if not args.runs:
        raise ConfigError("robustness: give finished run directories (RUN_DIR...), or --stage")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: give 1 or more")
    table = evaluate_runs(args.runs, args.out, items=_split(args.perturbations), rates=parse_rates(args.rates),
                          modalities=_split(args.modalities), device=args.device, seed=args.eval_seed,
                          progress=not args.no_progress, out_dir=args.out_dir, workers=args.workers,
                          threads=args.threads)
    print(f"{args.out or args.out_dir}: {len(table)} rows ({table['run'].nunique()} runs)")
    return 0


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def add_commands(sub) -> None:
    sp = sub.add_parser("robustness", help="score runs' best checkpoints on the test split under perturbations "
                                           "(missing data, removed modalities, noise, misalignment)")
    sp.add_argument("runs", nargs="*", metavar="RUN_DIR", help="finished run directories (with best.pt)")
    where = sp.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="the long CSV to write (dataset,method,seed,run,perturbation,modalities,"
                                     "severity,metric,value)")
    where.add_argument("--out-dir", help="write one such CSV per dataset, OUT_DIR/<dataset>.csv (the layout the "
                                         "robustness tables read)")
    sp.add_argument("--rates", default="0:0.9:0.1",
                    help="missing rates of random_drop / token_drop / patch_mask: START:STOP:STEP or a comma list "
                         "(default 0:0.9:0.1, LNLN's)")
    sp.add_argument("--modalities", help="comma list narrowing what random_drop, noise and shift touch, and which "
                                         "removals run (default: all; text,audio,vision or text,image)")
    sp.add_argument("--perturbations", help="comma list of kinds (random_drop, remove, noise, shift, token_drop, "
                                            "patch_mask) or single ones (noise@10, remove@TA, shift@3); default: "
                                            "every kind of each run's dataset family")
    sp.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: as training; the run's own device type "
                                     "reproduces its metrics exactly)")
    sp.add_argument("--eval-seed", type=int, default=1111, help="seed of the drop masks and noise (default 1111, "
                                                                "LNLN's); the same for every run")
    sp.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's). On CPU, scores "
                    "equal to a run's metrics.json at rate 0 need the thread count it trained with: 1 for the "
                    "sweep's runs (its jobs are single-threaded)")
    sp.add_argument("--workers", type=int, default=1, help="runs scored at once, each in its own process (default 1; "
                    "the same scores whatever the count, each run is scored alone; the stage uses one per CPU core)")
    sp.add_argument("--no-progress", action="store_true")
    sp.add_argument("--stage", action="store_true", help="the robustness DVC stage: the sweep's runs of params.yaml's "
                    "`robustness:` grid, with its perturbations, rates and seed (the options above are not read), "
                    "into --out-dir: <dataset>.csv and <dataset>.dataset.json")
    sp.add_argument("--sweep", default="runs/sweep", help="with --stage: the sweep's runs (default runs/sweep)")
    from .common import with_params
    with_params(sp)
    sp.set_defaults(fn=cmd_robustness)
