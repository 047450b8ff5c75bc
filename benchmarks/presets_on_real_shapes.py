"""Do the embedded-data presets learn on data in the real datasets' shapes? (issue 17, point 4)

    python benchmarks/presets_on_real_shapes.py [--methods text_only lf_dnn ...] [--likes mosi sims] [--seed 1]
                                                [--work DIR] [--out benchmarks/results] [-S key=value ...]

For each `--likes` dataset (synth-like-mosi: MOSI's shapes, audio 5-d x 375, vision 20-d x 500, text 768-d x 50;
synth-like-sims: CH-SIMS's, audio 33-d x 400, vision 709-d x 55, text 768-d x 39; both at synth_like.py's default
size, 200 training clips) it trains ONE seed of every method in `--methods` with its embedded preset
(`train --preset synth-mosi` on MOSI's shapes, `synth-sims` on CH-SIMS's; AE-MT pretrains first with the same
preset, where that preset's pretraining pool exists in the set) and, in the same run, a reference: ridge
regression (sklearn RidgeCV, leave-one-out over alphas 1e-3 ... 1e4, on standardised features) on pooled features:
the mean over real positions of the text features, the audio and the vision, concatenated. Test metrics are the
epoch chosen on VALID (the training loop's rule); the ridge is fitted on TRAIN only.

Writes <out>/presets_on_real_shapes.json and .md (the machine, torch's thread count and the date in both): per
(method, dataset) the test metrics (Has0_acc_2 / Mult_acc_2, Corr, MAE), the best and the last epoch, the lowest
training loss, the parameter count, seconds; and the ridge's. Each run is written as soon as it ends, so an
interrupted benchmark keeps what it measured. Nothing here enters `dvc repro`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["text_only", "lf_dnn", "tfn", "almt", "sfttr", "clgsi", "mult", "aemt"]
EMBEDDED = {"mosi": "synth-mosi", "sims": "synth-sims"}  # the embedded preset tried on each real dataset's shapes
ACC2 = {"mosi": "Has0_acc_2", "sims": "Mult_acc_2"}  # metric family -> the binary accuracy reported
SHOWN = ("Corr", "MAE")


def pooled(split) -> np.ndarray:
    """(N, Dt + Da + Dv): each modality's mean over its real positions (`<m>_lengths`), concatenated."""
    parts = []
    for m in ("text", "audio", "vision"):
        x = np.asarray(split.arrays[m], dtype=np.float64)  # (N, L, D)
        n = np.asarray(split.arrays[f"{m}_lengths"])
        mask = (np.arange(x.shape[1])[None, :] < n[:, None]).astype(np.float64)  # (N, L)
        parts.append((x * mask[..., None]).sum(1) / np.maximum(n, 1)[:, None])
    return np.concatenate(parts, axis=1)


