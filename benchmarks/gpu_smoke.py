"""GPU smoke test of the one training loop (issue 16); not run in CI.

On a CUDA machine: trains every method for 2 epochs on the embedded data (synth-mosi, INFIG on synth-mvsa) with
runtime.precision fp32, then bf16, then torch.compile (fp32), and prints a table of samples/s (training and the
per-epoch evaluation, `timing.json`), wall seconds and the test metric of the epoch chosen on VALID (bf16 should
land near fp32). fp32 and bf16 run in this process; each compiled run is its own process with a time limit, and
whatever does not fit the overall budget (default 450 s, so the whole script ends within 8 minutes on one H200)
is reported as skipped. AE-MT trains from random initialisation here (`pretrained: ""`): its throughput is that
of the fine-tuning, without the pretraining stage.

    python benchmarks/gpu_smoke.py                      # on the GPU machine, from the repository root
    python benchmarks/gpu_smoke.py --device cpu --scale 0.05 --epochs 1 --budget 120   # a dry run on CPU
Writes its runs and `results.json` under --out (default $TMPDIR/msarepro-gpu-smoke, outside the repository).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"fp32": [], "bf16": ["runtime.precision=bf16"], "compile": ["runtime.compile=true"]}


def dataset_of(method: str) -> str:
    return "synth-mvsa" if method == "infig" else "synth-mosi"


def overrides(method: str, dataset: str, epochs: int, root: Path) -> list[str]:
    """params.yaml with the data under `root` and `method` capped at `epochs` (no early stop)."""
    over = [f"data.root={root}", f"methods.{method}.max_epochs={epochs}", f"methods.{method}.patience={epochs + 1}"]
    from msarepro import config
    presets = (config.load_raw(ROOT / "params.yaml")["methods"].get(method) or {}).get("presets") or {}
    if "max_epochs" in (presets.get(dataset) or {}):
        over.append(f"methods.{method}.presets.{dataset}.max_epochs={epochs}")
    if method == "aemt":
        over.append("methods.aemt.pretrained=''")
    return over


def in_process(method, dataset, over, out: Path, device: str) -> None:
    from msarepro import config
    from msarepro.methods import validate_params
    from msarepro.train import RunSpec, run

    raw = config.load_raw(ROOT / "params.yaml")
    params = validate_params(config.from_dict(config.apply_overrides(raw, over)))
    run(params, RunSpec(method, dataset, 1111, out, device=device, progress=False))


def subprocess_run(method, dataset, over, out: Path, device: str, limit: float) -> None:
    cmd = [sys.executable, "-m", "msarepro.cli", "train", "--model", method, "--dataset", dataset, "--seed", "1111",
           "--out", str(out), "--device", device, "--no-progress", "--params", str(ROOT / "params.yaml")]
    for o in over:
        cmd += ["-S", o]
    subprocess.run(cmd, check=True, timeout=limit, capture_output=True, text=True)


def row(out: Path) -> dict:
    timing = json.loads((out / "timing.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    key = next((k for k in ("Has0_acc_2", "Acc", "Accuracy", "Mult_acc_2") if k in metrics), sorted(metrics)[0])
    return {"samples_per_s": timing["samples_per_second"], "seconds": timing["train_seconds"],
            "metric": key, "test": metrics[key]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--scale", type=float, default=1.0, help="embedded data scale (1.0: synth-mosi 900/200/300)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole script")
    p.add_argument("--methods", nargs="*", help="default: every registered method")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "msarepro-gpu-smoke")
    args = p.parse_args(argv)
    t_start = time.monotonic()
    os.environ.setdefault("MSAREPRO_PROGRESS", "0")
    import torch

    from msarepro.data.synth import generate
    from msarepro.methods import all_methods

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device here (use --device cpu for a dry run)", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
              f"bf16 native: {torch.cuda.is_bf16_supported(including_emulation=False)}")
    data = args.out / "data"
    methods = args.methods or sorted(all_methods())
    for d in sorted({dataset_of(m) for m in methods}):
        if not (data / d / "manifest.json").exists():
            generate(d, data / d, seed=0, scale=args.scale)
    results = []
    for mode in MODES:
        for m in methods:
            d = dataset_of(m)
            out = args.out / "runs" / mode / m
            left = args.budget - (time.monotonic() - t_start)
            res = {"method": m, "dataset": d, "mode": mode}
            try:
                if left < 20:
                    raise TimeoutError("over the time budget")
                over = overrides(m, d, args.epochs, data) + MODES[mode]
                if mode == "compile":
                    subprocess_run(m, str(data / d), over, out, args.device, min(150.0, left - 10))
                else:
                    in_process(m, str(data / d), over, out, args.device)
                res.update(row(out))
            except subprocess.CalledProcessError as e:
                res["error"] = (e.stderr or "").strip().splitlines()[-1:] or ["failed"]
            except (subprocess.TimeoutExpired, TimeoutError) as e:
                res["error"] = f"skipped: {e}"
            except Exception as e:  # noqa: BLE001 (a smoke test reports every failure and goes on)
                res["error"] = f"{type(e).__name__}: {e}"
            results.append(res)
            shown = (f"{res['samples_per_s']:9.1f} samples/s {res['seconds']:7.1f} s  test {res['metric']} "
                     f"{res['test']:.4f}" if "error" not in res else f"ERROR {res['error']}")
            print(f"{mode:8s} {m:10s} {d:11s} {shown}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"total {time.monotonic() - t_start:.0f} s; compiled runs include their compilation (first epoch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
