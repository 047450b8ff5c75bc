"""Score a finished run's valid-selected checkpoint (best.pt) on its TEST split under each perturbation.

The model is rebuilt as the training loop built it (config.json's resolved settings, the run's seed, the token
ids it read, its runtime settings, the training stage of the best epoch), best.pt is loaded through
`train.load_weights`, and every perturbed test split goes through the loop's own `train.predict` (same batch
size, 256) and `train.score`. So a perturbation that changes nothing (random_drop@0, noise@inf, shift@0) gives the
run's metrics.json test metrics bit for bit on the machine that trained it; where it does not (another device or
CPU), a note says so.

Frozen sub-computations cached per clip (`Method.cached`, keyed by split name) never see clean values under a
perturbation: each perturbed split has its own name (`test|<perturbation>`) and the cache is cleared before
each one.

Output: a long table, one row per (run, perturbation, metric), columns `COLUMNS`:
    dataset       the dataset's name (manifest)            method   the run's name (a variant's name included)
    seed          the run's seed                           run      the run directory, relative to the cwd
    perturbation  random_drop | remove | noise | shift | token_drop | patch_mask
    modalities    the modalities it was applied to, as letters in the order T, A, V, I (TAV, TA, I)
    severity      missing rate / SNR in dB / frames; 1.0 for remove
    metric,value  each test metric of the dataset's family (MMSA's names)
Every perturbation is applied to every run of its dataset family, whatever the model reads, so that every method
has every cell of report/robustness.py's tables (a model unaffected by a modality's loss scores as on clean data).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import torch

from .. import config
from ..config import ConfigError, RuntimeConfig
from ..data.loader import SplitTensors
from ..robustness.perturb import EVAL_SEED, FAMILY_MODALITIES, ID_KEYS, KINDS, Perturbation, SpecialIds, letters, parse

COLUMNS = ("dataset", "method", "seed", "run", "perturbation", "modalities", "severity", "metric", "value")
DEFAULT_RATES = tuple(round(0.1 * i, 1) for i in range(10))  # LNLN's 0.0, 0.1, ..., 0.9
DEFAULT_SNRS = (20.0, 10.0, 5.0, 0.0)  # dB
DEFAULT_SHIFTS = (1, 2, 4, 8)  # frames
REMOVE_SETS = {"trimodal": ("T", "A", "V", "TA", "TV", "AV"), "image_text": ("T", "I")}
DEFAULT_KINDS = {"trimodal": ("random_drop", "remove", "noise", "shift"),
                 "image_text": ("token_drop", "patch_mask", "remove")}
PREDICT_BATCH = 256  # train.predict's default: the batch size the loop scored valid and test with


def parse_rates(text: str) -> tuple[float, ...]:
    """'0:0.9:0.1' (start:stop:step, both ends included) or '0,0.3,0.5' -> rates in [0, 1]."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            n = int(round((stop - start) / step))
            rates = tuple(round(start + i * step, 10) for i in range(n + 1))
        else:
            rates = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--rates {text!r}: expected START:STOP:STEP (e.g. 0:0.9:0.1) or a comma list") from None
    if not rates or any(not 0 <= r <= 1 for r in rates):
        raise ConfigError(f"--rates {text!r}: rates must lie in [0, 1]")
    return rates


def plan(family: str, items: Sequence[str] | None = None, rates: Sequence[float] = DEFAULT_RATES,
         modalities: Iterable[str] | None = None) -> list[Perturbation]:
    """The perturbations for a dataset family. items: kind names (expanded: drop kinds over `rates`, noise over
    DEFAULT_SNRS, shift over DEFAULT_SHIFTS, remove over REMOVE_SETS) or single ones ('noise@10', 'remove@TA');
    None: every kind of the family. Kinds of another family are left out; modalities narrows the kinds'."""
    mods = None if modalities is None else [m for m in modalities if m in FAMILY_MODALITIES[family]]
    out: list[Perturbation] = []
    for item in items or DEFAULT_KINDS[family]:
        name = item.partition("@")[0]
        if name not in KINDS:
            raise ConfigError(f"perturbation {item!r}: unknown; known: {', '.join(KINDS)}")
        if family not in KINDS[name].families:
            continue
        if mods is not None and name != "remove" and not set(KINDS[name].default_modalities[family]) & set(mods):
            continue  # a kind none of whose modalities was chosen
        if "@" in item:
            specs = [item]
        elif name == "remove":
            specs = [f"remove@{s}" for s in REMOVE_SETS[family]]
        else:
            values = {"noise": DEFAULT_SNRS, "shift": DEFAULT_SHIFTS}.get(name, rates)
            specs = [f"{name}@{v:g}" for v in values]
        for s in specs:
            try:
                p = parse(s, family, mods)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            if p.name != "remove" or mods is None or set(p.modalities) <= set(mods):
                out.append(p)
    return list(dict.fromkeys(out))


