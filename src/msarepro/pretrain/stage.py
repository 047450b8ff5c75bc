"""The `pretrain` DVC stage for one dataset (`msarepro pretrain --stage --dataset NAME --out pretrain/NAME`).

Pretrains AE-MT's encoders only where a run needs them (an AE-MT or AE-MT-variant job of the sweep or ablation
grid, or the `train` stage's single experiment), once per distinct pretraining: runs whose pretraining settings
have the same key (`methods.pretrain_settings`: the `pretrain:` config after its preset and the variant's
`pretrain:`, and the encoder architecture) share one directory `OUT/<key>/`. So AE-MT and its w/o CL variant
(a fine-tuning switch) share encoders, while w/o MCD (`pretrain: {consistency_weight: 0}`) and w/o TR
(`encoder: lstm`) each get their own (Table 5). Where no run needs pretraining it writes `skipped.json` saying
why, so that the stage's output exists either way.

    OUT/<key>/encoders.pt, history.csv, metrics.json, timing.json   pretrain/run.py
    OUT/<key>/fingerprint.json   what the encoders depend on (pretrain_fingerprint)
    OUT/<key>/settings.json      the key, the pretraining config, the method settings, the run names using it

The output persists between runs: a key directory whose fingerprint (the pretraining and method settings, `pool`
among them, the data settings and files, the seed `pipeline.pretrain_seed`, the code, the torch CPU threads:
STAGE_THREADS, whatever the machine) is unchanged is kept, not pretrained again; a stale one is pretrained again and replaced; anything no run needs is removed. Each key
directory is made in a temporary directory beside it and renamed into place, so it is complete or absent.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from ..config import Params, to_jsonable
from ..data import ensure_dataset
from ..io import write_json
from ..methods.aemt import AEMT
from .run import pretraining_of, run_pretraining


# The torch CPU threads a pretraining runs with, whatever the machine, as the Snakemake rule's (workflow/rules/
# pretrain.smk, threads: 1) and the sweep's jobs. On CPU a matmul's reduction order depends on the thread count:
# with torch's default (the machine's core count) two machines pretrained other encoders (2 threads and 1 differ
# from the first epoch on, each deterministic) and AE-MT's results followed. Part of the fingerprint, so that
# encoders made with another count are pretrained again.
STAGE_THREADS = 1


def _manifest(params: Params, dataset: str) -> dict:
    path = Path(params.data.root) / dataset / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def pretrain_fingerprint(params: Params, dataset: str, name: str = AEMT.name) -> dict:
    """Everything the encoders a run of `name` loads on `dataset` depend on. Names of the same key have the same
    fingerprint (it holds no run name)."""
    from .. import sweep

    man = _manifest(params, dataset)
    preset = sweep.preset_of(dataset, man)
    cfg, key, spec = pretraining_of(params, name, preset)
    return {"dataset": dataset, "preset": preset, "key": key, "method": AEMT.name, "pretrain": to_jsonable(cfg),
            "method_settings": spec.as_dict(), "data": to_jsonable(params.data),
            "dataset_files": man.get("files", {}), "seed": params.pipeline.pretrain_seed,
            "code": sweep.pretrain_code_hash(), "torch_threads": STAGE_THREADS}


def pretrain_plan(params: Params, dataset: str) -> dict[str, list[str]]:
    """key -> the run names (methods or variants, sorted) whose runs on `dataset` load the encoders of that
    pretraining (`sweep.pretrain_needs`, less runs whose `pretrained` is empty). The dataset preset comes from its
    manifest when it exists (else the registry's: `sweep.preset_of`), as in `sweep.pretrained_encoders`."""
    from ..methods import pretrain_settings
    from ..sweep import preset_of, pretrain_needs, pretrained_encoders

    preset = preset_of(dataset, _manifest(params, dataset))
    plan: dict[str, list[str]] = {}
    for name in pretrain_needs(params).get(dataset, []):
        if pretrained_encoders(params, name, dataset) is not None:
            plan.setdefault(pretrain_settings(params, name, preset)[1], []).append(name)
    return dict(sorted(plan.items()))


def _skip(out: Path, dataset: str, reason: str, log) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_json(out / "skipped.json", {"dataset": dataset, "reason": reason})
    log(f"pretrain {dataset}: not needed by the sweep, the ablations or the train stage; skipped")
    return {"status": "skipped", "dataset": dataset}


def _changed(old: dict, new: dict) -> str:
    return ", ".join(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))


