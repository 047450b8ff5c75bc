"""`msarepro check-presets`: every method with every real dataset's preset, built and trained for a few steps on
synthetic data in that dataset's shapes, before a user's GPU hour meets them.

The pairs: each registered method (or the names given with --methods: methods or variants) with each real dataset
its family handles (--datasets: real names such as mosi, or canonical dataset directories). A real dataset D is
stood in for by the registered `synth-like-D` (msarepro.data.synth: D's feature sizes, lengths, label range,
splits and token-id range, at a small scale), whose manifest names D's preset, so the method's settings resolve
exactly as in a run on D: the block's values under `methods.<m>.presets.D`, or the block's own values where the
method has no preset for D (text_only, LF-DNN and TFN everywhere; CLGSI on CH-SIMS v2): those are what
`msarepro train --model M --dataset D` would run, so they are checked too and marked `(block)`.

Each pair runs in its own process (presetcheck/pair.py says what it does and how memory is measured), with one
torch thread unless --threads says otherwise, and with HF_HUB_OFFLINE=1: a pretrained model named by a preset
whose weights are not here is replaced by a stand-in of its family (presetcheck/encoders.py), and the parameter
counts come from the real architecture. A pair fails on any error (its message is reported), a non-finite loss,
or a crash or kill of its process; the command exits 1 when any pair fails.

`--report` writes reports/compute/<device>.json (this run's figures, the machine and the date) and, from every
such file present, reports/tables/compute.md and .tex: the compute-cost table. It is written by this command
only, never by `dvc repro` (timings differ run to run): the `tables` stage keeps it (dvc.yaml: reports/tables is
persistent, .dvcignore leaves compute.* out of its hash).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.registry import LIKE_PREFIX

# The fields of a pair's result that the table and the JSON carry (pair.py fills them).
RESULT_FIELDS = ("name", "dataset", "preset", "ok", "error", "phase", "params", "trainable", "own", "params_run",
                 "s_per_step", "eval_s", "peak_mib", "checkpoint_mib", "batch_size", "encoders", "stages",
                 "full_batches", "samples", "pretrain_s", "build_s", "memory")


@dataclass(frozen=True)
class Pair:
    name: str  # a method or a variant
    dataset: str  # a registered dataset name (synth-like-D) or a canonical dataset directory
    label: str  # what the table calls the dataset: the real dataset's name, or the directory's dataset name
    preset: str  # the preset its manifest names
    in_params: bool  # the method (variant) block has a preset of that name; else its block's own values apply


def real_datasets() -> list[str]:
    """The real datasets that have a registered synthetic stand-in `synth-like-NAME`, in registry order."""
    from ..data import DATASETS

    return [i.extra["like"] for i in DATASETS.values() if i.source == "synth-like"]


def _dataset(arg: str) -> tuple[str, str, str, str]:
    """A --datasets argument -> (dataset to load, label, family, preset)."""
    from ..data import DATASETS, DatasetError

    if arg in DATASETS and LIKE_PREFIX + arg in DATASETS:
        return LIKE_PREFIX + arg, arg, DATASETS[arg].family, arg
    if arg.startswith(LIKE_PREFIX) and arg in DATASETS:
        real = arg[len(LIKE_PREFIX):]
        return arg, real, DATASETS[arg].family, real
    p = Path(arg)
    if (p / "manifest.json").is_file():
        m = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
        return str(p.resolve()), m["name"], m["family"], m.get("preset") or m["name"]
    known = ", ".join(real_datasets()) or "none registered"
    raise DatasetError(f"--datasets: {arg!r} is neither a real dataset with a synthetic stand-in ({known}) nor a "
                       "canonical dataset directory (with a manifest.json)")


def plan(params, methods: list[str] | None = None, datasets: list[str] | None = None) -> list[Pair]:
    """The pairs to check, methods outer, datasets in the given (registry) order."""
    from ..config import ConfigError
    from ..methods import all_methods, get_method, method_of

    names = list(methods) if methods else sorted(all_methods())
    ds = [_dataset(d) for d in (datasets or real_datasets())]
    if not ds:
        raise ConfigError("check-presets: no real dataset has a synthetic stand-in (synth-like-NAME) registered; "
                          "give canonical dataset directories with --datasets")
    pairs = []
    for n in names:
        cls = get_method(method_of(params, n))  # an unknown name is an error naming the known ones
        block = params.variants[n].settings if n in params.variants else (params.methods.get(n) or {})
        presets = set(block.get("presets") or {}) | set((params.methods.get(cls.name) or {}).get("presets") or {})
        for d, label, family, preset in ds:
            if family in cls.families:
                pairs.append(Pair(n, d, label, preset, preset in presets))
    return pairs


def overrides(workdir: Path, pretrain_epochs: int = 1) -> list[str]:
    """What the check changes in params.yaml: its data root, AE-MT's encoders pretrained into the work folder for
    `pretrain_epochs` epochs, and nothing of any method's settings."""
    from ..methods import pretraining_methods

    ov = [f"data.root={workdir / 'data'}", f"pretrain.epochs={pretrain_epochs}"]
    ov += [f"methods.{m}.pretrained={workdir / 'pretrain'}/{{dataset}}/{{settings}}" for m in pretraining_methods()]
    return ov


