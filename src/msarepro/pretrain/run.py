"""`msarepro pretrain`: AE-MT's autoencoder pretraining on a dataset's unlabeled pool (section 3.2).

Settings: the `pretrain:` section of params.yaml (`config.PretrainConfig`, with `presets:` per dataset preset as under
`methods:`), and for a variant of AE-MT (`variants:`, e.g. Table 5's w/o MCD) its `pretrain:` over them
(`methods.pretrain_settings`). The encoder architecture (width, heads, layers, kernel, transformer | lstm, pooled
length) is that of the run name pretrained for (`methods.aemt`, or the variant's settings over it: w/o TR's
`encoder: lstm`) on the same dataset, so pretraining and fine-tuning cannot disagree about it; encoders.pt
records it and fine-tuning checks it.

Pool (`pretrain.pool`, Section 4.1): `unlabeled`, the dataset's unlabeled split (CH-SIMS v2's 10,161 clips;
synth-sims); `train`, the labelled training clips with their labels ignored (the paper's choice on MOSEI, which
has no unlabeled release); `both`, the two together. No fallback: `unlabeled` or `both` on a dataset without an
unlabeled split is an error that says how to provide one. The pool and its size are recorded in metrics.json
and encoders.pt (fine-tuning copies them into each AE-MT run's config.json). A fixed `heldout` fraction of the
pool is kept aside (the paper splits its unlabeled clips into a training and a test part): the held-out figures
are computed each epoch with a fixed tampering, and the encoders of the epoch with the lowest held-out L_ae are
kept.

Output directory (written atomically):
    encoders.pt   {"spec", "in_dims", "encoders": {m: state_dict}, "config", "dataset", "dataset_files", "seed",
                   "pool", "pool_size", "pool_splits", "key" (methods.pretrain_settings: what the
                   pipeline's pretrain/<dataset>/<key>/ is named by)}
    history.csv   per epoch: train_/heldout_ recon, consistency, loss, tamper_acc; lr (a DVC plot)
    metrics.json  the pool, its size per split, held-out figures before training and at the kept epoch, chance
                  level of tamper detection
    timing.json   wall-clock seconds; apart from the results (and out of DVC's hashes, .dvcignore), so that the
                  output's hash is the same on every run and machine
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..config import ConfigError, Params, PretrainConfig
from ..data import DATASETS, ensure_dataset, load_dataset
from ..data.format import Split, should_load_lazily
from ..data.loader import SplitTensors, to_device
from ..data.placement import raw_dir_for
from ..io import atomic_path, write_json
from ..methods import method_config, method_of, pretrain_settings
from ..methods.aemt import AEMT
from ..methods.modality_encoder import MODS, EncoderSpec, encoder_inputs
from ..runtime import pick_device, seed_everything
from ..runtime import progress as progress_bar
from .autoencoder import Autoencoders, consistency_loss, reconstruction_loss, tamper


def pretraining_of(params: Params, name: str, preset: str) -> tuple[PretrainConfig, str, EncoderSpec]:
    """The pretraining a run of `name` (AE-MT or one of its variants) loads, for a dataset preset -> (its
    PretrainConfig, the key naming its output, the encoder architecture fine-tuning will load)."""
    if method_of(params, name) != AEMT.name:
        raise ConfigError(f"pretrain --model {name}: a {method_of(params, name)} run loads no pretrained encoders; "
                          f"name {AEMT.name} or one of its variants (params.yaml `variants:`)")
    cfg, key = pretrain_settings(params, name, preset)
    return cfg, key, AEMT.encoder_spec(method_config(params, name, preset))


POOL_SPLITS = {"unlabeled": ("unlabeled",), "train": ("train",), "both": ("unlabeled", "train")}


def _no_unlabeled_split(ds, pool: str, preset: str) -> ConfigError:
    m = ds.manifest
    info = DATASETS.get(m.name)
    files = [f.filename for f in info.extra.get("files", ()) if f.split == "unlabeled"] if info else []
    how = (f"place {files[0]} at {raw_dir_for(ds.root, m.name) / files[0]} and re-import "
           f"(msarepro data download {m.name})" if files else "it has no unlabeled release")
    return ConfigError(f"pretrain.pool: {pool!r}, but dataset {m.name!r} ({ds.root}) has no unlabeled split; "
                       f"{how}, or set pretrain.presets.{preset}.pool: train")


def pool_split(ds, pool: str, preset: str) -> tuple[SplitTensors, dict[str, int]]:
    """The clips pretraining reads (`pretrain.pool`) -> (their tensors, {split: clip count}). Only the features
    are read; the pool is built as an unlabeled split so that no label reaches the pretraining loop."""
    names = POOL_SPLITS[pool]
    if "unlabeled" in names and "unlabeled" not in ds.splits:
        raise _no_unlabeled_split(ds, pool, preset)
    parts = [ds.splits[n] for n in names]
    keys = sorted(set.intersection(*(set(p.arrays) for p in parts)))
    arrays = {k: np.concatenate([p.arrays[k] for p in parts]) for k in keys}
    labels = pd.concat([p.labels[["split", "id"]] for p in parts], ignore_index=True)
    m = ds.manifest
    tensors = SplitTensors(Split("unlabeled", arrays, labels), m.task, m.label_columns, ("text", "audio", "vision"))
    return tensors, {n: len(p) for n, p in zip(names, parts)}


def _inputs(batch: dict, spec):
    return encoder_inputs({m: (batch[m], batch[f"{m}_mask"]) for m in MODS}, spec)  # first word, pooling


def _step_figures(model, inputs, p, gen, weight) -> dict[str, torch.Tensor]:
    tampered, y, _, _ = tamper(inputs, p, gen)
    out = model(tampered)
    recon = reconstruction_loss(out["recon"], tampered)  # eq. 5
    cons = consistency_loss(out["logit"], y)  # eq. 9
    acc = ((out["logit"] > 0).float() == y).float().mean()
    return {"recon": recon, "consistency": cons, "loss": recon + weight * cons, "tamper_acc": acc}  # eq. 10


@torch.no_grad()
def evaluate(model, split: SplitTensors, idx: torch.Tensor, cfg: PretrainConfig, spec, seed: int,
             device) -> dict[str, float]:
    """Held-out figures with a tampering fixed by `seed` (the same every epoch)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    sums, n = {}, 0
    for s in range(0, len(idx), cfg.batch_size):
        batch = to_device(split.batch(idx[s:s + cfg.batch_size]), device)
        f = _step_figures(model, _inputs(batch, spec), cfg.tamper_p, gen, cfg.consistency_weight)
        k = len(batch["index"])
        for name, v in f.items():
            sums[name] = sums.get(name, 0.0) + float(v) * k
        n += k
    return {name: v / n for name, v in sums.items()}


