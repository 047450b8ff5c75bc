"""The GPU path of the one loop, on CPU where it can be (issue 16): bf16 autocast, torch.compile, no per-step host
synchronisation, frozen encoders computed once per clip, runtime settings in a run's identity, GPU slots."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from msarepro import config, sweep
from msarepro.config import ConfigError, RuntimeConfig
from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import all_methods, build_method, method_config
from msarepro.methods.base import Method
from msarepro.train import RunSpec, predict, provide_inputs, run

from .conftest import ROOT, fast_params

CPU = torch.device("cpu")
BF16 = RuntimeConfig(precision="bf16")
OUTPUTS = ("metrics.json", "history.csv", "predictions.csv")


def _dataset(method: str) -> str:
    """The embedded dataset of the method's family (derived from the registry, not a list of names)."""
    from msarepro.methods import get_method

    return "synth-mvsa" if "image_text" in get_method(method).families else "synth-sims"


def _model(small_data, name: str, params=None):
    params = params or fast_params(2)
    ds = load_dataset(small_data[_dataset(name)])
    cfg = method_config(params, name, _dataset(name))
    provide_inputs(name, cfg, ds, small_data[_dataset(name)].parent)
    torch.manual_seed(0)
    return build_method(name, cfg, ds.manifest), to_tensors(ds)


def _same_outputs(a: Path, b: Path) -> bool:
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in OUTPUTS)


# ------------------------------------------------------------------------------------------------ bf16 on CPU
@pytest.mark.parametrize("name", sorted(all_methods()))
def test_bf16_autocast_changes_every_methods_outputs(name, small_data):
    """Under precision bf16 the forward pass runs in bfloat16 (outputs differ from fp32 at bf16 precision),
    the outputs come back float32 and finite."""
    model, splits = _model(small_data, name)
    fp32, loss32 = predict(model, splits["test"], CPU)
    bf16, loss16 = predict(model, splits["test"], CPU, runtime=BF16)
    assert fp32.dtype == bf16.dtype == np.float32 and np.isfinite(bf16).all() and np.isfinite(loss16)
    assert not np.array_equal(fp32, bf16)
    assert np.allclose(fp32, bf16, atol=0.1)  # the same model, at bf16's precision


@pytest.mark.parametrize("name", ["lf_dnn", "sfttr", pytest.param("mult", marks=pytest.mark.slow),
                                  pytest.param("infig", marks=pytest.mark.slow)])
def test_bf16_trains_in_the_loop(name, tmp_path, small_data):
    params = fast_params(2, **{"runtime.precision": "bf16"})
    run(params, RunSpec(name, str(small_data[_dataset(name)]), 1111, tmp_path / "bf16", progress=False))
    run(fast_params(2), RunSpec(name, str(small_data[_dataset(name)]), 1111, tmp_path / "fp32", progress=False))
    hist = pd.read_csv(tmp_path / "bf16" / "history.csv")
    assert np.isfinite(hist.select_dtypes("number").to_numpy()).all()
    assert (tmp_path / "bf16" / "history.csv").read_bytes() != (tmp_path / "fp32" / "history.csv").read_bytes()
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["runtime"]["precision"] == "bf16"


# --------------------------------------------------------------------------------------------- torch.compile
@pytest.mark.slow
def test_compile_on_cpu_matches_eager_and_keeps_state_dict_keys(small_data):
    """Inductor on CPU (gcc): the compiled forward gives the eager outputs up to float rounding; the module is
    compiled in place, so checkpoints' keys have no `_orig_mod.` prefix."""
    from msarepro.runtime import compiled

    model, splits = _model(small_data, "text_only")
    keys = list(model.state_dict())
    eager, _ = predict(model, splits["test"], CPU)
    assert compiled(model, RuntimeConfig(compile=True)) is model
    comp, _ = predict(model, splits["test"], CPU)
    assert np.allclose(eager, comp, rtol=1e-5, atol=1e-6)
    assert list(model.state_dict()) == keys


# ------------------------------------------------------------------------------------ no per-step host syncs
def _count_host_reads(monkeypatch) -> list[str]:
    """Patch the tensor -> Python conversions; record those called from the loop (train.py) and the methods: the
    code that works on device tensors (data/ builds batches from host tensors, before their copy)."""
    calls: list[str] = []
    for attr in ("item", "tolist", "__float__", "__int__", "__bool__"):
        orig = getattr(torch.Tensor, attr)

        def wrapped(self, *a, _orig=orig, _attr=attr, **kw):
            f = sys._getframe(1)
            where = f.f_code.co_filename
            if "msarepro" in where and (where.endswith("train.py") or "methods" in where):
                calls.append(f"{_attr} {Path(f.f_code.co_filename).name}:{f.f_lineno}")
            return _orig(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, attr, wrapped)
    return calls


