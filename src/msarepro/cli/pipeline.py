"""The pipeline's commands (each a thin call that a DVC stage makes):

    msarepro sweep [--profile P] [--cores N] [-n]           sweep stage: prune stale runs, Snakemake the rest
    msarepro sweep --list                                   the grid's jobs (and skipped pairs)
    msarepro evaluate [RUN ...] [--sweep DIR --out DIR] [--paired A B --dataset D]
    msarepro tables [--metrics DIR --papers DIR --out DIR]
    msarepro figures [--sweep DIR --out DIR]                figures stage: the papers' figures from the sweep's runs
    msarepro check-regression [--update] [--strict] [--methods M ...]
    msarepro check-presets [--methods M ...] [--datasets D ...] [--steps N] [--report]
                                                            every method x real preset on synthetic data in the
                                                            real shapes; --report: reports/tables/compute.md|tex

The pretrain stage is `msarepro pretrain --stage` (cli/train.py); `sweep --pretrain NAME` is its deprecated
former spelling, kept for one release.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .common import load_params, with_params


def cmd_sweep(args) -> int:
    from .. import sweep

    if args.pretrain:
        return _deprecated_pretrain(args)
    if args.list:
        params = load_params(args)
        jobs = sweep.validate(params)
        _, skipped = sweep.grid(params)
        for j in jobs:
            print(f"{j.method} {j.dataset} {j.seed}  -> {j.run_dir()}")
        for m, d in skipped:
            print(f"skipped: {m} does not handle {d}'s family")
        print(f"{len(jobs)} jobs; pretrain for: {', '.join(sweep.pretrain_datasets(params)) or 'none'}")
        return 0
    return sweep.run(args.params, args.set, args.profile, args.cores, args.dry_run, args.snakemake_args)


def _deprecated_pretrain(args) -> int:
    from ..pretrain.stage import run_stage
    from ..sweep import PRETRAIN_ROOT

    out = args.out or str(PRETRAIN_ROOT / args.pretrain)
    print(f"msarepro: note: `sweep --pretrain` is deprecated and goes away in the next release; use "
          f"`msarepro pretrain --stage --dataset {args.pretrain} --out {out}`", file=sys.stderr)
    r = run_stage(load_params(args), args.pretrain, out, progress=not args.no_progress)
    for key, k in (r.get("keys") or {}).items():  # one pretraining per settings key (pretrain/<dataset>/<key>/)
        if k.get("status") == "pretrained":
            print(json.dumps({"dataset": r["dataset"], "key": key, "best_epoch": k.get("best_epoch"),
                              "best": k.get("best")}, default=str))
    return 0


def cmd_evaluate(args) -> int:
    from .. import evaluate

    for d in args.runs:
        r = evaluate.recompute(Path(d))
        print(f"{d}: " + ", ".join(f"{k}={v:.4f}" for k, v in r["test"].items()))
    if args.paired:
        if not args.dataset:
            raise KeyError("--paired A B needs --dataset D")
        runs = evaluate.find_runs(Path(args.sweep))
        a, b = args.paired
        for m in (a, b):
            if (m, args.dataset) not in runs:
                raise FileNotFoundError(f"{args.sweep}/{m}/{args.dataset}: no finished runs")
        fam = next(iter(runs[(a, args.dataset)].values()))["metric_family"]
        for k in evaluate.PAIRED_METRICS[fam]:
            r = evaluate.paired_test(runs[(a, args.dataset)], runs[(b, args.dataset)], k)
            print(f"{args.dataset} {k}: {a} - {b} = {r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] "
                  f"p={r['p_value']:.4f} (seeds {r['seeds']}, {r['n_samples']} test samples)")
    if args.out:
        params = load_params(args)
        ev = params.evaluate
        t = evaluate.write_evaluation(Path(args.sweep), Path(args.out), level=ev.ci_level,
                                      n_resamples=ev.bootstrap_resamples, seed=ev.bootstrap_seed)
        print(f"wrote {args.out}: {len(t['per_seed'])} per-seed values, {len(t['summary'])} summary rows, "
              f"{len(t['paired'])} paired tests")
    elif not args.runs and not args.paired:
        raise KeyError("give run directories, --out DIR (summarise --sweep), or --paired A B --dataset D")
    return 0


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cmd_tables(args) -> int:
    import torch

    from .. import __version__
    from ..report import write_reports

    params = load_params(args)
    prov = {"commit": _git("rev-parse", "HEAD"), "msarepro": __version__, "torch": torch.__version__,
            "params": args.params}
    paths = write_reports(Path(args.metrics), Path(args.papers), Path(args.out), list(params.sweep.methods), prov,
                          params_path=Path(args.params),  # variants: refusals and sensitivity figures
                          robustness_dir=Path(args.robustness) if args.robustness else None)
    print(f"wrote {len(paths)} files under {args.out}; tables: {Path(args.out) / 'tables'}")
    return 0


def cmd_figures(args) -> int:
    from ..report.figures_papers import draw_paper_figures
    paths = draw_paper_figures(args.sweep, args.out, args.params)
    print(f"wrote {len(paths)} files under {args.out}")
    return 0


def cmd_check_regression(args) -> int:
    from ..regression import check
    return check(args.params, args.expected, args.update, args.strict, args.methods, args.verbose)


def cmd_check_presets(args) -> int:
    from ..presetcheck import check_presets, machine
    from ..presetcheck.report import render_text, write_report

    results = check_presets(args.params, args.set, args.methods, args.datasets, args.steps, args.device,
                            args.threads, args.scale, isolate=not args.in_process, timeout=args.timeout,
                            workdir=args.workdir)
    print(render_text(results), flush=True)
    if args.report:
        settings = {"steps": args.steps, "threads": args.threads, "scale": args.scale}
        paths = write_report(results, machine(args.device), settings, args.out)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if any(not r["ok"] for r in results) else 0


def add_commands(sub) -> None:
    s = sub.add_parser("sweep", help="the sweep stage: (method x dataset x seed) jobs via Snakemake")
    s.add_argument("--profile", help="Snakemake profile (default: $MSAREPRO_PROFILE or profiles/local-cpu)")
    s.add_argument("--cores", type=int, help="override the profile's cores")
    s.add_argument("-n", "--dry-run", action="store_true", help="list what would run; change nothing")
    s.add_argument("--list", action="store_true", help="print the grid's jobs and exit")
    s.add_argument("--pretrain", metavar="DATASET",
                   help="deprecated: use `msarepro pretrain --stage --dataset DATASET --out pretrain/DATASET`")
    s.add_argument("--out", help="with --pretrain: output directory (default pretrain/DATASET)")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("snakemake_args", nargs="*", help="passed to snakemake after `--`")
    with_params(s)
    s.set_defaults(fn=cmd_sweep)

    e = sub.add_parser("evaluate", help="recompute a run's metrics, summarise a sweep across seeds and "
                       "protocols, or test two methods against each other")
    e.add_argument("runs", nargs="*", help="run directories to recompute from their saved predictions")
    e.add_argument("--sweep", default="runs/sweep", help="sweep root (default runs/sweep)")
    e.add_argument("--out", help="write the summaries here (the evaluate stage: reports/metrics)")
    e.add_argument("--paired", nargs=2, metavar=("A", "B"), help="paired bootstrap test of method A vs B")
    e.add_argument("--dataset", help="dataset of --paired")
    with_params(e)
    e.set_defaults(fn=cmd_evaluate)

    t = sub.add_parser("tables", help="the tables stage: reports/tables/*.md|.tex (ablations/ too), figures, "
                       "reports/README.md; reads params.yaml `variants:` and `methods:`")
    t.add_argument("--metrics", default="reports/metrics")
    t.add_argument("--papers", default="reports/paper_results")
    t.add_argument("--out", default="reports")
    t.add_argument("--robustness", default="", metavar="DIR", help="the robustness stage's CSVs (reports/robustness): "
                   "adds reports/tables/robustness/ and reports/figures/robustness/")
    with_params(t)
    t.set_defaults(fn=cmd_tables)

    f = sub.add_parser("figures", help="the figures stage: SFTTR's t-SNE, ALMT's attention maps, INFIG's word "
                       "attention from the sweep's runs")
    f.add_argument("--sweep", default="runs/sweep", help="sweep root (default runs/sweep)")
    f.add_argument("--out", default="reports/paper_figures", help="output folder, rebuilt whole")
    with_params(f)
    f.set_defaults(fn=cmd_figures)

    r = sub.add_parser("check-regression", help="smoke run vs committed expected metrics (CI)")
    r.add_argument("--expected", help="expected metrics JSON (default: params.yaml regression.expected)")
    r.add_argument("--update", action="store_true", help="rewrite the expected metrics from this smoke run")
    r.add_argument("--strict", action="store_true", help="also fail on improvements beyond tolerance")
    r.add_argument("--methods", nargs="+", help="only these methods (default: every registered one)")
    r.add_argument("-v", "--verbose", action="store_true", help="list every metric, not only the changed ones")
    with_params(r)
    r.set_defaults(fn=cmd_check_regression)

    c = sub.add_parser("check-presets", help="build and train every method with every real dataset's preset for a "
                       "few steps on synthetic data in that dataset's shapes; parameters, s/step, peak memory, "
                       "errors (exit 1 on any failure)")
    c.add_argument("--methods", nargs="+", help="methods or variants (default: every registered method)")
    c.add_argument("--datasets", nargs="+", help="real datasets (mosi, sims, ...; each checked on its synth-like "
                   "stand-in) or canonical dataset directories (default: every real dataset with a stand-in)")
    c.add_argument("--steps", type=int, default=3, help="optimisation steps per training stage (default 3)")
    c.add_argument("--device", help="cpu, cuda, cuda:1 (default: $MSAREPRO_DEVICE, else a GPU when there is one)")
    c.add_argument("--threads", type=int, default=1, help="torch threads per pair (default 1)")
    c.add_argument("--scale", type=float, help="size of the synthetic data relative to the real dataset (default: "
                   "a few batches of the largest batch size)")
    c.add_argument("--timeout", type=float, default=3600, help="seconds per pair before it fails (default 3600)")
    c.add_argument("--in-process", action="store_true", help="check the pairs in this process (faster to start; "
                   "the peak memory then includes what earlier pairs left allocated)")
    c.add_argument("--workdir", help="keep the generated data and model folders here (default: a temporary folder)")
    c.add_argument("--report", action="store_true", help="write reports/compute/<device>.json and the compute-cost "
                   "table reports/tables/compute.md|tex (not a DVC output)")
    c.add_argument("--out", default="reports", help="reports folder of --report (default reports)")
    with_params(c)
    c.set_defaults(fn=cmd_check_presets)