def _pretrain_preset_overrides(raw: dict, pretrain_epochs: int) -> list[str]:
    return [f"pretrain.presets.{p}.epochs={pretrain_epochs}"
            for p, block in ((raw.get("pretrain") or {}).get("presets") or {}).items() if block and "epochs" in block]


def _scale(params, pairs: list[Pair], like: str, steps: int) -> float:
    """The scale of `like` (synth-like-D) whose train split holds min(max(steps, 2), 4) full batches of the largest
    batch size among its pairs (the whole real size at most)."""
    from ..data import DATASETS
    from ..methods import method_config

    real = like[len(LIKE_PREFIX):]
    n_train = int(DATASETS[real].extra["splits"]["train"])
    batch = max(method_config(params, p.name, p.preset).batch_size for p in pairs if p.dataset == like)
    return min(1.0, max(2, min(steps, 4)) * batch / n_train)


def prepare_data(params, pairs: list[Pair], root: Path, steps: int, scale: float | None, seed: int, log) -> dict:
    """Generate each synth-like dataset once under root; -> {dataset: scale}."""
    from ..data.synth import generate

    scales = {}
    for like in dict.fromkeys(p.dataset for p in pairs if p.dataset.startswith(LIKE_PREFIX)):
        s = scale if scale is not None else _scale(params, pairs, like, steps)
        t0 = time.perf_counter()
        generate(like, root / like, seed=seed, scale=s)
        log(f"check-presets: generated {like} at scale {s:.4g} ({time.perf_counter() - t0:.1f} s)")
        scales[like] = s
    return scales


def encoder_plan(params, pairs: list[Pair], models: Path) -> tuple[dict[str, str], dict[str, str]]:
    """-> ({named model: its stand-in}, {named model: its real-architecture folder}) for every named pretrained
    model the pairs' settings use (stand-ins only where the weights are not here)."""
    from ..methods import method_config
    from . import encoders

    names = set()
    for p in pairs:
        cfg = method_config(params, p.name, p.preset)
        names |= {getattr(cfg, f) for f in encoders.ENCODER_FIELDS if isinstance(getattr(cfg, f, None), str)}
    subs, real = {}, {}
    with encoders.quiet_transformers():
        for n in sorted(names & set(encoders.REAL)):
            real[n] = encoders.real_folder(n, models)
            if not encoders.available(n):
                subs[n] = encoders.substitute(n, models)
    return subs, real


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # the package's own source first: the code under check
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", MSAREPRO_PROGRESS="0", TOKENIZERS_PARALLELISM="false")
    return env