def test_no_host_synchronisation_per_training_step(tmp_path, small_data, monkeypatch):
    """Halving the batch size doubles the steps; the loop's reads of device values must not grow with them
    (before issue 16 every loss term was read with float() after every step)."""
    calls = _count_host_reads(monkeypatch)
    counts = {}
    for bs in (32, 16):
        calls.clear()
        params = fast_params(2, **{"methods.lf_dnn.presets.synth-sims.batch_size": bs})
        run(params, RunSpec("lf_dnn", str(small_data["synth-sims"]), 1111, tmp_path / str(bs), progress=False))
        counts[bs] = list(calls)
    assert counts[32] and len(counts[32]) == len(counts[16]), counts


# ------------------------------------------------------------------------------- frozen encoders, once per clip
SFTTR_TWO_STAGES = {"methods.sfttr.presets.synth-mosi.text_encoder": "tiny-bert", "methods.sfttr.pretrain_epochs": 1,
                    "methods.sfttr.presets.synth-mosi.max_epochs": 3, "methods.sfttr.presets.synth-mosi.patience": 10}


def _rows_through(monkeypatch, cls, attr: str) -> list[int]:
    """Record how many clips each call of cls.attr computes."""
    rows: list[int] = []
    orig = getattr(cls, attr)

    def counted(self, batch, *a, **kw):
        rows.append(len(batch["index"]))
        return orig(self, batch, *a, **kw)
    monkeypatch.setattr(cls, attr, counted)
    return rows


@pytest.mark.parametrize("pairs_from", ["batch", "bank"])
def test_sfttr_frozen_text_once_per_clip_same_results(pairs_from, tmp_path, small_data, monkeypatch):
    """SFTTR's fusion stage (epochs 1-2 of 3): its frozen text side runs once per clip of each split with the
    cache on, once per clip and epoch (and per retrieved partner) with it off; the outputs are byte-identical."""
    from msarepro.methods.sfttr import SFTTR

    params = fast_params(3, **SFTTR_TWO_STAGES, **{"methods.sfttr.pairs_from": pairs_from})
    data = str(small_data["synth-mosi"])
    rows = _rows_through(monkeypatch, SFTTR, "_frozen_text")
    run(params, RunSpec("sfttr", data, 1111, tmp_path / "on", progress=False))
    cached = sum(rows)
    rows.clear()
    monkeypatch.setattr(Method, "frozen_cache", False)
    run(params, RunSpec("sfttr", data, 1111, tmp_path / "off", progress=False))
    assert _same_outputs(tmp_path / "on", tmp_path / "off")
    n = sum(len(s) for s in to_tensors(load_dataset(small_data["synth-mosi"])).values())
    assert cached == n  # train, valid, test: each clip once over the two fusion epochs
    assert sum(rows) >= 2 * n


def test_sfttr_frozen_text_runs_in_eval_mode(small_data):
    """A frozen encoder has no dropout: the same clip gives the same T however often it is computed (it ran in
    train mode before issue 16, with dropout)."""
    model, splits = _model(small_data, "sfttr", fast_params(3, **SFTTR_TWO_STAGES, **{
        "methods.sfttr.presets.synth-sims.text_encoder": "tiny-bert"}))
    model.enter_stage(1)
    model.train()
    batch = splits["train"].batch(torch.arange(8))
    a, b = model.encode(batch)["text"], model.encode(batch)["text"]
    assert torch.equal(a, b) and not a.requires_grad
    assert model.text.training  # restored after the frozen pass


def test_infig_clip_prior_once_per_clip_same_results(tmp_path, small_data, monkeypatch):
    from msarepro.methods.infig import ClipPrior

    params = fast_params(2)
    data = str(small_data["synth-mvsa"])
    rows = _rows_through(monkeypatch, ClipPrior, "forward")
    run(params, RunSpec("infig", data, 1111, tmp_path / "on", progress=False))
    cached = sum(rows)
    rows.clear()
    monkeypatch.setattr(Method, "frozen_cache", False)
    run(params, RunSpec("infig", data, 1111, tmp_path / "off", progress=False))
    assert _same_outputs(tmp_path / "on", tmp_path / "off")
    n_train = len(to_tensors(load_dataset(small_data["synth-mvsa"]))["train"])
    assert cached == n_train and sum(rows) == 2 * n_train  # CLIP reads training batches only


