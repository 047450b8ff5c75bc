"""The training loop: outputs, determinism, selection on VALID only, resume after kill -9, learning."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from msarepro.train import RunSpec, run

from .conftest import ROOT, fast_params


def _train(tmp, model, data_dir, seed=1111, epochs=3, **kw):
    return run(fast_params(epochs), RunSpec(model, str(data_dir), seed, tmp, progress=False, **kw))


def test_run_outputs(tmp_path, small_data):
    r = _train(tmp_path / "r", "lf_dnn", small_data["synth-mosi"])
    d = tmp_path / "r"
    for f in ("metrics.json", "predictions.csv", "history.csv", "config.json", "best.pt", "checkpoint.pt",
              "epochs/epoch_000.npz", "epochs/epoch_002.npz"):
        assert (d / f).exists(), f
    m = json.loads((d / "metrics.json").read_text())
    assert set(m) >= {"valid", "test", "best_epoch"} and "Non0_acc_2" in m["test"]
    pred = pd.read_csv(d / "predictions.csv")
    assert list(pred.columns[:4]) == ["split", "id", "y_true", "y_pred"]
    assert set(pred["split"]) == {"valid", "test"}
    hist = pd.read_csv(d / "history.csv")
    assert len(hist) == 3 and "valid_MAE" in hist and "train_task" in hist
    # selection on VALID: the best epoch has the lowest validation loss
    assert r["best_epoch"] == int(hist["valid_loss"].idxmin())
    # the reported test metrics are that epoch's, and recomputable from predictions.csv
    assert m["test"]["MAE"] == pytest.approx(hist.loc[r["best_epoch"], "test_MAE"], rel=1e-5)
    from msarepro.evaluate import recompute
    assert recompute(d)["test"]["MAE"] == pytest.approx(m["test"]["MAE"], rel=1e-5)
    assert not list(d.rglob("*.tmp")), "temporary files left behind"
    assert not list(d.glob("epochs/method_*.npz"))  # LF-DNN keeps no per-epoch arrays of its own (epoch_artifacts)


def test_classification_run_outputs(tmp_path, small_data):
    _train(tmp_path / "c", "text_only", small_data["synth-mvsa"], epochs=2)
    pred = pd.read_csv(tmp_path / "c" / "predictions.csv")
    assert {"p_0", "p_1", "p_2"} <= set(pred.columns)
    assert np.allclose(pred[["p_0", "p_1", "p_2"]].sum(axis=1), 1, atol=1e-4)
    assert (pred["y_pred"] == pred[["p_0", "p_1", "p_2"]].to_numpy().argmax(1)).all()


def test_same_seed_same_metrics_bit_for_bit(tmp_path, small_data):
    _train(tmp_path / "a", "mult", small_data["synth-sims"], epochs=2)
    _train(tmp_path / "b", "mult", small_data["synth-sims"], epochs=2)
    assert (tmp_path / "a/metrics.json").read_bytes() == (tmp_path / "b/metrics.json").read_bytes()
    assert (tmp_path / "a/predictions.csv").read_bytes() == (tmp_path / "b/predictions.csv").read_bytes()
    _train(tmp_path / "c", "mult", small_data["synth-sims"], seed=2, epochs=2)
    assert (tmp_path / "a/metrics.json").read_bytes() != (tmp_path / "c/metrics.json").read_bytes()


def _cli_train(out, data_dir, extra_env=None, resume=False, model="lf_dnn", sets=None):
    sets = sets or [f"methods.{model}.max_epochs=4", f"methods.{model}.patience=10", f"methods.{model}.batch_size=16"]
    cmd = [sys.executable, "-m", "msarepro.cli", "train", "--model", model, "--dataset", str(data_dir),
           "--seed", "5", "--out", str(out), "--params", str(ROOT / "params.yaml"), "--no-progress"]
    cmd += [a for kv in sets for a in ("-S", kv)]
    if resume:
        cmd.append("--resume")
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)


def test_kill9_then_resume_matches_uninterrupted(tmp_path, small_data):
    data = small_data["synth-mosi"]
    full = _cli_train(tmp_path / "full", data)
    assert full.returncode == 0, full.stderr
    killed = _cli_train(tmp_path / "cut", data, {"MSAREPRO_KILL_AT": "2:3"})
    assert killed.returncode == -9  # SIGKILL in the middle of epoch 2
    assert not (tmp_path / "cut/metrics.json").exists()
    assert not list((tmp_path / "cut").rglob("*.tmp"))
    resumed = _cli_train(tmp_path / "cut", data, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    for f in ("metrics.json", "predictions.csv", "history.csv"):
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "cut" / f).read_bytes(), f


# SFTTR's two stages (pretraining epoch 0, fusion epochs 1-2): the kill points fall in the first fusion epoch
# (the checkpoint holds the pretraining stage's optimizer; the resumed loop starts the fusion stage afresh) and
# after the boundary (the checkpoint holds the fusion stage's optimizer and schedule); with the bank, epoch 2
# does not refresh it, so the resumed run must retrieve from the checkpointed bank.
_TWO_STAGES = [f"methods.sfttr.presets.synth-sims.{kv}" for kv in ("max_epochs=3", "patience=10", "pretrain_epochs=1")]


@pytest.mark.parametrize("kill_at,extra", [("1:2", []), ("2:1", ["methods.sfttr.presets.synth-sims.pairs_from=bank"])],
                         ids=["in-first-fusion-epoch", "after-boundary-bank"])
def test_resume_across_stage_boundary_matches_uninterrupted(kill_at, extra, tmp_path, small_data):
    data = small_data["synth-sims"]
    sets = _TWO_STAGES + extra
    full = _cli_train(tmp_path / "full", data, model="sfttr", sets=sets)
    assert full.returncode == 0, full.stderr
    killed = _cli_train(tmp_path / "cut", data, {"MSAREPRO_KILL_AT": kill_at}, model="sfttr", sets=sets)
    assert killed.returncode == -9
    resumed = _cli_train(tmp_path / "cut", data, resume=True, model="sfttr", sets=sets)
    assert resumed.returncode == 0, resumed.stderr
    for f in ("metrics.json", "predictions.csv", "history.csv"):
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "cut" / f).read_bytes(), f


def test_infig_resume_keeps_momentum_encoders_and_queue_bit_for_bit(tmp_path, small_data):
    """INFIG on synth-mvsa: its momentum encoders and key queue change at every step and must come back from
    checkpoint.pt (its frozen CLIP, where declared, is rebuilt instead); killed in epoch 1, resumed: the same
    predictions, metrics and learning curves as an uninterrupted run."""
    data = small_data["synth-mvsa"]
    sets = [f"methods.infig.presets.synth-mvsa.{kv}" for kv in ("max_epochs=2", "patience=10")]
    full = _cli_train(tmp_path / "full", data, model="infig", sets=sets)
    assert full.returncode == 0, full.stderr
    killed = _cli_train(tmp_path / "cut", data, {"MSAREPRO_KILL_AT": "1:2"}, model="infig", sets=sets)
    assert killed.returncode == -9
    resumed = _cli_train(tmp_path / "cut", data, resume=True, model="infig", sets=sets)
    assert resumed.returncode == 0, resumed.stderr
    for f in ("metrics.json", "predictions.csv", "history.csv"):
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "cut" / f).read_bytes(), f
    import torch
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["model"]
    assert any(k.startswith("momentum_encoders.") for k in ck) and "queue.image" in ck and int(ck["queue.filled"]) > 0
    assert not any(k.startswith("clip.model.") for k in ck)  # the frozen CLIP is rebuilt, not stored


def test_each_stage_gets_a_fresh_optimizer_and_its_own_warmup(tmp_path, small_data, monkeypatch):
    """SFTTR with pretrain_epochs 1 of 3 at batch 8: stage 1 (epoch 0) has S steps, stage 2 (epochs 1-2) 2S. Each
    stage builds its own optimizer; the first fusion step runs with empty optimizer state at the first warm-up
    value of the fusion schedule, lr / int(0.1 * 2S), not at a point of one schedule over the whole run."""
    import math

    from msarepro import train as train_mod

    made = []  # (model, optimizer, [(lr, number of parameters with state) before each step])
    real = train_mod.make_optimizer

    def recording(model, cfg):
        opt = real(model, cfg)
        log = []
        opt.register_step_pre_hook(lambda o, args, kwargs: log.append((o.param_groups[0]["lr"], len(o.state))))
        made.append((model, opt, log))
        return opt

    monkeypatch.setattr(train_mod, "make_optimizer", recording)
    params = fast_params(3, **{"methods.sfttr.presets.synth-sims.batch_size": 8, "methods.sfttr.pretrain_epochs": 1,
                               "methods.sfttr.pretrain_lr": 4.0e-4})
    run(params, RunSpec("sfttr", str(small_data["synth-sims"]), 1111, tmp_path / "r", progress=False))
    from msarepro.data import load_dataset
    from msarepro.data.loader import to_tensors
    n_train = len(to_tensors(load_dataset(small_data["synth-sims"]))["train"])
    S = math.ceil(n_train / 8)
    assert len(made) == 2 and [len(log) for _, _, log in made] == [S, 2 * S]
    (model, pre_opt, pre), (_, fusion_opt, fusion) = made
    warm0, warm1 = int(0.1 * S), int(0.1 * 2 * S)
    assert warm1 >= 2
    assert pre[0] == (pytest.approx(4.0e-4 / max(warm0, 1)), 0)  # the encoders' stage at pretrain_lr
    lr, n_state = fusion[0]
    assert n_state == 0  # fresh: no moment estimates carried over from the encoders' stage
    assert lr == pytest.approx(1.0e-3 / warm1)  # the fusion schedule's first warm-up step (synth preset lr 1e-3)
    assert fusion[warm1 - 1][0] == pytest.approx(1.0e-3)  # warm-up reaches lr at the stage's own 10%
    names = {id(p): n for n, p in model.named_parameters()}
    tracked = [{names[id(p)] for g in o.param_groups for p in g["params"]} for o in (pre_opt, fusion_opt)]
    assert tracked[0] == {n for n in names.values() if n.startswith(("text.", "encoders.", "pretrain_heads."))}
    assert tracked[1] == {n for n in names.values() if not n.startswith(("text.", "encoders.text.", "pretrain_heads."))}


def test_resume_with_other_config_is_refused(tmp_path, small_data):
    from msarepro import config
    from msarepro.config import ConfigError

    data = str(small_data["synth-mosi"])
    run(fast_params(1), RunSpec("lf_dnn", data, 5, tmp_path / "r", progress=False))
    other = config.from_dict(config.apply_overrides(config.load_raw(ROOT / "params.yaml"), ["methods.lf_dnn.lr=0.5"]))
    with pytest.raises(ConfigError, match="different config"):
        run(other, RunSpec("lf_dnn", data, 5, tmp_path / "r", resume=True, progress=False))


def test_early_stopping_on_valid(tmp_path, small_data):
    from msarepro import config
    p = config.from_dict(config.apply_overrides(config.load_raw(ROOT / "params.yaml"),
                                                ["methods.tfn.patience=2", "methods.tfn.lr=0.05"]))
    r = run(p, RunSpec("tfn", str(small_data["synth-mosi"]), 1, tmp_path / "e", progress=False))
    assert r["epochs_run"] <= r["best_epoch"] + 1 + 2


def test_tfn_learns_on_synth_mosi(tmp_path, small_data):
    """A correct model clearly beats the majority rate and correlates with the label."""
    r = _train(tmp_path / "l", "tfn", small_data["synth-mosi"], epochs=12)
    assert r["test"]["Non0_acc_2"] > 0.65
    assert r["test"]["Corr"] > 0.4
