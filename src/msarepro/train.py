"""The one training loop for every method.

Seeds everything; trains; after each epoch predicts VALID and TEST, saves those predictions (so that other
selection protocols can be computed later without retraining), selects on VALID only, checkpoints, and stops
early when VALID has not improved for `patience` epochs. The reported TEST metrics are those of the epoch chosen
on VALID. `resume=True` continues from the last checkpoint and ends with the same result, bit for bit on CPU, as
an uninterrupted run: shuffling uses a generator seeded per epoch and the RNG states are checkpointed.
A method may train in stages (`Method.stage_starts`, e.g. SFTTR's unimodal pretraining, then fusion): each stage
gets a fresh optimizer and its own schedule (warm-up and decay over that stage's epochs); the checkpoint holds
the current stage's optimizer and scheduler. Per-epoch counters a method reports (`Method.count`) become
history.csv columns `train_<name>`.

How it runs (`runtime:` in params.yaml, msarepro.runtime): precision bf16 puts forward and losses under bfloat16
autocast (outputs are cast to float32 before softmax, metrics and saving), tf32 sets CUDA's float32 matmul mode,
compile compiles the model's forward in place (state_dict keys unchanged), pin_memory pins batches before their
non-blocking copy to a GPU. config.json records the runtime settings; those that can change numbers
(`RuntimeConfig.numerics()`) are part of the config a resume must match. No step synchronises with the device:
the loss terms are summed on the device in float64 (the order and values of the Python float sum they replace,
so history.csv is unchanged) and read once per epoch. A method's frozen sub-computations are computed once per
clip and split (`Method.cached`): the loop says which split each pass reads (`Method.use_split`).

Before anything is built, the method checks the dataset (`Method.check`: every precondition, one ConfigError) and
the token ids it asks for (`Method.token_requests`) are put into the dataset (`data.tokens.provide_tokens`, cached
under <data.root>/.tokens); config.json records them under "tokens" (tokenizer, vocabulary hash, length, source).

Run directory (all files written atomically):
    metrics.json  predictions.csv  history.csv  config.json  best.pt  checkpoint.pt  timing.json
    epochs/epoch_NNN.npz   per-epoch outputs on valid and test (regression: values; classification: probs)
    epochs/method_NNN.npz  per-epoch arrays of the method's own (Method.epoch_artifacts), only for methods with any
best.pt ({"model", "epoch"}) and checkpoint.pt ({"model", "optimizer", "scheduler", "state", "rng", "config"}) hold
the model's state_dict without the parameters of its frozen modules (`Method.frozen_modules`: weights from outside
that never change, e.g. a frozen CLIP); those are rebuilt with the model, and the file stores their fingerprint
instead ("frozen": {"sha256", "tensors", "bytes"}), which `load_weights`, the one loader (resume, the papers'
figures), verifies. Momentum encoders, queues and every buffer stay in the files.
timing.json (wall-clock seconds, samples/s, the device type) is the only file that differs between two runs of the same inputs;
DVC leaves it out of the outputs' hashes (.dvcignore) and git ignores it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__, metrics
from .config import ConfigError, MethodConfig, Params, RuntimeConfig, to_jsonable
from .data import ensure_dataset, load_dataset
from .data.format import should_load_lazily
from .data.loader import SplitTensors, to_device, to_tensors
from .io import atomic_path, write_json, write_text
from .methods import build_method, get_method, method_config, method_of
from .runtime import (autocast, compiled, configure, pick_device, pin, progress, rng_state, seed_everything,
                      set_rng_state)


def make_optimizer(model, cfg: MethodConfig) -> torch.optim.Optimizer:
    groups = model.param_groups() or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"methods.{model.name}.optimizer: {cfg.optimizer!r}; expected adam or adamw")


def make_scheduler(opt, cfg: MethodConfig, steps_per_epoch: int, epochs: int | None = None):
    """The schedule of one training stage of `epochs` epochs (default: the whole run, cfg.max_epochs)."""
    total = max(1, (cfg.max_epochs if epochs is None else epochs) * steps_per_epoch)
    warm = int(cfg.warmup_ratio * total)
    if cfg.scheduler == "none":
        return None
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=max(1, cfg.patience // 2))
    if cfg.scheduler in ("cosine", "linear"):
        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            p = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * p)) if cfg.scheduler == "cosine" else max(0.0, 1 - p)
        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    raise ConfigError(f"scheduler {cfg.scheduler!r}: expected none, cosine, linear or plateau")


@torch.no_grad()
def predict(model, split: SplitTensors, device, batch_size: int = 256,
            runtime: RuntimeConfig | None = None) -> tuple[np.ndarray, float]:
    """-> (outputs, mean task loss). Regression: (N,) values; classification: (N, C) probabilities. The forward
    pass runs under `runtime`'s precision; outputs and the loss are float32 (the loss summed in float64 on the
    device, read once at the end)."""
    runtime = runtime or RuntimeConfig()
    model.eval()
    model.use_split(split)
    pinned = pin(runtime, device)
    outs, loss_sum = [], torch.zeros((), dtype=torch.float64, device=device)
    for batch in split.batches(batch_size, shuffle=False):
        batch = to_device(batch, device, pinned)
        with autocast(runtime, device):
            pred = model(batch)["pred"]
        pred = pred.float()
        loss_sum = loss_sum + model.task_loss(pred, batch["y"]).double() * len(batch["y"])
        outs.append(pred.softmax(-1) if model.task == "classification" else pred)
    return torch.cat(outs).cpu().numpy(), float(loss_sum) / len(split)


def score(manifest, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = outputs.argmax(-1) if manifest.task == "classification" else outputs
    return metrics.compute(manifest.metric_family, pred, y, manifest.f1_average)


@dataclass
class RunSpec:
    model: str
    dataset: str
    seed: int
    out: Path
    resume: bool = False
    device: str | None = None
    progress: bool = True
    preset: str | None = None  # `train --preset`: this params.yaml preset instead of the manifest's


def known_presets(params: Params) -> set[str]:
    """Every dataset preset params.yaml names (under methods.<m>.presets, variants' settings, pretrain.presets)."""
    blocks = [*params.methods.values(), *(v.settings for v in params.variants.values())]
    names = {p for b in blocks if isinstance(b, dict) for p in (b.get("presets") or {})}
    return names | set(params.pretrain.presets or {})


def with_preset_override(params: Params, ds, preset: str | None):
    """A copy of `ds` whose manifest names `preset` (`train --preset`), so that every setting resolves as for that
    dataset (e.g. the embedded synth-mosi preset on a dataset in MOSI's real shapes); `ds` itself when None. The
    caller's dataset and manifest are left as they were (the split arrays are shared, not copied)."""
    if not preset:
        return ds
    known = known_presets(params)
    if preset not in known:
        raise ConfigError(f"--preset {preset!r}: params.yaml has no such preset (under methods.<m>.presets, "
                          f"variants or pretrain.presets); known: {', '.join(sorted(known))}")
    return dataclasses.replace(ds, manifest=dataclasses.replace(ds.manifest, preset=preset))


def run(params: Params, spec: RunSpec) -> dict:
    """Train one (method, dataset, seed) and write the run directory; returns metrics.json's content."""
    out = Path(spec.out)
    data_dir = ensure_dataset(spec.dataset, params.data.root, params.data.synth_seed, params.data.synth_scale)
    ds = load_dataset(data_dir, verify_hashes=params.data.verify_hashes,  # runtime.load: whole, or read per batch
                      lazy=should_load_lazily(data_dir, params.runtime))
    ds = with_preset_override(params, ds, spec.preset)
    cfg = method_config(params, spec.model, ds.manifest.preset or ds.manifest.name)  # a variant's settings applied
    method = method_of(params, spec.model)  # the registered method behind a variant name
    requests = _token_requests(method, cfg, ds.manifest)  # for training drops: before provide_inputs
    tokens = provide_inputs(method, cfg, ds, params.data.root)  # the dataset checked, before anything loads
    manifest = ds.manifest
    device = pick_device(spec.device)
    rt = params.runtime
    configure(rt, device)  # bf16 support checked, TF32 set (CUDA)
    seed_everything(spec.seed)
    splits = to_tensors(ds)
    model = build_method(method, cfg, manifest).to(device)
    inputs = model.on_train_start()  # external inputs, e.g. AE-MT's pretrained encoders
    frozen = frozen_record(model)  # once per run: the fingerprint of what checkpoints leave out
    compiled(model, rt)  # in place: the same module, the same state_dict keys
    steps = math.ceil(len(splits["train"]) / cfg.batch_size)
    starts = _stage_starts(model, cfg)
    drops = training_drops(method, cfg, manifest, requests, tokens, len(splits["train"]), spec.seed)

    def build_stage(k: int):
        return stage_optimizer(model, cfg, starts, k, steps)
    y = {s: splits[s].tensors["y"].numpy() for s in ("valid", "test")}

    resolved = {"model": spec.model, "dataset": spec.dataset, "dataset_name": manifest.name, "seed": spec.seed,
                "preset": manifest.preset or manifest.name, "method": to_jsonable(cfg),
                "data": to_jsonable(params.data), "runtime": to_jsonable(rt), "dataset_files": manifest.files,
                "versions": {"msarepro": __version__, "torch": torch.__version__}}
    if spec.model != method:
        v = params.variants[spec.model]
        resolved["variant"] = {"name": spec.model, "method": method, "settings": to_jsonable(v.settings),
                               "pretrain": to_jsonable(v.pretrain)}
    if model.adapted:  # settings fitted to the data's sizes (Method.fit_heads); absent when none was
        resolved["adapted"] = model.adapted
    if inputs:
        resolved["method_inputs"] = inputs
    if tokens:
        resolved["tokens"] = tokens
    state = {"epoch": -1, "best_epoch": -1, "best_value": None, "bad_epochs": 0, "history": []}
    ckpt_path = out / "checkpoint.pt"
    stage = 0
    if spec.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if _identity(ck["config"]) != _identity(resolved):
            raise ConfigError(f"{ckpt_path}: was written with a different config; resume needs the same model, "
                              "dataset, seed and settings (or start afresh without --resume)")
        load_weights(model, ck, ckpt_path, frozen)
        stage = _stage_of(starts, ck["state"]["epoch"])  # the stage whose optimizer the checkpoint holds
        opt, sched = build_stage(stage)
        opt.load_state_dict(ck["optimizer"])
        if sched is not None:
            sched.load_state_dict(ck["scheduler"])
        state = ck["state"]
        set_rng_state(ck["rng"])
    else:
        opt, sched = build_stage(stage)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", resolved)

    best_path = out / "best.pt"
    sel = cfg.select_metric
    t0 = time.perf_counter()
    n_seen = 0
    epochs = range(state["epoch"] + 1, cfg.max_epochs)
    bar = progress(epochs, f"{spec.model}/{manifest.name}/{spec.seed}", unit="epoch", enabled=spec.progress)
    for epoch in bar:
        if state["bad_epochs"] >= cfg.patience:
            break
        if _stage_of(starts, epoch) != stage:  # a new stage: fresh optimizer state and schedule
            stage = _stage_of(starts, epoch)
            opt, sched = build_stage(stage)
        model.use_split(splits["train"] if drops is None else None)  # dropped inputs: no per-clip cache
        model.on_epoch_start(epoch, splits["train"])
        if drops is not None:
            drops.start_epoch(epoch)
        model.pop_epoch_counters()  # count only what this epoch's training batches report
        model.train()
        gen = torch.Generator().manual_seed(spec.seed * 1000 + epoch)
        terms_sum: dict[str, torch.Tensor] = {}  # float64 on the device: no host synchronisation per step
        zero = torch.zeros((), dtype=torch.float64, device=device)
        pinned = pin(rt, device)
        nb = 0
        for b, batch in enumerate(splits["train"].batches(cfg.batch_size, shuffle=True, generator=gen,
                                                          drop_last=_drop_last(model, cfg, splits))):
            _fault_point(epoch, b)
            if drops is not None:
                batch = drops.apply(batch)
            batch = to_device(batch, device, pinned)
            terms = train_step(model, batch, epoch, opt, sched, cfg, rt, device)
            for k, v in terms.items():  # exactly the float64 sum of the terms' float32 values, as Python's was
                terms_sum[k] = terms_sum.get(k, zero) + v.detach().double()
            nb += 1
            n_seen += len(batch["y"])
        terms_sum = _to_host(terms_sum)  # the epoch's one read of the loss terms
        row = {"epoch": epoch, "train_loss": sum(terms_sum.values()) / max(nb, 1),
               **{f"train_{k}": v / max(nb, 1) for k, v in terms_sum.items()},
               **{f"train_{k}": v for k, v in model.pop_epoch_counters().items()},  # epoch totals
               "lr": opt.param_groups[0]["lr"]}
        outputs = {}
        for s in ("valid", "test"):
            outputs[s], row[f"{s}_loss"] = predict(model, splits[s], device, runtime=rt)
            for k, v in score(manifest, outputs[s], y[s]).items():
                row[f"{s}_{k}"] = v
        if sched is not None and cfg.scheduler == "plateau":
            sched.step(row["valid_loss"])
        with atomic_path(out / "epochs" / f"epoch_{epoch:03d}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, valid=outputs["valid"], test=outputs["test"])
        arts = model.epoch_artifacts(epoch)  # e.g. Self-MM's generated labels: kept with the run, per epoch
        if arts:
            with atomic_path(out / "epochs" / f"method_{epoch:03d}.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **arts)
        key = "valid_loss" if sel == "loss" else f"valid_{sel}"
        if key not in row:
            raise ConfigError(f"methods.{method}.select_metric: {sel!r} is not a validation metric of "
                              f"{manifest.name}; choose 'loss' or one of {sorted(k[6:] for k in row if k.startswith('valid_'))}")
        value = row[key]
        if state["best_value"] is None or metrics.better(sel, value, state["best_value"]):
            state.update(best_value=value, best_epoch=epoch, bad_epochs=0)
            _save(best_path, {"model": saved_weights(model, frozen), "epoch": epoch, **_frozen_entry(frozen)})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["history"].append(row)
        _save(ckpt_path, {"model": saved_weights(model, frozen), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict() if sched is not None else None,
                          "state": state, "rng": rng_state(), "config": resolved, **_frozen_entry(frozen)})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(valid=f"{value:.4f}", best=state["best_epoch"])
    elapsed = time.perf_counter() - t0
    return _finish(out, spec, manifest, splits, state, sel, y, elapsed, n_seen, device.type)


def _token_requests(method: str, cfg: MethodConfig, manifest) -> dict[str, str] | None:
    """{batch key: tokenizer} of the method's token requests, read before data.tokens.provide_tokens changes the
    manifest's records, for the training drops; None when cfg.train_missing_rate is 0 (no drops)."""
    if cfg.train_missing_rate <= 0:
        return None
    from .methods import get_method
    return {r.key: r.tokenizer for r in get_method(method).token_requests(cfg, manifest)}


def training_drops(method: str, cfg: MethodConfig, manifest, requests: dict[str, str] | None, tokens: dict,
                   n_train: int, seed: int):
    """LNLN's training drops (robustness/training.py) when cfg.train_missing_rate > 0, else None: on the batch keys
    the model reads, token ids with their tokenizer's special ids (robustness.special.for_tokens, as the
    evaluation finds them)."""
    if requests is None:
        return None
    from .methods import get_method
    from .robustness.special import for_tokens
    from .robustness.training import TrainingDrops
    special = for_tokens(manifest.name, manifest.modalities, requests, tokens or {})
    keys = set(get_method(method).required_modalities(cfg, manifest)) | set(tokens or {})
    return TrainingDrops(cfg.train_missing_rate, manifest.family, n_train, seed, special, keys)


def stage_optimizer(model, cfg: MethodConfig, starts: tuple[int, ...], k: int, steps_per_epoch: int):
    """A fresh optimizer and schedule for training stage k (of `starts`, the method's `stage_starts`), over the
    parameters the method trains in it (`enter_stage` first). -> (optimizer, scheduler or None)."""
    model.enter_stage(k)
    opt = make_optimizer(model, cfg)
    end = starts[k + 1] if k + 1 < len(starts) else cfg.max_epochs
    return opt, make_scheduler(opt, cfg, steps_per_epoch, end - starts[k])


def train_step(model, batch: dict[str, torch.Tensor], epoch: int, opt, sched, cfg: MethodConfig,
               rt: RuntimeConfig, device) -> dict[str, torch.Tensor]:
    """One optimisation step of the loop on a batch already on `device`: forward and the method's loss terms under
    the runtime's precision, backward, gradient clipping (cfg.grad_clip), the optimizer's step and a per-step
    schedule's. -> the loss terms (device tensors, not read: no host synchronisation). `msarepro check-presets`
    times this same function."""
    with autocast(rt, device):
        out_b = model(batch)
        terms = model.losses(out_b, batch, epoch)
        loss = sum(terms.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    if sched is not None and cfg.scheduler != "plateau":
        sched.step()
    return terms


def provide_inputs(model: str, cfg: MethodConfig, ds, data_root: str | Path) -> dict[str, dict]:
    """What every builder of a method's model does first (training, the papers' figures): the method's `check` on
    the dataset (one ConfigError listing every problem, before any tokenizer or weights load), then the token ids
    it asks for put into `ds`'s splits (in place; derived ids cached under <data_root>/.tokens). -> the tokens'
    record ({} when the method reads no token ids), which config.json stores under "tokens"."""
    cls = get_method(model)
    cls.check(cfg, ds.manifest)
    requests = cls.token_requests(cfg, ds.manifest)
    if not requests:
        return {}
    from .data.tokens import provide_tokens
    return provide_tokens(ds, requests, Path(data_root) / ".tokens")


# ---- checkpoints: the model's weights without its frozen modules ----------------------------------------------

def frozen_keys(model) -> list[str]:
    """state_dict keys of the parameters of `model.frozen_modules()` (matched by tensor identity), sorted. Their
    buffers are not among them: a buffer may change in training (BatchNorm statistics) and stays in checkpoints."""
    params = {id(p): p for m in model.frozen_modules() for p in m.parameters()}
    trained = [n for n, p in model.named_parameters() if id(p) in params and p.requires_grad]
    if trained:
        raise ConfigError(f"methods.{model.name}: frozen_modules() holds parameters that train ({', '.join(trained[:3])}"
                          f"{', ...' if len(trained) > 3 else ''}); a frozen module's parameters need requires_grad "
                          "False, or it is not frozen")
    return sorted(k for k, t in model.state_dict(keep_vars=True).items() if id(t) in params)


def fingerprint(model, keys: list[str]) -> str:
    """SHA-256 over the named tensors (name, dtype, shape and bytes of each, in order), device-independent."""
    h = hashlib.sha256()
    state = model.state_dict()
    for k in keys:
        t = state[k].detach().cpu().contiguous()
        h.update(json.dumps([k, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def frozen_record(model) -> dict | None:
    """{"sha256", "tensors", "bytes"} of the frozen modules' parameters, or None when the model has none."""
    keys = frozen_keys(model)
    if not keys:
        return None
    state = model.state_dict()
    return {"sha256": fingerprint(model, keys), "tensors": len(keys),
            "bytes": sum(state[k].numel() * state[k].element_size() for k in keys)}


def saved_weights(model, frozen: dict | None) -> dict[str, torch.Tensor]:
    """The state_dict a checkpoint stores: every entry but the frozen modules' parameters."""
    state = model.state_dict()
    if frozen is None:
        return state
    skip = set(frozen_keys(model))
    return {k: v for k, v in state.items() if k not in skip}


def _frozen_entry(frozen: dict | None) -> dict:
    return {"frozen": frozen} if frozen else {}  # files of models without frozen modules stay as they were


def load_weights(model, saved: dict | str | Path, path: str | Path | None = None, frozen: dict | None = None):
    """Load a checkpoint's weights into `model` (built as in training): the one loader of checkpoint.pt and best.pt.
    `saved`: the loaded file (or its path). Strict on every saved entry; the frozen modules' parameters, which the
    file leaves out, must have the fingerprint the file records (`frozen`: the model's record, if already computed).
    A file that records none must hold every entry. Refusals: one ConfigError naming the file. -> model."""
    if not isinstance(saved, dict):
        path = Path(saved)
        saved = torch.load(path, map_location="cpu", weights_only=False)
    where = path or "checkpoint"
    keys = frozen_keys(model)
    want = saved.get("frozen")
    if want is not None:
        have = frozen if frozen is not None else frozen_record(model)
        if have is None or have["sha256"] != want["sha256"]:
            held = f"frozen weights with SHA-256 {have['sha256']}" if have else "no frozen modules"
            raise ConfigError(f"{where}: was trained with frozen weights of SHA-256 {want['sha256']} ({want['tensors']} "
                              f"tensors), but this model holds {held}; build it from the same pretrained model files "
                              "(text encoder, CLIP) as the run, or train afresh")
    state = model.state_dict()
    expected = set(state) - (set(keys) if want is not None else set())
    missing, unexpected = sorted(expected - set(saved["model"])), sorted(set(saved["model"]) - expected)
    reshaped = [k for k in sorted(expected & set(saved["model"])) if isinstance(state[k], torch.Tensor)
                and tuple(saved["model"][k].shape) != tuple(state[k].shape)]
    if missing or unexpected or reshaped:
        what = [f"{len(missing)} entries missing ({', '.join(missing[:2])}{', ...' if len(missing) > 2 else ''})"
                if missing else "", f"{len(unexpected)} unexpected ({', '.join(unexpected[:2])}"
                f"{', ...' if len(unexpected) > 2 else ''})" if unexpected else "",
                f"{len(reshaped)} of other shapes (e.g. {reshaped[0]}: {tuple(saved['model'][reshaped[0]].shape)} "
                f"saved, {tuple(state[reshaped[0]].shape)} here)" if reshaped else ""]
        raise ConfigError(f"{where}: holds the weights of another model ({', '.join(w for w in what if w)}); load it "
                          "into the model and settings it was trained with")
    model.load_state_dict(saved["model"], strict=False)  # every entry checked above; the frozen ones stay as built
    model.clear_cached()  # per-clip outputs computed with other weights
    return model


def _to_host(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Device scalars -> Python floats, in one transfer."""
    if not sums:
        return {}
    return dict(zip(sums, torch.stack(list(sums.values())).tolist()))


def _identity(config: dict) -> dict:
    """What a resume must match in config.json: everything but the runtime settings that cannot change numbers
    (pin_memory, load), which a resumed run may change."""
    rt = config.get("runtime")
    if rt is None:
        return config
    return {**config, "runtime": RuntimeConfig(**rt).numerics()}


def _stage_starts(model, cfg) -> tuple[int, ...]:
    starts = tuple(model.stage_starts())
    if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise ConfigError(f"methods.{model.name}: stage_starts() must ascend strictly from epoch 0; got {starts}")
    return starts


def _stage_of(starts: tuple[int, ...], epoch: int) -> int:
    """Index of the stage that epoch belongs to (epoch -1, before training, is in stage 0)."""
    return max(k for k, s in enumerate(starts) if s <= max(epoch, 0))


def _drop_last(model, cfg, splits) -> bool:
    # BatchNorm cannot train on a batch of one sample.
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return has_bn and len(splits["train"]) % cfg.batch_size == 1


def _finish(out: Path, spec: RunSpec, manifest, splits, state, sel, y, elapsed, n_seen,
            device_type: str) -> dict:
    best = state["best_epoch"]
    with np.load(out / "epochs" / f"epoch_{best:03d}.npz") as z:
        outputs = {"valid": z["valid"], "test": z["test"]}
    result = {
        "model": spec.model, "dataset": spec.dataset, "seed": spec.seed, "best_epoch": best,
        "epochs_run": state["epoch"] + 1, "select_metric": sel, "protocol": "valid-selected, test once",
        "metric_family": manifest.metric_family, "f1_average": manifest.f1_average,
        "valid": score(manifest, outputs["valid"], y["valid"]),
        "test": score(manifest, outputs["test"], y["test"]),
    }
    frames = []
    for s in ("valid", "test"):
        o = outputs[s]
        df = pd.DataFrame({"split": s, "id": splits[s].ids, "y_true": y[s]})
        if manifest.task == "classification":
            df["y_pred"] = o.argmax(-1)
            for k in range(o.shape[1]):
                df[f"p_{k}"] = o[:, k]
        else:
            df["y_pred"] = o
        frames.append(df)
    with atomic_path(out / "predictions.csv") as tmp:
        pd.concat(frames).to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out / "history.csv") as tmp:
        pd.DataFrame(state["history"]).to_csv(tmp, index=False, float_format="%.6g")
    write_json(out / "metrics.json", result)
    write_json(out / "timing.json", {"train_seconds": elapsed, "train_samples": n_seen,
                                     "samples_per_second": n_seen / elapsed if elapsed > 0 else None,
                                     "device": device_type})
    write_text(out / "epochs" / "ids.json", pd.Series({s: splits[s].ids for s in ("valid", "test")}).to_json())
    return result


def _fault_point(epoch: int, batch: int) -> None:
    """Fault injection for the resume tests: MSAREPRO_KILL_AT=EPOCH:BATCH kills this process with SIGKILL there."""
    at = os.environ.get("MSAREPRO_KILL_AT")
    if at and at == f"{epoch}:{batch}":
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def _save(path: Path, obj) -> None:
    # Through a file object: given a path, torch.save names the archive's records after the (random) temporary
    # file name, and the checkpoint's bytes, hence DVC's hash and dvc.lock, would differ on every run.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)