def test_cache_is_cleared_when_weights_load(small_data):
    model, splits = _model(small_data, "sfttr", fast_params(3, **SFTTR_TWO_STAGES, **{
        "methods.sfttr.presets.synth-sims.text_encoder": "tiny-bert"}))
    from msarepro.train import load_weights, saved_weights

    model.enter_stage(1)
    model.use_split(splits["train"])
    model.encode(splits["train"].batch(torch.arange(4)))
    assert model._cache
    load_weights(model, {"model": saved_weights(model, None)})
    assert not model._cache


# ---------------------------------------------------------------------------------- a run's identity
def _params(tmp_path, *over):
    raw = config.load_raw(ROOT / "params.yaml")
    return config.from_dict(config.apply_overrides(raw, [f"data.root={tmp_path}", *over]))


def test_runtime_numerics_enter_the_fingerprint(tmp_path):
    job = sweep.Job("mult", "synth-mosi", 1111)
    base = sweep.fingerprint(_params(tmp_path), job)
    assert base["runtime"] == {"precision": "fp32", "tf32": True, "compile": False}
    for over in ("runtime.precision=bf16", "runtime.compile=true", "runtime.tf32=false"):
        assert sweep.fingerprint(_params(tmp_path, over), job) != base, over
    for over in ("runtime.pin_memory=false", "runtime.load=lazy", "runtime.lazy_above_gb=0.5"):
        assert sweep.fingerprint(_params(tmp_path, over), job) == base, over
    rec = sweep.experiment_record(_params(tmp_path, "runtime.precision=bf16"))
    assert rec["runtime"]["precision"] == "bf16"


def test_resume_matches_numerics_only(tmp_path, small_data):
    data = str(small_data["synth-sims"])
    run(fast_params(2), RunSpec("lf_dnn", data, 1111, tmp_path / "r", progress=False))
    assert json.loads((tmp_path / "r" / "config.json").read_text())["runtime"] == config.to_jsonable(RuntimeConfig())
    run(fast_params(2, **{"runtime.pin_memory": "false"}), RunSpec("lf_dnn", data, 1111, tmp_path / "r",
                                                                    resume=True, progress=False))
    with pytest.raises(ConfigError, match="different config"):
        run(fast_params(2, **{"runtime.precision": "bf16"}), RunSpec("lf_dnn", data, 1111, tmp_path / "r",
                                                                      resume=True, progress=False))


def test_dvc_stages_list_the_numeric_runtime_keys():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in ("resolve", "sweep"):
        assert {"runtime.precision", "runtime.tf32", "runtime.compile"} <= set(stages[stage]["params"]), stage


# --------------------------------------------------------------------------------------------- GPU slots
def test_jobs_per_gpu_slots_map_round_the_gpus(tmp_path):
    """--gpus 2 --jobs-per-gpu 3: six jobs at once, three per GPU (fake commands: only CUDA_VISIBLE_DEVICES)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MSAREPRO_GPU_LOCKDIR": str(tmp_path / "locks")}
    code = ("import os, sys, time; open(sys.argv[1], 'w').write(os.environ['CUDA_VISIBLE_DEVICES']); "
            "time.sleep(3)")
    procs = [subprocess.Popen([sys.executable, "-m", "msarepro.gpuslot", "--gpus", "2", "--jobs-per-gpu", "3", "--",
                               sys.executable, "-c", code, str(tmp_path / f"job{i}")], env=env,
                              stderr=subprocess.DEVNULL) for i in range(6)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert sorted((tmp_path / f"job{i}").read_text() for i in range(6)) == ["0", "0", "0", "1", "1", "1"]
    from msarepro.gpuslot import device_of
    assert [device_of(s, 2) for s in range(6)] == [0, 1, 0, 1, 0, 1]


def test_gpu_profile_allows_gpus_times_jobs_per_gpu():
    import yaml

    prof = yaml.safe_load((ROOT / "profiles" / "local-gpu" / "config.yaml").read_text())
    conf = dict(c.split("=") for c in prof["config"])
    res = dict(r.split("=") for r in prof["resources"])
    assert int(res["gpu"]) == int(conf["gpus"]) * int(conf["jobs_per_gpu"])
