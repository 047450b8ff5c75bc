"""Peak memory of a MOSEI-size dataset: importing its MMSA pickle, and training on it lazily or in memory.

Not part of CI (it writes ~17 GB at full size and takes a while). Usage:

    python benchmarks/mosei_memory.py                     # full size: 22,856 clips, ~8.5 GB of float32
    python benchmarks/mosei_memory.py --scale 0.02        # a quick check of the script itself
    python benchmarks/mosei_memory.py --models lf_dnn mult --modes lazy memory

Steps, each measured as its own process (peak resident set size from getrusage of a wrapper whose only child is
the command; it counts every page the process touched, memory-mapped file pages included, not the kernel's page
cache):
  1. generate an MMSA-layout pickle with MOSEI's shapes and split sizes (random float32 features, padding frames
     zero, labels in [-3, 3]), written with pickle protocol 4 as MMSA's files are; arrays are made one at a time
     while pickling, so this script itself peaks at about two of the largest array (~5 GB);
  2. `msarepro data import-mmsa` on it (--preset mosei);
  3. `msarepro train` for each model and loading mode (runtime.load=lazy / memory), max_epochs=1: one epoch of
     training, validation and test prediction, run outputs written.
Writes benchmarks/results/mosei_memory.{md,json} and removes the generated data unless --keep.
The lazy rows need train.py to pass `lazy=data.format.should_load_lazily(data_dir, params.runtime)` to
load_dataset (issue 16); without it both modes load in memory and the lazy row shows the dataset's size.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {"train": 16326, "valid": 1871, "test": 4659}  # MOSEI's standard split (MMSA's unaligned_50.pkl)
SHAPES = {"text": (50, 768), "audio": (500, 74), "vision": (500, 35)}
GIB = 2 ** 30

# A wrapper process: runs the command given as its arguments and prints its peak RSS (KiB on Linux) as JSON.
WRAP = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
        "rc = subprocess.call(sys.argv[1:]); "
        "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, "
        "'max_rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


class Generated:
    """A placeholder the pickler turns into an array only when it writes it (so arrays are never all in memory)."""

    def __init__(self, make):
        self.make = make


class LazyPickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, Generated):
            return obj.make().__reduce_ex__(4)  # the state holds the array's bytes; the array is freed
        return NotImplemented


def _features(n: int, shape: tuple[int, int], lengths: np.ndarray, seed: int):
    def make():
        a = np.random.default_rng(seed).standard_normal((n,) + shape, dtype=np.float32)
        for i, k in enumerate(lengths):  # frames after a clip's true length are zero, as in MMSA's files
            a[i, k:] = 0
        return a
    return Generated(make)


def generate_pickle(path: Path, scale: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    data = {}
    for i, (split, n_full) in enumerate(SPLITS.items()):
        n = max(2, round(n_full * scale))
        t_len = rng.integers(5, SHAPES["text"][0] + 1, n)
        a_len = rng.integers(20, SHAPES["audio"][0] + 1, n)
        v_len = rng.integers(20, SHAPES["vision"][0] + 1, n)
        ids = np.zeros((n, 3, SHAPES["text"][0]), np.float32)  # MMSA's text_bert: ids, attention mask, segments
        for j, k in enumerate(t_len):
            ids[j, 0, :k] = rng.integers(1000, 30000, k)
            ids[j, 1, :k] = 1
        y = np.round(rng.uniform(-3, 3, n) * 3) / 3
        data[split] = {
            "raw_text": [f"clip {split} {j} says something" for j in range(n)],
            "id": [f"{split}_video{j // 10}$_${j % 10}" for j in range(n)],
            "text": _features(n, SHAPES["text"], t_len, 10 * seed + 3 * i),
            "text_bert": ids,
            "audio": _features(n, SHAPES["audio"], a_len, 10 * seed + 3 * i + 1),
            "audio_lengths": a_len.tolist(),
            "vision": _features(n, SHAPES["vision"], v_len, 10 * seed + 3 * i + 2),
            "vision_lengths": v_len.tolist(),
            "annotations": ["Positive" if v > 0 else "Negative" if v < 0 else "Neutral" for v in y],
            "classification_labels": np.sign(y).astype(np.float32) + 1,
            "regression_labels": y.astype(np.float32),
        }
    with open(path, "wb") as f:
        LazyPickler(f, protocol=4).dump(data)
    return {s: len(d["id"]) for s, d in data.items()}


def one_epoch(model: str) -> list[str]:
    """-S overrides that cap `model` at one epoch, its MOSEI preset included."""
    sys.path.insert(0, str(ROOT / "src"))
    from msarepro import config

    block = config.load_raw(ROOT / "params.yaml").get("methods", {}).get(model) or {}
    sets = [f"methods.{model}.max_epochs=1"]
    if "max_epochs" in ((block.get("presets") or {}).get("mosei") or {}):
        sets.append(f"methods.{model}.presets.mosei.max_epochs=1")
    return sets


def measure(cmd: list[str], log: Path) -> dict:
    """Run `cmd` under the wrapper; -> {rc, seconds, peak_rss_gib}. Output goes to `log`."""
    with open(log, "w") as f:
        p = subprocess.run([sys.executable, "-c", WRAP, *cmd], stdout=subprocess.PIPE, stderr=f, text=True)
    lines = p.stdout.strip().splitlines()
    f_out = json.loads(lines[-1])
    log.write_text(log.read_text() + "\n".join(lines[:-1]))
    if f_out["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {f_out['rc']}); see {log}")
    return {"rc": f_out["rc"], "seconds": round(f_out["seconds"], 1),
            "peak_rss_gib": round(f_out["max_rss_kib"] * 1024 / GIB, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of MOSEI's clip count (default 1: full size)")
    ap.add_argument("--work", default="/work/scratch/mosei", help="where the pickle and dataset go (outside the repo)")
    ap.add_argument("--models", nargs="+", default=["lf_dnn"], help="methods trained one epoch each")
    ap.add_argument("--modes", nargs="+", default=["lazy", "memory"], choices=["lazy", "memory"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for mosei_memory.{md,json}")
    ap.add_argument("--keep", action="store_true", help="keep the generated pickle and dataset")
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pkl, data = work / "mosei_unaligned_50.pkl", work / "data" / "mosei-bench"
    msa = [sys.executable, "-m", "msarepro.cli"]  # `msarepro`, from this interpreter
    result: dict = {"scale": args.scale, "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        t = time.perf_counter()
        result["clips"] = generate_pickle(pkl, args.scale)
        result["pickle_gib"] = round(pkl.stat().st_size / GIB, 3)
        result["generate_seconds"] = round(time.perf_counter() - t, 1)
        print(f"pickle: {result['pickle_gib']} GiB, {result['clips']}", flush=True)
        shutil.rmtree(data, ignore_errors=True)
        imp = measure(msa + ["data", "import-mmsa", str(pkl), "--name", "mosei-bench", "--preset", "mosei",
                             "--out", str(data)], work / "import.log")
        imp["ratio_to_pickle"] = round(imp["peak_rss_gib"] / result["pickle_gib"], 3)
        result["import"] = imp
        result["split_files_gib"] = round(sum(p.stat().st_size for p in data.glob("*.safetensors")) / GIB, 3)
        print(f"import: {imp}", flush=True)
        pkl.unlink()  # the dataset is what training reads; free the disk
        result["train"] = []
        for model in args.models:
            for mode in args.modes:
                run_dir = work / "runs" / f"{model}-{mode}"
                shutil.rmtree(run_dir, ignore_errors=True)
                cmd = msa + ["train", "--model", model, "--dataset", str(data), "--out", str(run_dir),
                             "--no-progress", "--seed", "1111"]
                cmd += [x for s in [f"runtime.load={mode}"] + one_epoch(model) for x in ("-S", s)]
                r = measure(cmd, work / f"train-{model}-{mode}.log")
                hist = (run_dir / "history.csv").read_text().strip().splitlines()
                r.update(model=model, load=mode, epochs=len(hist) - 1,
                         metrics=(run_dir / "metrics.json").read_bytes().decode())
                result["train"].append(r)
                print(f"train {model} {mode}: {r['peak_rss_gib']} GiB, {r['seconds']} s", flush=True)
        for model in args.models:  # the two modes' outputs should be the same bytes
            ms = {r["load"]: r.pop("metrics") for r in result["train"] if r["model"] == model}
            if len(ms) == 2:
                result.setdefault("same_metrics", {})[model] = ms["lazy"] == ms["memory"]
        for r in result["train"]:
            r.pop("metrics", None)
    finally:
        if not args.keep:
            for p in (pkl, data.parent, work / "runs"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mosei_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "mosei_memory.md").write_text(table(result))
    print(table(result))
    return 0


def table(r: dict) -> str:
    imp = r["import"]
    lines = [f"# MOSEI-size peak memory (scale {r['scale']}: {sum(r['clips'].values())} clips, {r['clips']})", "",
             f"Pickle {r['pickle_gib']} GiB; split files {r['split_files_gib']} GiB. Peak resident set size of each "
             f"command ({r['cpus']} CPUs).", "",
             "| step | load | peak RSS (GiB) | ratio | time (s) |", "| --- | --- | --- | --- | --- |",
             f"| import-mmsa | - | {imp['peak_rss_gib']} | {imp['ratio_to_pickle']}x the pickle | {imp['seconds']} |"]
    for t in r["train"]:
        lines.append(f"| train {t['model']}, {t['epochs']} epoch | {t['load']} | {t['peak_rss_gib']} | "
                     f"{t['peak_rss_gib'] / r['split_files_gib']:.3f}x the split files | {t['seconds']} |")
    if r.get("same_metrics"):
        lines += ["", "metrics.json identical in both modes: " +
                  ", ".join(f"{m}: {'yes' if v else 'NO'}" for m, v in r["same_metrics"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
