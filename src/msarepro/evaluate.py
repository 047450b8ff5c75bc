"""Run outputs -> metrics and per-(method, dataset) summaries across seeds, under labelled selection protocols.

`recompute` re-derives one run's metrics from its saved predictions. `evaluate_sweep` summarises a sweep:

Protocols (column `protocol`; docs/metrics.md explains why published numbers differ):
    valid-selected   the honest one and the default: the checkpoint chosen on VALID, TEST scored once
                     (each run's metrics.json); mean, std and a 95% bootstrap CI over seeds.
    best-test-epoch  ALMT's code: per metric, the best TEST value over all epochs (from the saved per-epoch
                     outputs epochs/epoch_NNN.npz); different metrics may come from different epochs. Optimistic.
    best-seed        CLGSI's paper: per metric, the best seed's valid-selected TEST value. Optimistic.
Statistics: `std` is the sample standard deviation (ddof=1; 0 for one seed); the CI is a percentile bootstrap
of the mean over seeds (with 3 seeds it is coarse: it can only take the values of means of resampled seeds).

`paired_test` compares two methods on the same seeds and the same test samples: a paired bootstrap over test
samples of the seed-averaged per-sample score difference, for the metrics that are means of per-sample scores
(accuracies, MAE). Its p-value is two-sided, from the bootstrap distribution re-centred on zero.

Runs are named by the name they ran under: a registered method, or a variant of one (params.yaml `variants:`,
e.g. `almt-wo-ahl`), whose config.json records `"variant": {"name", "method", ...}`. A run's `base_method` is
that variant's method, else its own name. paired.csv holds every pair of methods (runs whose base_method is their
own name) per dataset, plus every variant against its full model (A = variant, B = method) on each dataset both
ran; never variant against variant (about 40 variants would make thousands of bootstraps nobody reads).
"""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics

PROTOCOLS = ("valid-selected", "best-test-epoch", "best-seed")
# Metrics that are means of per-sample scores, per metric family (the paired test covers these).
PAIRED_METRICS = {"mosi": ["Has0_acc_2", "Non0_acc_2", "Mult_acc_7", "MAE"],
                  "sims": ["Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "MAE"],
                  "cls": ["Accuracy"]}


def recompute(run_dir: Path) -> dict:
    """Metrics of `run_dir/predictions.csv`, per split, with the family recorded in metrics.json."""
    meta = json.loads((run_dir / "metrics.json").read_text())
    pred = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})
    out = {}
    for split, df in pred.groupby("split"):
        out[split] = metrics.compute(meta["metric_family"], df["y_pred"].to_numpy(np.float64)
                                     if meta["metric_family"] != "cls" else df["y_pred"].to_numpy(),
                                     df["y_true"].to_numpy(), meta.get("f1_average", "weighted"))
    return out


# ---------------------------------------------------------------------------------------------- one run
def load_run(run_dir: Path) -> dict:
    """metrics.json plus the TEST ids and truths (in the order of the per-epoch outputs)."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "metrics.json").read_text())
    pred = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})
    test = pred[pred["split"] == "test"]
    meta["dir"] = run_dir
    meta["test_ids"] = test["id"].to_numpy()
    meta["test_true"] = test["y_true"].to_numpy()
    meta["test_pred"] = test["y_pred"].to_numpy()
    return meta


def epoch_outputs(run: dict) -> list[np.ndarray]:
    """TEST outputs of every epoch, in epoch order."""
    files = sorted(Path(run["dir"], "epochs").glob("epoch_*.npz"))
    outs = []
    for f in files:
        with np.load(f) as z:
            outs.append(z["test"])
    return outs


def _to_pred(run: dict, output: np.ndarray) -> np.ndarray:
    return output.argmax(-1) if run["metric_family"] == "cls" else output


def best_test_epoch(run: dict) -> dict[str, float]:
    """Per metric, the best TEST value over all epochs (ALMT's code). Recomputed from the saved outputs."""
    best: dict[str, float] = {}
    for out in epoch_outputs(run):
        m = metrics.compute(run["metric_family"], _to_pred(run, out), run["test_true"], run.get("f1_average", "weighted"))
        for k, v in m.items():
            if k not in best or metrics.better(k, v, best[k]):
                best[k] = v
    return best


# ------------------------------------------------------------------------------------------ statistics
def bootstrap_ci(values, level: float = 0.95, n_resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (resampling the values with replacement)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_resamples, len(v)))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def summarise(values, level: float = 0.95, n_resamples: int = 10000, seed: int = 0) -> dict:
    v = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_ci(v, level, n_resamples, seed)
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "ci_low": lo, "ci_high": hi}


