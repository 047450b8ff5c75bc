"""LNLN's training-time drops (`train_missing_rate`, robustness/training.py) through the one training loop."""
from __future__ import annotations

import json

import pytest
import torch

from msarepro.robustness.perturb import SpecialIds
from msarepro.robustness.training import TrainingDrops, lnln_rates
from tests.test_train import _cli_train

SPECIAL = {"text_ids": SpecialIds(pad=0, cls=1, sep=2, unk=3)}


def test_lnln_rates_half_complete_rest_uniform_below_the_top():
    g = torch.Generator().manual_seed(0)
    r = lnln_rates(1000, 0.6, g)
    assert int((r == 0).sum()) == 500  # floor(n/2) set to 0 (a uniform draw is 0 with probability 0)
    live = r[r > 0]
    assert float(live.max()) < 0.6 and abs(float(live.mean()) - 0.3) < 0.03  # U(0, 0.6)
    assert torch.equal(r, lnln_rates(1000, 0.6, torch.Generator().manual_seed(0)))


def _batch(n=6, L=8, D=3):
    ids = torch.randint(4, 50, (n, L))
    lens = torch.tensor([8, 5, 3, 8, 6, 2])[:n]
    mask = torch.arange(L)[None, :] < lens[:, None]
    ids[~mask] = 0
    ids[torch.arange(n), 0] = 1
    ids[torch.arange(n), lens - 1] = 2
    return {"index": torch.arange(n), "text_ids": ids, "text_ids_mask": mask,
            "audio": torch.randn(n, L, D), "audio_mask": mask.clone(), "vision": torch.randn(n, L, D),
            "vision_mask": mask.clone(), "y": torch.randn(n)}


def test_drops_follow_seed_and_epoch_and_keep_the_ends():
    b = _batch()
    orig = {k: v.clone() for k, v in b.items()}
    a = TrainingDrops(1.0, "trimodal", 6, seed=5, special=SPECIAL)
    a.start_epoch(3)
    x = a.apply(dict(b))
    again = TrainingDrops(1.0, "trimodal", 6, seed=5, special=SPECIAL)
    again.start_epoch(3)  # a resumed run: the same drops at the same epoch
    y = again.apply(dict(b))
    assert all(torch.equal(x[k], y[k]) for k in b)
    a.start_epoch(4)
    z = a.apply(dict(b))
    assert any(not torch.equal(x[k], z[k]) for k in ("text_ids", "audio", "vision"))
    m = b["text_ids_mask"]
    lens = m.sum(1)
    rows = torch.arange(6)
    assert torch.equal(x["text_ids"][rows, 0], b["text_ids"][rows, 0])  # [CLS] kept
    assert torch.equal(x["text_ids"][rows, lens - 1], b["text_ids"][rows, lens - 1])  # last real token kept
    changed = x["text_ids"] != b["text_ids"]
    assert bool((x["text_ids"][changed] == 3).all())  # dropped tokens become [UNK]
    assert torch.equal(x["text_ids"][~m], b["text_ids"][~m])  # padding untouched
    dropped = (x["audio"] == 0).all(-1) & (b["audio"] != 0).any(-1)
    assert bool(dropped.any()) and not bool((dropped & ~m).any())  # frames zeroed, on real positions only
    assert torch.equal(x["y"], b["y"]) and all(torch.equal(b[k], orig[k]) for k in b)  # input batch unchanged


def test_half_of_the_clips_stay_complete_per_modality():
    n = 200
    b = {"index": torch.arange(n), "audio": torch.ones(n, 20, 2), "audio_mask": torch.ones(n, 20, dtype=torch.bool)}
    d = TrainingDrops(1.0, "trimodal", n, seed=1, special={})
    d.start_epoch(0)
    out = d.apply(b)
    untouched = (out["audio"] != 0).all(-1).all(-1)
    assert int(untouched.sum()) >= n // 2  # the complete half (and clips whose draws dropped nothing)
    assert int(untouched.sum()) < n * 0.75


def _run(tmp_path, name, small_data, rate=None, extra_env=None, resume=False):
    sets = ["methods.lf_dnn.max_epochs=3", "methods.lf_dnn.patience=10", "methods.lf_dnn.batch_size=16"]
    if rate is not None:
        sets.append(f"methods.lf_dnn.train_missing_rate={rate}")
    return _cli_train(tmp_path / name, small_data["synth-mosi"], extra_env, resume=resume, sets=sets)


def test_the_switch_changes_training_and_off_changes_nothing(tmp_path, small_data):
    for name, rate in (("default", None), ("off", 0.0), ("on", 1.0)):
        r = _run(tmp_path, name, small_data, rate)
        assert r.returncode == 0, r.stderr
    read = {n: (tmp_path / n / "predictions.csv").read_bytes() for n in ("default", "off", "on")}
    assert read["default"] == read["off"]  # 0 draws nothing: the complete-input run, bit for bit
    assert read["on"] != read["off"]  # the drops changed what the model learned
    hist = {n: (tmp_path / n / "history.csv").read_text() for n in ("off", "on")}
    assert hist["on"].splitlines()[1] != hist["off"].splitlines()[1]  # from the first epoch's training loss on
    assert json.loads((tmp_path / "on/config.json").read_text())["method"]["train_missing_rate"] == 1.0


def test_resumed_run_with_drops_matches_uninterrupted(tmp_path, small_data):
    full = _run(tmp_path, "full", small_data, 0.8)
    assert full.returncode == 0, full.stderr
    killed = _run(tmp_path, "cut", small_data, 0.8, {"MSAREPRO_KILL_AT": "1:2"})
    assert killed.returncode == -9
    resumed = _run(tmp_path, "cut", small_data, 0.8, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    for f in ("metrics.json", "predictions.csv", "history.csv"):
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "cut" / f).read_bytes(), f


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_rate_outside_zero_one_is_refused(bad, tmp_path, small_data):
    r = _run(tmp_path, "bad", small_data, bad)
    assert r.returncode == 2 and "train_missing_rate" in r.stderr
