"""The `robustness` DVC stage: the sweep's runs re-scored under perturbations, one long CSV per dataset.

    msarepro robustness --stage [--sweep runs/sweep] --out-dir reports/robustness

Which runs: the sweep's jobs (`sweep.grid`) of the methods, datasets and seeds of params.yaml's `robustness:`
(empty lists: the sweep's own), the ablation variants left out unless named in `robustness.methods`. Each
dataset's runs go through `evaluate.evaluate_runs` with the section's perturbations, rates and evaluation seed
into <out>/<dataset>.csv; beside it <out>/<dataset>.dataset.json keeps what the tables need of the dataset's
manifest (its metric family and the generator's reference scores, the oracle under each perturbation among them),
so that the `tables` stage reads no dataset. Files of datasets no longer in the grid are removed; with
`enabled: false` the folder holds only a note. Every file is written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError, Params
from ..io import write_json, write_text

NOTE = "README.md"
SWEEP_JOB_THREADS = 1  # the torch threads of a sweep job (workflow/rules/train.smk)


def stage_runs(params: Params, sweep_root: str | Path) -> dict[str, list[Path]]:
    """dataset -> the run directories the stage scores, in the grid's order. Raises ConfigError when a method,
    dataset or seed of `robustness:` is not in the sweep's grid, or a run has not been trained."""
    from ..sweep import grid

    cfg, sw = params.robustness, params.sweep
    jobs, _ = grid(params)
    methods = cfg.methods or sw.methods
    datasets = cfg.datasets or sw.datasets
    seeds = cfg.seeds or sw.seeds
    known = {(j.method, j.dataset, j.seed) for j in jobs}
    out: dict[str, list[Path]] = {}
    for d in datasets:
        for m in methods:
            for s in seeds:
                if (m, d, s) in known:
                    out.setdefault(d, []).append(Path(sweep_root) / m / d / str(s))
    missing_names = (sorted(set(methods) - {j.method for j in jobs}) + sorted(set(datasets) - {j.dataset for j in jobs})
                     + sorted(str(s) for s in set(seeds) - {j.seed for j in jobs}))
    if missing_names:
        raise ConfigError(f"robustness: {', '.join(missing_names)} not in the sweep's grid (sweep:, ablations:); "
                          "the stage scores the sweep's runs only")
    for dirs in out.values():
        for r in dirs:
            if not (r / "best.pt").exists():
                raise ConfigError(f"{r}: no best.pt; the robustness stage runs after the sweep (dvc repro runs it "
                                  "first; by hand: msarepro sweep)")
    return out


def dataset_record(run_dir: Path) -> dict:
    """What the tables need of a run's dataset manifest: name, metric family, reference scores."""
    conf = json.loads((run_dir / "config.json").read_text())
    from ..data import dataset_dir
    man = json.loads((dataset_dir(conf["dataset"], conf["data"]["root"]) / "manifest.json").read_text())
    return {"name": man["name"], "metric_family": man["metric_family"],
            "provenance": {"reference": (man.get("provenance") or {}).get("reference") or {}}}


def stage_workers() -> int:
    """How many runs the stage scores at once: one per usable CPU core on CPU (each run single-threaded, in its own
    process: the same scores as one process, in a fraction of the time), one on a GPU."""
    import os

    from ..runtime import pick_device

    if pick_device(None).type != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_stage(params: Params, sweep_root: str | Path, out_dir: str | Path, progress: bool = False) -> list[Path]:
    """Score every run of the grid under the section's perturbations -> the files written under out_dir."""
    from .evaluate import evaluate_runs

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = params.robustness
    # The sweep trains every run single-threaded (workflow/rules/train.smk, `threads: 1`), and on CPU a matmul's
    # reduction order depends on the thread count: scored with another count, TFN's clean test metrics differ from
    # its metrics.json in the last digits. One thread here reproduces them bit for bit at rate 0.
    runs = stage_runs(params, sweep_root) if cfg.enabled else {}
    written = []
    workers = stage_workers()
    for dataset, dirs in runs.items():
        csv = out_dir / f"{dataset}.csv"
        evaluate_runs(dirs, csv, items=list(cfg.perturbations) or None, rates=cfg.rates, seed=cfg.eval_seed,
                      progress=progress, workers=workers, threads=SWEEP_JOB_THREADS)
        info = out_dir / f"{dataset}.dataset.json"
        write_json(info, dataset_record(dirs[0]))
        written += [csv, info]
    note = out_dir / NOTE
    write_text(note, "# Robustness scores\n\nWritten by the `robustness` stage (`msarepro robustness --stage`): "
               + ("one long CSV per dataset (docs/robustness.md) and what the tables need of its manifest.\n"
                  if cfg.enabled else "disabled in params.yaml (`robustness.enabled: false`).\n"))
    written.append(note)
    for stale in sorted(set(out_dir.iterdir()) - set(written)):
        if stale.is_file():
            stale.unlink()
    return written
