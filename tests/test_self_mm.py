"""Self-MM: ULGM's pieces on hand-computed cases (relative distance, the generated label, the momentum update, the
class centres), one ULGM step on set centres, the tanh-weighted loss, the labels kept per epoch in a real run
(epochs/method_NNN.npz, the generic Method.epoch_artifacts hook), the paper rows under our name, and the real
presets carrying MMSA's settings."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from msarepro import config
from msarepro.data.format import Manifest
from msarepro.methods import build_method, method_config
from msarepro.methods.self_mm import (SelfMM, class_centres, momentum_update, relative_distance, unimodal_labels,
                                      weighted_l1)
from msarepro.train import RunSpec, make_optimizer, run

from .conftest import ROOT, fast_params

DIMS = {"text": 6, "vision": 4, "audio": 5}
N = 8


def _manifest() -> Manifest:
    return Manifest(name="tiny", family="trimodal", task="regression", metric_family="mosi", label_range=(-3.0, 3.0),
                    modalities={m: {"dim": d, "max_len": 9} for m, d in DIMS.items()},
                    splits={"train": N, "valid": 4, "test": 4})


def _model(**settings) -> SelfMM:
    cfg = config.build(SelfMM.Config, {"fusion_dim": 2, "text_dim": 2, "audio_dim": 2, "vision_dim": 2,
                                       "text_out": 4, "text_rnn_hidden": 4, **settings}, "methods.self_mm")
    torch.manual_seed(0)
    return build_method("self_mm", cfg, _manifest())


# -- ULGM on hand-computed cases ------------------------------------------------------------------------------
def test_relative_distance_on_a_hand_computed_case():
    # f at the origin: 5 from the positive centre (3, 4), 10 from the negative (0, 10): alpha = (10 - 5) / 5 = 1
    f = torch.zeros(1, 2)
    assert relative_distance(f, torch.tensor([3.0, 4.0]), torch.tensor([0.0, 10.0])).item() == pytest.approx(1.0)
    # nearer the negative centre: 1 from it, 3 from the positive one: (1 - 3) / 3
    assert relative_distance(f, torch.tensor([0.0, -3.0]), torch.tensor([0.0, 1.0])).item() == pytest.approx(-2 / 3)


def test_unimodal_label_is_the_mean_of_the_ratio_and_the_difference_rule():
    y_m, a_s, a_m = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.5])
    # ratio: 2 * 1 / 0.5 = 4; difference: 2 + 1 - 0.5 = 2.5; mean 3.25 = y_m + (a_s - a_m)(y_m + a_m) / (2 a_m)
    assert unimodal_labels(y_m, a_s, a_m, bound=5.0).item() == pytest.approx(3.25)
    assert 2 + (1 - 0.5) * (2 + 0.5) / (2 * 0.5) == pytest.approx(3.25)
    assert unimodal_labels(y_m, a_s, a_m, bound=3.0).item() == pytest.approx(3.0)  # clipped to H
    assert unimodal_labels(-y_m * 4, a_s, a_m, bound=3.0).item() == pytest.approx(-3.0)
    # equal relative distances leave y_m as it is
    assert unimodal_labels(y_m, a_m, a_m, bound=3.0).item() == pytest.approx(2.0)


def test_momentum_update():
    # n = 2: 1/3 old + 2/3 new; n = 1 would replace the label outright
    assert momentum_update(torch.tensor(1.0), torch.tensor(4.0), 2).item() == pytest.approx(3.0)
    assert momentum_update(torch.tensor(1.0), torch.tensor(4.0), 1).item() == pytest.approx(4.0)
    assert momentum_update(torch.tensor(1.0), torch.tensor(4.0), 5).item() == pytest.approx(4 / 6 + 8 / 6)


def test_class_centres_average_positive_and_negative_samples_only():
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    pos, neg = class_centres(feats, torch.tensor([1.0, 2.0, -1.0, 0.0]))  # the neutral sample joins neither
    assert pos.tolist() == [2.0, 0.0] and neg.tolist() == [0.0, 2.0]
    pos, neg = class_centres(feats, torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert pos.tolist() == [2.25, 1.75] and neg.tolist() == [0.0, 0.0]  # no negative sample: zeros


def _step_case(model: SelfMM) -> dict[str, torch.Tensor]:
    """Sample 0 (y_m = 2) at the origin in every space; centres set so that alpha_m = 1, alpha_text = 2,
    alpha_audio = 1, alpha_vision = -2/3."""
    model.label_m.copy_(torch.tensor([2.0, -1.0, 1.0, -2.0, 0.5, -0.5, 3.0, 0.0]))
    for m in ("text", "audio", "vision"):
        getattr(model, f"label_{m}").copy_(model.label_m)
    model.labels_ready.fill_(True)
    centres = {"fusion": ([3.0, 4.0], [0.0, 10.0]), "text": ([0.0, 1.0], [0.0, -3.0]),
               "audio": ([3.0, 4.0], [0.0, 10.0]), "vision": ([0.0, -3.0], [0.0, 1.0])}
    for s, (p, n) in centres.items():
        getattr(model, f"centre_pos_{s}").copy_(torch.tensor(p))
        getattr(model, f"centre_neg_{s}").copy_(torch.tensor(n))
        getattr(model, f"feat_{s}").copy_(torch.arange(2 * N, dtype=torch.float32).view(N, 2))
    return {f"feat_{s}": torch.zeros(1, 2) for s in centres}


def test_a_ulgm_step_updates_labels_features_and_centres():
    model = _model()
    out = _step_case(model)
    model.label_vision[1] = 0.5  # y_m = -1, but the generated vision label is positive: a positive vision sample
    model.ulgm_step(out, torch.tensor([0]), epoch=1)  # n = 2 >= label_start 2
    # text: new label 0.5 * 2 * 2 / 1 + 0.5 * (2 + 2 - 1) = 3.5 -> 3 (H); 1/3 * 2 + 2/3 * 3
    assert model.label_text[0].item() == pytest.approx(2 / 3 + 2)
    assert model.label_audio[0].item() == pytest.approx(2.0)  # alpha_audio = alpha_m: y_m
    # vision: 0.5 * (2 * -2/3) + 0.5 * (2 - 2/3 - 1) = -0.5; 1/3 * 2 + 2/3 * -0.5
    assert model.label_vision[0].item() == pytest.approx(2 / 3 - 1 / 3)
    assert model.label_text[1:].tolist() == model.label_m[1:].tolist()  # other samples untouched
    assert model.label_vision[1].item() == 0.5
    assert model.feat_text[0].tolist() == [0.0, 0.0]  # the batch's representation stored
    # centres recomputed from the stored features: positives rows 0, 2, 4, 6; negatives rows 1, 3, 5
    stored = torch.arange(2 * N, dtype=torch.float32).view(N, 2)
    stored[0] = 0
    assert model.centre_pos_text.tolist() == pytest.approx(stored[[0, 2, 4, 6]].mean(0).tolist())
    assert model.centre_neg_text.tolist() == pytest.approx(stored[[1, 3, 5]].mean(0).tolist())
    # each modality's centres split the samples by its own generated label (MMSA's update_centers)
    assert model.centre_pos_vision.tolist() == pytest.approx(stored[[0, 1, 2, 4, 6]].mean(0).tolist())
    assert model.centre_neg_vision.tolist() == pytest.approx(stored[[3, 5]].mean(0).tolist())
    assert model.centre_pos_fusion.tolist() == pytest.approx(stored[[0, 2, 4, 6]].mean(0).tolist())


def test_no_label_update_before_the_start_epoch():
    model = _model(label_start=3)
    out = _step_case(model)
    model.ulgm_step(out, torch.tensor([0]), epoch=1)  # n = 2 < 3
    assert model.label_text[0].item() == 2.0 and model.label_vision[0].item() == 2.0
    assert model.feat_text[0].tolist() == [0.0, 0.0]  # features and centres still follow


def test_loss_weights_each_unimodal_term_by_tanh_of_its_label_shift():
    model = _model()
    model.train()
    _step_case(model)
    model.label_text[0] = 3.0  # |y_s - y_m| = 1 for sample 0, 0 for sample 1
    model.label_audio[1] = 1.0  # sample 1: y_m = -1, shift 2
    idx = torch.tensor([0, 1])
    out = {"pred": torch.tensor([1.0, 0.0]), "pred_text": torch.tensor([0.0, 0.0]),
           "pred_audio": torch.tensor([0.0, 0.0]), "pred_vision": torch.tensor([2.0, -1.0]),
           **{f"feat_{s}": torch.zeros(2, 2) for s in ("fusion", "text", "audio", "vision")}}
    terms = model.losses(out, {"y": torch.tensor([2.0, -1.0]), "index": idx}, epoch=0)
    assert terms["task"].item() == pytest.approx((1 + 1) / 2)  # plain L1 on y_m
    assert terms["text"].item() == pytest.approx(math.tanh(1) * 3 / 2)  # sample 1's weight tanh(0) = 0
    assert terms["audio"].item() == pytest.approx(math.tanh(2) * 1 / 2)
    assert terms["vision"].item() == 0.0  # labels equal y_m: weight 0 (and the predictions exact)
    assert weighted_l1(torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([0.5])).item() == pytest.approx(1.0)
    model = _model(unimodal_weight=0.0)
    _step_case(model)
    model.label_text[0] = 3.0
    assert model.losses(out, {"y": torch.tensor([2.0, -1.0]), "index": idx}, epoch=0)["text"].item() == 0.0


def test_evaluation_leaves_ulgm_state_alone():
    model = _model()
    out = _step_case(model)
    model.eval()
    before = model.feat_text.clone()
    out = {**out, "pred": torch.zeros(1), **{f"pred_{m}": torch.zeros(1) for m in ("text", "audio", "vision")}}
    model.losses(out, {"y": torch.tensor([2.0]), "index": torch.tensor([0])}, epoch=5)
    assert torch.equal(model.feat_text, before) and model.label_text[0].item() == 2.0


def test_param_groups_carry_the_per_encoder_rates():
    model = _model(lr_audio=5e-3, weight_decay_audio=0.01, weight_decay=1e-3)
    opt = make_optimizer(model, model.cfg)
    by_lr = {g["lr"]: g for g in opt.param_groups}
    audio = {id(p) for p in model.rnn["audio"].parameters()}
    assert {id(p) for p in by_lr[5e-3]["params"]} == audio and by_lr[5e-3]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_classification_data_is_refused():
    import dataclasses
    man = dataclasses.replace(_manifest(), task="classification", num_classes=3)
    cfg = config.build(SelfMM.Config, {"task_loss": "auto"}, "methods.self_mm")
    with pytest.raises(config.ConfigError, match="regression"):
        build_method("self_mm", cfg, man)


# -- a real run keeps the generated labels per epoch ---------------------------------------------------------------
def test_a_run_saves_the_generated_labels_per_epoch(small_data, tmp_path):
    out = tmp_path / "r"
    run(fast_params(3), RunSpec("self_mm", str(small_data["synth-mosi"]), 1, str(out), progress=False))
    files = sorted((out / "epochs").glob("method_*.npz"))
    assert [f.name for f in files] == ["method_000.npz", "method_001.npz", "method_002.npz"]
    from msarepro.data import load_dataset
    from msarepro.data.loader import to_tensors
    train = to_tensors(load_dataset(small_data["synth-mosi"]))["train"]
    with np.load(files[0]) as z0, np.load(files[2]) as z2:
        assert z0["ids"].tolist() == train.ids == z2["ids"].tolist()  # rows in the train split's order
        assert np.allclose(z0["y_m"], train.tensors["y"].numpy())
        assert np.array_equal(z0["y_text"], z0["y_m"])  # epoch 1 (n = 1): no update yet
        for m in ("text", "audio", "vision"):
            assert not np.array_equal(z2[f"y_{m}"], z2["y_m"])  # updated from n = 2 on
            assert np.abs(z2[f"y_{m}"]).max() <= 3.0  # H on synth-mosi
    hist = pd.read_csv(out / "history.csv")
    assert hist.loc[2, "train_text"] > 0 and hist.loc[0, "train_text"] == 0


# -- presets and paper rows ---------------------------------------------------------------------------------------
def test_real_presets_carry_mmsa_settings(params):
    mosi = method_config(params, "self_mm", "mosi")
    assert (mosi.text_encoder, mosi.batch_size, mosi.lr_text, mosi.lr, mosi.label_bound) == (
        "bert-base-uncased", 16, 5e-5, 1e-3, 3.0)
    assert (mosi.fusion_dim, mosi.text_dim, mosi.audio_dim, mosi.vision_dim) == (128, 32, 16, 32)
    sims = method_config(params, "self_mm", "sims")
    assert (sims.text_encoder, sims.label_bound, sims.text_dim, sims.vision_rnn_hidden) == (
        "bert-base-chinese", 1.0, 64, 64)
    assert method_config(params, "self_mm", "mosei").lr_vision == 1e-4
    assert method_config(params, "self_mm", "synth-sims").label_bound == 1.0
    assert mosi.task_loss == "l1" and mosi.patience == 8


def test_the_papers_self_mm_rows_name_this_method():
    rows = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False)
                      for p in sorted((ROOT / "reports" / "paper_results").glob("*.csv"))])
    mine = rows[rows["method"] == "self_mm"]
    assert {"almt", "clgsi", "sfttr", "aemt"} <= set(mine["paper"])
    assert (mine["variant"] == "self_mm").all()
    assert not (rows["method"] == "self-mm").any()


def test_kill9_then_resume_goes_on_with_the_checkpointed_labels(tmp_path, small_data):
    from .test_train import _cli_train
    data = small_data["synth-mosi"]
    sets = ["methods.self_mm.presets.synth-mosi.max_epochs=4", "methods.self_mm.presets.synth-mosi.patience=10",
            "methods.self_mm.presets.synth-mosi.batch_size=16"]
    full = _cli_train(tmp_path / "full", data, model="self_mm", sets=sets)
    assert full.returncode == 0, full.stderr
    killed = _cli_train(tmp_path / "cut", data, {"MSAREPRO_KILL_AT": "2:3"}, model="self_mm", sets=sets)
    assert killed.returncode == -9
    resumed = _cli_train(tmp_path / "cut", data, resume=True, model="self_mm", sets=sets)
    assert resumed.returncode == 0, resumed.stderr
    for f in ("metrics.json", "predictions.csv", "history.csv"):
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "cut" / f).read_bytes(), f
    with np.load(tmp_path / "full/epochs/method_003.npz") as a, np.load(tmp_path / "cut/epochs/method_003.npz") as b:
        for k in ("ids", "y_m", "y_text", "y_audio", "y_vision"):
            assert np.array_equal(a[k], b[k]), k