class PerturbedSplit:
    """A SplitTensors whose batches come perturbed (per sample, from the evaluation seed), under its own name so
    that `Method.cached` keys it apart from the clean split. Everything else is the clean split's."""

    batches = SplitTensors.batches

    def __init__(self, split: SplitTensors, perturbation: Perturbation, special: dict[str, SpecialIds],
                 keys: Iterable[str], seed: int = EVAL_SEED):
        self.split, self.perturbation, self.special, self.keys_read = split, perturbation, special, frozenset(keys)
        self.seed = seed
        self.name = f"{split.name}|{perturbation.label}|{letters(perturbation.modalities)}|seed{seed}"

    def __len__(self) -> int:
        return len(self.split)

    def __getattr__(self, attr):  # ids, tensors, seq_names, ...: the clean split's
        return getattr(self.split, attr)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        clean = self.split.batch(idx)
        keys = [k for k in clean if k not in ID_KEYS or k in self.keys_read]  # ids the model does not read: as is
        return self.perturbation.apply(clean, self.special, self.seed, keys)


@dataclass
class LoadedRun:
    """A run rebuilt for evaluation: its model (best.pt loaded, eval mode), the dataset's manifest, the test split,
    the batch keys the model reads and the special ids of the token ids among them."""
    run_dir: Path
    resolved: dict
    metrics: dict
    model: torch.nn.Module
    manifest: object
    test: SplitTensors
    reads: frozenset
    special: dict
    runtime: RuntimeConfig
    device: torch.device

    @property
    def family(self) -> str:
        return self.manifest.family


def _run_file(run_dir: Path, name: str) -> Path:
    f = run_dir / name
    if not f.is_file():
        raise FileNotFoundError(f"{run_dir}: no {name}; robustness evaluates finished runs of `msarepro train` "
                                f"(or the sweep's runs/sweep/METHOD/DATASET/SEED): train it first, or let it finish "
                                f"(`msarepro train ... --resume`)")
    return f


def load_run(run_dir: str | Path, device: str | None = None) -> LoadedRun:
    """Rebuild a run's model as training built it and load its valid-selected checkpoint (best.pt)."""
    from ..data import ensure_dataset, load_dataset
    from ..data.format import should_load_lazily
    from ..data.loader import to_tensors
    from ..methods import build_method, get_method
    from ..runtime import compiled, configure, pick_device, seed_everything
    from ..train import _stage_of, _stage_starts, load_weights, provide_inputs
    from ..robustness.special import for_tokens

    run_dir = Path(run_dir)
    best_path = _run_file(run_dir, "best.pt")
    resolved = json.loads(_run_file(run_dir, "config.json").read_text(encoding="utf-8"))
    metrics = json.loads(_run_file(run_dir, "metrics.json").read_text(encoding="utf-8"))
    method = resolved.get("variant", {}).get("method", resolved["model"])
    cls = get_method(method)
    cfg = config.build(cls.Config, resolved["method"], f"methods.{method}")
    data = config.build(config.DataConfig, resolved.get("data") or {}, "data")  # older runs: the defaults
    rt = config.build(RuntimeConfig, resolved.get("runtime") or {}, "runtime")
    data_dir = ensure_dataset(resolved["dataset"], data.root, data.synth_seed, data.synth_scale)
    ds = load_dataset(data_dir, verify_hashes=data.verify_hashes, splits=("test",),
                      lazy=should_load_lazily(data_dir, rt, ("test",)))
    ds.manifest = dataclasses.replace(ds.manifest, preset=resolved.get("preset") or ds.manifest.preset)
    requests = {r.key: r.tokenizer for r in cls.token_requests(cfg, ds.manifest)}
    tokens = provide_inputs(method, cfg, ds, data.root)
    if "tokens" in resolved and tokens != resolved["tokens"]:
        raise ConfigError(f"{run_dir / 'config.json'}: the run read tokens {resolved['tokens']}, the dataset now "
                          f"gives {tokens}; re-create the dataset's tokens as they were, or retrain")
    special = for_tokens(ds.manifest.name, ds.manifest.modalities, requests, tokens)
    reads = frozenset(cls.required_modalities(cfg, ds.manifest)) | frozenset(tokens)
    dev = pick_device(device)
    configure(rt, dev)
    seed_everything(resolved["seed"])
    test = to_tensors(ds)["test"]
    model = build_method(method, cfg, ds.manifest).to(dev)
    saved = torch.load(best_path, map_location="cpu", weights_only=False)
    load_weights(model, saved, best_path)
    model.enter_stage(_stage_of(_stage_starts(model, cfg), saved["epoch"]))  # the best epoch's stage (SFTTR)
    compiled(model, rt)
    return LoadedRun(run_dir, resolved, metrics, model.eval(), ds.manifest, test, reads, special, rt, dev)