def run_pretraining(params: Params, dataset: str, seed: int, out: str | Path, device: str | None = None,
                    progress: bool = True, name: str = AEMT.name, preset: str | None = None) -> dict:
    """Pretrain the encoders a run of `name` (AE-MT or a variant) loads on `dataset`, into `out`. preset: the
    params.yaml preset to resolve the settings for (`pretrain --preset`, as `train --preset`; default: the
    manifest's)."""
    out = Path(out)
    data_dir = ensure_dataset(dataset, params.data.root, params.data.synth_seed, params.data.synth_scale)
    ds = load_dataset(data_dir, verify_hashes=params.data.verify_hashes, splits=("train", "unlabeled"),
                      lazy=should_load_lazily(data_dir, params.runtime, ("train", "unlabeled")))
    manifest = ds.manifest
    if manifest.family != "trimodal":
        raise ConfigError(f"AE-MT pretraining needs a trimodal dataset; {manifest.name!r} is {manifest.family}")
    preset = preset or manifest.preset or manifest.name
    cfg, key, spec = pretraining_of(params, name, preset)
    dev = pick_device(device)
    seed_everything(seed)
    pool, pool_splits = pool_split(ds, cfg.pool, preset)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(pool)))  # fixed held-out part
    n_held = max(2, int(round(cfg.heldout * len(pool))))
    held_idx, train_idx = order[:n_held], order[n_held:]
    in_dims = {m: manifest.modalities[m]["dim"] for m in MODS}
    model = Autoencoders(in_dims, spec, cfg.decoder_layers).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = (torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=cfg.plateau_patience)
             if cfg.plateau_patience > 0 else None)
    eval_seed = seed + 7919
    initial = evaluate(model, pool, held_idx, cfg, spec, eval_seed, dev)
    history, best, best_state, bad = [], None, None, 0
    t0 = time.perf_counter()
    bar = progress_bar(range(cfg.epochs), f"pretrain/{manifest.name}/{seed}", unit="epoch", enabled=progress)
    for epoch in bar:
        model.train()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
        sums, n = {}, 0
        for s in range(0, len(perm), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            if len(idx) < 2:
                continue
            batch = to_device(pool.batch(idx), dev)
            f = _step_figures(model, _inputs(batch, spec), cfg.tamper_p, gen, cfg.consistency_weight)
            opt.zero_grad(set_to_none=True)
            f["loss"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            for name, v in f.items():
                sums[name] = sums.get(name, 0.0) + float(v.detach()) * len(idx)
            n += len(idx)
        held = evaluate(model, pool, held_idx, cfg, spec, eval_seed, dev)
        row = {"epoch": epoch, **{f"train_{k}": v / max(n, 1) for k, v in sums.items()},
               **{f"heldout_{k}": v for k, v in held.items()}, "lr": opt.param_groups[0]["lr"]}
        history.append(row)
        if sched is not None:
            sched.step(held["loss"])
        if best is None or held["loss"] < best["heldout_loss"]:
            best, bad = row, 0
            best_state = {m: {k: v.detach().cpu().clone() for k, v in model.encoders[m].state_dict().items()}
                          for m in MODS}
        else:
            bad += 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(recon=f"{held['recon']:.4f}", acc=f"{held['tamper_acc']:.3f}")
        if cfg.patience and bad >= cfg.patience:
            break
    elapsed = time.perf_counter() - t0
    with atomic_path(out / "encoders.pt") as tmp, open(tmp, "wb") as f:  # a file object: see train._save
        torch.save({"spec": spec.as_dict(), "in_dims": in_dims, "encoders": best_state, "config": asdict(cfg),
                    "dataset": manifest.name, "dataset_files": manifest.files, "seed": seed,
                    "pool": cfg.pool, "pool_size": len(pool), "pool_splits": pool_splits, "key": key,
                    "best_epoch": best["epoch"], "msarepro": __version__}, f)
    with atomic_path(out / "history.csv") as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False, float_format="%.6g")
    result = {
        "dataset": manifest.name, "pool": cfg.pool, "pool_size": len(pool), "pool_splits": pool_splits,
        "pool_train": len(train_idx), "pool_heldout": len(held_idx),
        "seed": seed, "epochs_run": len(history), "best_epoch": best["epoch"],
        "tamper_chance": max(cfg.tamper_p, 1 - cfg.tamper_p),
        "initial": {f"heldout_{k}": v for k, v in initial.items()},
        "best": {k: v for k, v in best.items() if k.startswith("heldout_")},
        "config": asdict(cfg), "encoder": spec.as_dict(), "key": key,
    }
    write_json(out / "metrics.json", result)
    write_json(out / "timing.json", {"seconds": elapsed})
    return result
