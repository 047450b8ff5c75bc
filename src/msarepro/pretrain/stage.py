"""The `pretrain` DVC stage for one dataset (`msarepro pretrain --stage --dataset NAME --out pretrain/NAME`).

Pretrains AE-MT's encoders only where a run needs them (an AE-MT job in the sweep grid, or the `train` stage's
single experiment when `model` is AE-MT); elsewhere it writes `skipped.json` saying why, so that the stage's
output exists either way. The output persists between runs: encoders whose fingerprint (the pretraining
settings, `pool` among them, the encoder settings, the data settings and files, the seed
`pipeline.pretrain_seed`, the code) is unchanged are kept, not pretrained again; anything else in the directory
is replaced.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import Params, to_jsonable
from ..data import ensure_dataset
from ..io import write_json
from ..methods.aemt import AEMT
from .run import pretrain_config, run_pretraining


def pretrain_fingerprint(params: Params, dataset: str) -> dict:
    """Everything AE-MT's pretrained encoders for `dataset` depend on."""
    from .. import sweep
    from ..methods import method_config

    path = Path(params.data.root) / dataset / "manifest.json"
    man = json.loads(path.read_text()) if path.exists() else {}
    preset = man.get("preset") or dataset
    cfg = pretrain_config(params, preset)
    return {"dataset": dataset, "preset": preset, "pretrain": to_jsonable(cfg),
            "encoder": to_jsonable(method_config(params, AEMT.name, preset)), "data": to_jsonable(params.data),
            "dataset_files": man.get("files", {}), "seed": params.pipeline.pretrain_seed,
            "code": sweep.pretrain_code_hash()}


def run_stage(params: Params, dataset: str, out: str | Path, device: str | None = None, progress: bool = True,
              log=print) -> dict:
    """Make `out` hold what the pipeline needs for `dataset`. -> {"status": "skipped" | "up to date" |
    "pretrained", ...}; for "pretrained" also pretraining's dataset, best_epoch and best held-out figures."""
    from ..sweep import pretrain_datasets

    out = Path(out)
    if dataset not in pretrain_datasets(params):
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        write_json(out / "skipped.json", {"dataset": dataset, "reason": "no AE-MT run on this dataset in "
                                          "params.yaml (sweep.methods x sweep.datasets, or model/dataset)"})
        log(f"pretrain {dataset}: not needed by the sweep or the train stage; skipped")
        return {"status": "skipped", "dataset": dataset}
    d = params.data
    ensure_dataset(dataset, d.root, d.synth_seed, d.synth_scale)  # the fingerprint holds its files' hashes
    fp = pretrain_fingerprint(params, dataset)
    stamp = out / "fingerprint.json"
    if (out / "encoders.pt").exists() and stamp.exists() and json.loads(stamp.read_text()) == fp:
        log(f"pretrain {dataset}: {out / 'encoders.pt'} is up to date (same settings, data, seed, code)")
        return {"status": "up to date", "dataset": dataset}
    if out.exists():
        shutil.rmtree(out)
    r = run_pretraining(params, dataset, fp["seed"], out, device=device, progress=progress)
    write_json(stamp, fp)
    return {"status": "pretrained", **{k: r.get(k) for k in ("dataset", "best_epoch", "best")}}