# --------------------------------------------------------------------------------------- per-sample scores
def per_sample_scores(family: str, metric: str, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (score per sample, weight per sample) such that sum(w*s)/sum(w) equals `metrics.compute`'s value.
    Weights are 0 for samples a metric leaves out (Non0_acc_2: truth exactly 0)."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    w = np.ones(len(true))
    if family == "cls":
        if metric != "Accuracy":
            raise ValueError(f"{metric}: no per-sample score")
        return (pred == true).astype(np.float64), w
    if family == "sims":
        pred, true = np.clip(pred, -1, 1), np.clip(true, -1, 1)
        if metric == "MAE":
            return np.abs(pred - true), w
        k = int(metric.rsplit("_", 1)[1])
        edges = metrics.SIMS_EDGES[k]
        return (metrics._bins(pred, edges) == metrics._bins(true, edges)).astype(np.float64), w
    if metric == "MAE":
        return np.abs(pred - true), w
    if metric == "Has0_acc_2":
        return ((pred >= 0) == (true >= 0)).astype(np.float64), w
    if metric == "Non0_acc_2":
        return ((pred > 0) == (true > 0)).astype(np.float64), (true != 0).astype(np.float64)
    if metric.startswith("Mult_acc_"):
        bound = {"3": 1.0, "5": 2.0, "7": 3.0}[metric.rsplit("_", 1)[1]]
        return (np.round(np.clip(pred, -bound, bound)) == np.round(np.clip(true, -bound, bound))).astype(np.float64), w
    raise ValueError(f"{metric}: no per-sample score")


def paired_test(runs_a: dict[int, dict], runs_b: dict[int, dict], metric: str, n_resamples: int = 10000,
                seed: int = 0, level: float = 0.95) -> dict:
    """Paired bootstrap over TEST samples of method A minus method B on `metric`, averaging each sample's score
    over the seeds both methods ran. `runs_x`: seed -> load_run(...) of one (method, dataset)."""
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        raise ValueError("the two methods share no seed")
    fam = runs_a[seeds[0]]["metric_family"]
    ids = runs_a[seeds[0]]["test_ids"]
    sa, sb = [], []
    for s in seeds:
        for runs, acc in ((runs_a, sa), (runs_b, sb)):
            r = runs[s]
            if not np.array_equal(r["test_ids"], ids):
                raise ValueError(f"{r['dir']}: TEST samples differ from {runs_a[seeds[0]]['dir']}; not paired")
            score, w = per_sample_scores(fam, metric, r["test_pred"], r["test_true"])
            acc.append(score)
    d = np.mean(sa, 0) - np.mean(sb, 0)  # (N,) per-sample difference, seed-averaged
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), (n_resamples, len(d)))
    wi = w[idx]
    obs = float((w * d).sum() / w.sum())
    boot = (wi * d[idx]).sum(1) / np.maximum(wi.sum(1), 1e-12)
    a = (1 - level) / 2
    p = float(np.mean(np.abs(boot - obs) >= abs(obs))) if obs != 0 else 1.0
    return {"metric": metric, "seeds": seeds, "n_samples": int(w.sum()), "diff": obs,
            "ci_low": float(np.quantile(boot, a)), "ci_high": float(np.quantile(boot, 1 - a)), "p_value": p}