def _one_key(params: Params, dataset: str, out: Path, key: str, names: list[str], device, progress, log) -> dict:
    """Keep or (re)make OUT/<key>/ for the runs `names` (all of that key)."""
    kdir = out / key
    fp = pretrain_fingerprint(params, dataset, names[0])
    assert fp["key"] == key, (fp["key"], key)
    settings = {"dataset": dataset, "key": key, "pretrain": fp["pretrain"], "method": fp["method"],
                "method_settings": fp["method_settings"], "runs": names}
    stamp = kdir / "fingerprint.json"
    old = json.loads(stamp.read_text()) if stamp.exists() else None
    if (kdir / "encoders.pt").exists() and old == fp:
        if not (kdir / "settings.json").exists() or json.loads((kdir / "settings.json").read_text()) != settings:
            write_json(kdir / "settings.json", settings)  # which runs use it changed; the encoders did not
        log(f"pretrain {dataset}/{key} ({', '.join(names)}): up to date (same settings, data, seed, code)")
        return {"status": "up to date", "runs": names}
    why = f"inputs changed ({_changed(old, fp)})" if old else "not pretrained yet"
    log(f"pretrain {dataset}/{key} ({', '.join(names)}): {why}; pretraining")
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=out))
    try:
        threads = torch.get_num_threads()
        torch.set_num_threads(fp["torch_threads"])
        try:
            r = run_pretraining(params, dataset, fp["seed"], tmp, device=device, progress=progress, name=names[0])
        finally:
            torch.set_num_threads(threads)
        write_json(tmp / "fingerprint.json", fp)
        write_json(tmp / "settings.json", settings)
        if kdir.exists():
            shutil.rmtree(kdir)
        tmp.rename(kdir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"status": "pretrained", "runs": names, **{k: r.get(k) for k in ("best_epoch", "best")}}


def run_stage(params: Params, dataset: str, out: str | Path, device: str | None = None, progress: bool = True,
              log=print) -> dict:
    """Make `out` hold what the pipeline needs for `dataset`. -> {"status": "skipped"} or {"status": "pretrained"
    (something was) | "up to date", "dataset", "keys": {key: {"status", "runs", ...}}, "removed": [names]}."""
    from ..sweep import pretrain_needs

    out = Path(out)
    reason = ("no AE-MT run on this dataset in params.yaml (sweep.methods x sweep.datasets, ablations, or "
              "model/dataset)")
    if dataset not in pretrain_needs(params):
        return _skip(out, dataset, reason, log)
    d = params.data
    ensure_dataset(dataset, d.root, d.synth_seed, d.synth_scale)  # the fingerprint holds its files' hashes
    plan = pretrain_plan(params, dataset)
    if not plan:
        return _skip(out, dataset, "every AE-MT run on this dataset has `pretrained: ''` (random init)", log)
    out.mkdir(parents=True, exist_ok=True)
    removed = []
    for p in sorted(out.iterdir()):  # keys no run needs now, skipped.json, leftovers of an interrupted run
        if p.name not in plan:
            if p.is_dir() and (p / "encoders.pt").exists():
                log(f"pretrain {dataset}/{p.name}: no run uses these settings now; removed")
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p.name)
    keys = {key: _one_key(params, dataset, out, key, names, device, progress, log) for key, names in plan.items()}
    status = "pretrained" if any(k["status"] == "pretrained" for k in keys.values()) else "up to date"
    return {"status": status, "dataset": dataset, "keys": keys, "removed": removed}