def ridge_reference(ds) -> dict:
    """RidgeCV on pooled, standardised features, fitted on train -> test metrics and the alpha chosen."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from msarepro import metrics
    man = ds.manifest
    t0 = time.perf_counter()
    X = {s: pooled(ds.splits[s]) for s in ("train", "test")}
    y = {s: ds.splits[s].labels["M"].to_numpy(np.float64) for s in ("train", "test")}
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
    model.fit(X["train"], y["train"])
    lo, hi = man.label_range
    pred = np.clip(model.predict(X["test"]), lo, hi)
    return {"test": metrics.compute(man.metric_family, pred, y["test"]), "alpha": float(model[-1].alpha_),
            "features": int(X["train"].shape[1]), "seconds": round(time.perf_counter() - t0, 2)}


def parameter_count(run_dir: Path) -> int:
    import torch
    state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)["model"]
    return int(sum(t.numel() for k, t in state.items()  # trained tensors: no BatchNorm statistics, no retrieval bank
                   if isinstance(t, torch.Tensor) and t.is_floating_point() and "running_" not in k))


def train_one(params, method: str, data_dir: Path, like: str, seed: int, work: Path) -> dict:
    from msarepro.methods import method_config
    from msarepro.train import RunSpec, run
    preset = EMBEDDED[like]
    out = work / "runs" / like / method
    t0 = time.perf_counter()
    pretrain = None
    if method == "aemt":
        cfg = method_config(params, method, preset)
        if cfg.pretrained:
            from msarepro.pretrain.run import run_pretraining
            enc = Path(cfg.pretrained.format(dataset=f"synth-like-{like}"))
            r = run_pretraining(params, str(data_dir), seed, enc, progress=False, preset=preset)
            pretrain = {"best_epoch": r["best_epoch"], "pool": r["pool"],
                        "seconds": round(time.perf_counter() - t0, 1)}
    result = run(params, RunSpec(method, str(data_dir), seed, out, progress=False, preset=preset))
    seconds = time.perf_counter() - t0
    hist = pd.read_csv(out / "history.csv")
    config = json.loads((out / "config.json").read_text())
    return {"test": result["test"], "best_epoch": int(result["best_epoch"]), "epochs": int(len(hist)),
            "train_loss_min": float(hist["train_loss"].min()), "train_loss_last": float(hist["train_loss"].iloc[-1]),
            "valid_loss_best": float(hist["valid_loss"].min()), "parameters": parameter_count(out),
            "seconds": round(seconds, 1), "adapted": config.get("adapted", {}), "pretrain": pretrain}


def markdown(record: dict) -> str:
    lines = ["# Embedded presets on data in real shapes", "",
             f"Generated by `benchmarks/presets_on_real_shapes.py` on {record['machine']} "
             f"({record['threads']} torch thread(s)), {record['date']}; seed {record['seed']}. Data: synth-like-mosi "
             "(MOSI's shapes) with the synth-mosi preset, synth-like-sims (CH-SIMS's shapes) with the synth-sims "
             "preset, 200 training clips each. Ridge: RidgeCV on pooled (mean over real positions) text, audio and "
             "vision features, fitted on train. acc-2: Has0_acc_2 (MOSI), Mult_acc_2 (CH-SIMS). Test metrics at the "
             "epoch chosen on VALID. Overrides: " + (", ".join(f"`{o}`" for o in record.get("overrides") or []) or
                                                   "none") + ".", "",
             "| dataset | method | test acc-2 | test Corr | test MAE | ridge acc-2 / Corr / MAE | best / run epochs | "
             "min train loss | parameters | seconds | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for like, d in record["datasets"].items():
        fam = d["metric_family"]
        rt = d["ridge"]["test"]
        ridge = f"{rt[ACC2[fam]]:.3f} / {rt['Corr']:.3f} / {rt['MAE']:.3f}"
        for method, r in d["methods"].items():
            if "error" in r:
                lines.append(f"| {like} | {method} | - | - | - | {ridge} | - | - | - | - | {r['error']} |")
                continue
            t = r["test"]
            note = "; ".join(f"{k}: {v['configured']} -> {v['used']}" for k, v in r["adapted"].items())
            lines.append(f"| {like} | {method} | {t[ACC2[fam]]:.3f} | {t['Corr']:.3f} | {t['MAE']:.3f} | {ridge} | "
                         f"{r['best_epoch']} / {r['epochs']} | {r['train_loss_min']:.4f} | {r['parameters']:,} | "
                         f"{r['seconds']:.0f} | {note} |")
    return "\n".join(lines) + "\n"


def write(record: dict, out: Path) -> None:
    from msarepro.io import write_json, write_text
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "presets_on_real_shapes.json", record)
    write_text(out / "presets_on_real_shapes.md", markdown(record))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--likes", nargs="+", default=list(EMBEDDED), choices=list(EMBEDDED))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, help="data, runs and pretraining (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--append", action="store_true", help="keep the results already in <out>'s JSON (other methods "
                    "or datasets, measured by an earlier invocation with the same --work data) and add these")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="params.yaml override")
    args = ap.parse_args(argv)

    import torch

    from msarepro import config
    from msarepro.data import load_dataset
    from msarepro.data.synth_like import write_like
    from msarepro.methods import validate_params
    work = args.work or Path(tempfile.mkdtemp(prefix="presets-real-shapes-"))
    raw = config.load_raw(ROOT / "params.yaml")
    over = [f"data.root={work / 'data'}", f"methods.aemt.pretrained={work}/pretrain/{{dataset}}/{{settings}}",
            *args.set]
    params = validate_params(config.from_dict(config.apply_overrides(raw, over)))
    record = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "seed": args.seed,
              "overrides": args.set, "datasets": {}}
    previous = args.out / "presets_on_real_shapes.json"
    if args.append and previous.exists():
        old = json.loads(previous.read_text())
        record["datasets"] = old["datasets"]
        if not old["date"].endswith(record["date"]):
            record["date"] = f"{old['date']}; {record['date']}"
    for like in args.likes:
        data_dir = work / "data" / f"synth-like-{like}"
        if not (data_dir / "manifest.json").exists():
            write_like(like, data_dir, seed=params.data.synth_seed)
        ds = load_dataset(data_dir)
        kept = record["datasets"].get(like, {}).get("methods", {})
        d = record["datasets"][like] = {"preset": EMBEDDED[like], "metric_family": ds.manifest.metric_family,
                                        "splits": ds.manifest.splits, "ridge": ridge_reference(ds), "methods": kept}
        del ds
        print(f"{like}: ridge {d['ridge']['test']}", flush=True)
        write(record, args.out)
        for method in args.methods:
            try:
                d["methods"][method] = r = train_one(params, method, data_dir, like, args.seed, work)
                print(f"{like} {method}: {r['test']} best {r['best_epoch']}/{r['epochs']} {r['seconds']} s", flush=True)
            except Exception as e:  # noqa: BLE001 -- recorded: e.g. a pretraining pool the set does not have
                d["methods"][method] = {"error": str(e).split("\n")[0][:200]}
                print(f"{like} {method}: {e}", file=sys.stderr, flush=True)
            write(record, args.out)
    print(f"wrote {args.out / 'presets_on_real_shapes.md'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MSAREPRO_PROGRESS", "0")
    sys.exit(main())