def _run_label(run_dir: Path) -> str:
    try:
        return str(run_dir.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(run_dir.resolve())


def evaluate_run(run: LoadedRun, perturbations: Sequence[Perturbation], seed: int = EVAL_SEED,
                 progress: bool = True) -> list[dict]:
    """Rows (COLUMNS) of every perturbation, scored through train.predict. Each is applied as named, whether or
    not the model reads what it changes (a text-only model under remove@A scores as on clean data: that is its
    robustness to losing the audio)."""
    from ..runtime import progress as bar
    from ..train import predict, score

    r = run.resolved
    y = run.test.tensors["y"].numpy()
    rows, mismatched = [], []
    for p in bar(perturbations, f"robustness {r['model']}/{run.manifest.name}/{r['seed']}", unit="perturbation",
                 enabled=progress):
        run.model.clear_cached()  # no clean (or other perturbation's) per-clip values survive
        split = PerturbedSplit(run.test, p, run.special, run.reads, seed)
        outputs, _ = predict(run.model, split, run.device, batch_size=PREDICT_BATCH, runtime=run.runtime)
        scores = score(run.manifest, outputs, y)
        if p.identity and scores != run.metrics["test"]:
            mismatched.append(p.label)
        base = {"dataset": run.manifest.name, "method": r["model"], "seed": r["seed"], "run": _run_label(run.run_dir),
                "perturbation": p.name, "modalities": letters(p.modalities), "severity": float(p.severity)}
        rows += [{**base, "metric": k, "value": float(v)} for k, v in scores.items()]
    run.model.clear_cached()
    if mismatched:
        print(f"msarepro: note: {run.run_dir}: {', '.join(mismatched)} (no change) did not reproduce metrics.json's "
              "test metrics exactly: another device, CPU or library version than the run's", file=sys.stderr)
    return rows


def _score_dir(d: str, device, items, rates, modalities, seed, progress, threads) -> list[dict]:
    """One run's rows (evaluate_run over its family's plan), scored with `threads` torch threads when > 0."""
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    run = load_run(d, device)
    ps = plan(run.family, items, rates, modalities)
    if not ps:
        print(f"msarepro: note: {d}: none of the perturbations applies to {run.family} dataset "
              f"{run.manifest.name}", file=sys.stderr)
    rows = evaluate_run(run, ps, seed, progress)
    print(f"{d}: {len({(x['perturbation'], x['modalities'], x['severity']) for x in rows})} perturbations in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def evaluate_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None, items: Sequence[str] | None = None,
                  rates: Sequence[float] = DEFAULT_RATES, modalities: Iterable[str] | None = None,
                  device: str | None = None, seed: int = EVAL_SEED, progress: bool = True,
                  out_dir: str | Path | None = None, workers: int = 1, threads: int = 0) -> pd.DataFrame:
    """Every run under its family's perturbations -> the long table, written atomically to `out` (one CSV) and/or
    to `out_dir`/<dataset>.csv (one CSV per dataset, the layout report/robustness.py reads). `workers` > 1 scores
    that many runs at a time, each in its own process (the same rows: each run is scored alone); `threads` > 0 sets
    the torch threads each run is scored with (0: this process's count)."""
    if out is None and out_dir is None:
        raise ConfigError("say where the table goes: an output file (--out) or folder (--out-dir)")
    if not run_dirs:
        raise ConfigError("no run directories given")
    modalities = None if modalities is None else list(modalities)
    if modalities is not None:
        known = {m for ms in FAMILY_MODALITIES.values() for m in ms}
        bad = sorted(set(modalities) - known)
        if bad:
            raise ConfigError(f"--modalities: unknown {', '.join(bad)}; known: {', '.join(sorted(known))}")
    for d in run_dirs:  # every run checked before any is evaluated
        for name in ("best.pt", "config.json", "metrics.json"):
            _run_file(Path(d), name)
    args = (device, items, rates, modalities, seed, progress and workers <= 1, threads)
    if workers > 1 and len(run_dirs) > 1:
        # Each run is scored on its own, so processes give the rows one process gives, in the same order.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(run_dirs)), mp_context=multiprocessing.get_context("spawn")) as ex:
            parts = list(ex.map(_score_dir, [str(d) for d in run_dirs], *zip(*[args] * len(run_dirs))))
    else:
        before = torch.get_num_threads()
        try:
            parts = [_score_dir(str(d), *args) for d in run_dirs]
        finally:
            torch.set_num_threads(before)
    rows = [r for part in parts for r in part]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if out is not None:
        write_csv(table, out)
    if out_dir is not None:
        for dataset, part in table.groupby("dataset", sort=True):
            write_csv(part, Path(out_dir) / f"{dataset}.csv")
    return table


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """The long table as CSV (floats written in full, so that values read back equal those computed), atomically."""
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)