# -------------------------------------------------------------------------------------------- the sweep
def find_runs(root: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """(method, dataset) -> seed -> run, for every finished run under root/<method>/<dataset>/<seed>/."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for f in sorted(Path(root).glob("*/*/*/metrics.json")):
        r = load_run(f.parent)
        out.setdefault((r["model"], f.parent.parent.name), {})[int(r["seed"])] = r
    return out


def evaluate_sweep(root: Path, level: float = 0.95, n_resamples: int = 10000, seed: int = 0,
                   paired: bool = True) -> dict[str, pd.DataFrame]:
    """-> {"per_seed", "summary", "paired", "curves", "run_inputs"} tables for every run under `root`
    (run_inputs: one row per run, its base method and the pretraining pool its pretrained encoders came from,
    both read from its config.json; the pool columns are empty for runs that loaded none)."""
    runs = find_runs(root)
    per_seed, curves, inputs = [], [], []
    base: dict[tuple[str, str], str] = {}  # (run name, dataset) -> its full model
    for (m, d), by_seed in runs.items():
        for s, r in sorted(by_seed.items()):
            cfg = _run_config(Path(r["dir"]))
            b = base.setdefault((m, d), base_method(cfg, m))
            if base_method(cfg, m) != b:
                raise ValueError(f"{r['dir']}/config.json: run {m!r} is a variant of {base_method(cfg, m)!r}, "
                                 f"but its other seeds on {d} are of {b!r}; delete the stale runs and rerun the sweep")
            enc = (cfg.get("method_inputs") or {}).get("pretrained_encoders") or {}
            inputs.append((m, b, d, s, enc.get("pool") or None, enc.get("pool_size") if enc.get("pool") else None))
            for k, v in r["test"].items():
                per_seed.append((m, d, s, "valid-selected", k, v))
            for k, v in best_test_epoch(r).items():
                per_seed.append((m, d, s, "best-test-epoch", k, v))
            h = pd.read_csv(Path(r["dir"]) / "history.csv")
            cols = [c for c in ("epoch", "train_loss", "valid_loss", "test_loss") if c in h]
            curves.append(h[cols].assign(method=m, dataset=d, seed=s))
    ps = pd.DataFrame(per_seed, columns=["method", "dataset", "seed", "protocol", "metric", "value"])
    rows = []
    for (m, d, proto, k), g in ps.groupby(["method", "dataset", "protocol", "metric"], sort=True):
        seeds = ",".join(str(s) for s in sorted(g["seed"]))
        rows.append({"method": m, "dataset": d, "protocol": proto, "metric": k, "seeds": seeds,
                     **summarise(g["value"].to_numpy(), level, n_resamples, seed)})
        if proto == "valid-selected":
            v = g["value"].to_numpy()
            best = v.min() if k in metrics.LOWER_IS_BETTER else v.max()
            rows.append({"method": m, "dataset": d, "protocol": "best-seed", "metric": k, "seeds": seeds,
                         "n": int(len(v)), "mean": float(best), "std": 0.0, "ci_low": float(best),
                         "ci_high": float(best)})
    summary = pd.DataFrame(rows, columns=["method", "dataset", "protocol", "metric", "seeds", "n", "mean", "std",
                                          "ci_low", "ci_high"])
    pairs = []
    if paired:
        for d, a, b in paired_pairs(base):
            if not set(runs[(a, d)]) & set(runs[(b, d)]):
                continue  # no common seed (e.g. an ablation seed the full model never ran): nothing to pair
            fam = next(iter(runs[(a, d)].values()))["metric_family"]
            for k in PAIRED_METRICS[fam]:
                r = paired_test(runs[(a, d)], runs[(b, d)], k, n_resamples, seed, level)
                pairs.append({"dataset": d, "method_a": a, "method_b": b, "metric": k,
                              "seeds": ",".join(map(str, r["seeds"])), "n_samples": r["n_samples"],
                              "diff": r["diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                              "p_value": r["p_value"]})
    paired_df = pd.DataFrame(pairs, columns=["dataset", "method_a", "method_b", "metric", "seeds", "n_samples",
                                             "diff", "ci_low", "ci_high", "p_value"])
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["epoch", "train_loss", "valid_loss", "test_loss", "method", "dataset", "seed"])
    run_inputs = pd.DataFrame(inputs, columns=["method", "base_method", "dataset", "seed", "pretrain_pool",
                                               "pretrain_pool_size"]).astype({"pretrain_pool_size": "Int64"})
    return {"per_seed": ps, "summary": summary, "paired": paired_df, "curves": curves_df, "run_inputs": run_inputs}


def paired_pairs(base: dict[tuple[str, str], str]) -> list[tuple[str, str, str]]:
    """(run name, dataset) -> base method  ->  [(dataset, A, B)] to test: every pair of methods on a dataset
    (alphabetical, A < B), then every variant against its full model (A = variant, B = method) where both ran."""
    out = []
    for d in sorted({d for _, d in base}):
        ran = {m: b for (m, dd), b in base.items() if dd == d}
        methods = sorted(m for m, b in ran.items() if m == b)
        out += [(d, a, b) for a, b in combinations(methods, 2)]
        out += [(d, v, b) for v, b in sorted(ran.items()) if v != b and b in ran]
    return out


def base_method(config: dict, name: str) -> str:
    """The registered method behind a run: config.json's `variant.method` for a variant run, else its name."""
    return (config.get("variant") or {}).get("method") or name


def _run_config(run_dir: Path) -> dict:
    """A run's config.json ({} for a run written before it existed): `method_inputs` (the external inputs, e.g.
    AE-MT's pretrained encoders) and, for a variant run, `variant`."""
    f = run_dir / "config.json"
    return json.loads(f.read_text()) if f.exists() else {}


def metrics_json(summary: pd.DataFrame) -> dict:
    """DVC metrics: {dataset: {method: {metric: mean}}} under the honest protocol (`dvc metrics show/diff`)."""
    out: dict = {}
    for r in summary[summary["protocol"] == "valid-selected"].itertuples():
        out.setdefault(r.dataset, {}).setdefault(r.method, {})[r.metric] = round(float(r.mean), 6)
    return out


def write_evaluation(root: Path, out_dir: Path, level: float = 0.95, n_resamples: int = 10000, seed: int = 0) -> dict:
    """The `evaluate` stage: write per_seed.csv, summary.csv, paired.csv, curves.csv, run_inputs.csv and
    metrics.json."""
    from .io import atomic_path, write_json

    tables = evaluate_sweep(root, level, n_resamples, seed)
    if tables["summary"].empty:
        raise FileNotFoundError(f"{root}: no finished runs (*/*/*/metrics.json); run `dvc repro sweep` first")
    out_dir = Path(out_dir)
    for name, df in tables.items():
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    write_json(out_dir / "metrics.json", metrics_json(tables["summary"]))
    return tables