def run_isolated(spec: dict, workdir: Path, timeout: float) -> dict:
    """run_pair(spec) in a process of its own; a crash, a kill or a timeout is the pair's failure."""
    tag = f"{spec['name']}--{Path(spec['dataset']).name}"
    spec_path, out_path = workdir / f"{tag}.spec.json", workdir / f"{tag}.result.json"
    spec_path.write_text(json.dumps(spec))
    base = {"name": spec["name"], "dataset": spec["dataset_label"], "ok": False, "phase": "process"}
    try:
        p = subprocess.run([sys.executable, "-m", "msarepro.presetcheck.pair", str(spec_path), str(out_path)],
                           env=_child_env(int(spec.get("threads", 1))), capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timed out after {timeout:.0f} s (raise --timeout)"}
    if out_path.is_file():
        return json.loads(out_path.read_text())
    how = f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit status {p.returncode}"
    if p.returncode == -9:
        how += " (out of memory?)"
    tail = (p.stderr.strip().splitlines() or [""])[-1][:400]
    return {**base, "error": f"the pair's process ended without a result: {how}; {tail}"}


def check_presets(params_path: str | Path = "params.yaml", sets: list[str] | None = None,
                  methods: list[str] | None = None, datasets: list[str] | None = None, steps: int = 3,
                  device: str | None = None, threads: int = 1, scale: float | None = None, seed: int = 1111,
                  isolate: bool = True, timeout: float = 3600.0, workdir: str | Path | None = None,
                  log=None) -> list[dict]:
    """Check every pair; -> one result per pair (presetcheck.pair.run_pair's records), in plan order."""
    from ..config import apply_overrides, from_dict, load_raw
    from ..methods import load_params, validate_params
    from .pair import run_pair

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if steps < 1:
        raise ValueError("--steps must be at least 1")
    own_tmp = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="msarepro-check-presets-") if own_tmp else None
    work = Path(tmp.name if own_tmp else workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        user = load_params(params_path, sets or [])  # the user's params, validated as every command does
        ov = [*(sets or []), *overrides(work), *_pretrain_preset_overrides(load_raw(params_path), 1)]
        validate_params(from_dict(apply_overrides(load_raw(params_path), ov)))
        pairs = plan(user, methods, datasets)
        prepare_data(user, pairs, work / "data", steps, scale, user.data.synth_seed, log)
        subs, real = encoder_plan(user, pairs, work / "models")
        for n, s in subs.items():
            log(f"check-presets: {n} is not available offline; stand-in: {Path(s).name}")
        results = []
        for i, p in enumerate(pairs, 1):
            spec = {"params": str(Path(params_path).resolve()), "overrides": ov, "name": p.name,
                    "dataset": p.dataset, "dataset_label": p.label, "steps": steps, "device": device,
                    "threads": threads, "seed": seed, "substitutes": subs, "real_folders": real}
            t0 = time.perf_counter()
            r = run_isolated(spec, work, timeout) if isolate else run_pair(spec)
            r = {**r, "preset": r.get("preset", p.preset), "in_params": p.in_params,
                 "wall_s": time.perf_counter() - t0}
            results.append(r)
            status = (f"ok, {r['s_per_step']:.3g} s/step" if r["ok"]
                      else f"FAILED in {r.get('phase')}: {r.get('error')}")
            log(f"check-presets: [{i}/{len(pairs)}] {p.name} / {p.label} ({p.preset}"
                f"{'' if p.in_params else ', block'}): {status} ({r['wall_s']:.0f} s)")
        return results
    finally:
        if tmp is not None:
            tmp.cleanup()


def machine(device: str | None = None) -> dict:
    """What the figures were measured on: CPU model and cores (and the GPU, for a CUDA device), torch's version."""
    import platform

    import torch

    from ..runtime import pick_device

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = pick_device(device)
    out = {"device": dev.type, "cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "capability": torch.backends.cpu.get_cpu_capability()}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    return out


def fmt_count(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "—"
    return f"{s:.3g}"
