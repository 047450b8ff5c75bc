"""CLMLF: the two contrastive losses pinned on hand-computed cases, the offline augmentation of the data-based
positive, the LBCL / DBCL switches (each must change the gradients), the text encoder's frozen first stage, the
fixed ResNet, and the image-size check."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from msarepro.config import ConfigError
from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import build_method, method_config
from msarepro.methods.clmlf import augment_images, dbcl_loss, drop_tokens, lbcl_loss


def _lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_lbcl_hand_computed():
    z = torch.tensor([[1., 0], [0, 1], [1, 1]])
    y = torch.tensor([0, 1, 0])
    # z z^T = [[1, 0, 1], [0, 1, 1], [1, 1, 2]]; positive pairs (i, j) with y_i = y_j: (0,0) (0,2) (1,1) (2,0) (2,2)
    lse0, lse1, lse2 = _lse(1, 0, 1), _lse(0, 1, 1), _lse(1, 1, 2)
    pairs = [(1 - lse0), (1 - lse0), (1 - lse1), (1 - lse2), (2 - lse2)]
    tau = 0.5
    expected = -sum(pairs) / tau / len(pairs)  # the temperature divides the log-probabilities (authors' code)
    assert lbcl_loss(z, y, tau).item() == pytest.approx(expected, abs=1e-6)
    # labels matter: all one class gives every pair of the batch as positive
    every = [1 - lse0, 0 - lse0, 1 - lse0, 0 - lse1, 1 - lse1, 1 - lse1, 1 - lse2, 1 - lse2, 2 - lse2]
    assert lbcl_loss(z, torch.zeros(3, dtype=torch.long), tau).item() == pytest.approx(-sum(every) / tau / 9,
                                                                                        abs=1e-6)


def test_dbcl_hand_computed():
    z = torch.tensor([[1., 0], [0, 2]])
    z_aug = torch.tensor([[1., 1], [0, 1]])
    tau = 0.5
    # logits z z_aug^T / tau = [[2, 0], [4, 4]]; targets 0, 1
    expected = ((_lse(2, 0) - 2) + (_lse(4, 4) - 4)) / 2
    assert dbcl_loss(z, z_aug, tau).item() == pytest.approx(expected, abs=1e-6)
    # no normalisation: scaling z scales the logits (the authors' dot products)
    assert dbcl_loss(2 * z, z_aug, tau).item() != pytest.approx(expected, abs=1e-3)


def test_drop_tokens_keeps_first_and_last_real_token():
    mask = torch.tensor([[True] * 6 + [False] * 2, [True] * 3 + [False] * 5])
    torch.manual_seed(0)
    dropped = drop_tokens(mask, 0.999)
    assert dropped.tolist() == [[True, False, False, False, False, True, False, False],
                                [True, False, True, False, False, False, False, False]]
    assert torch.equal(drop_tokens(mask, 0.0), mask)
    torch.manual_seed(0)
    half = drop_tokens(mask, 0.5)
    assert not (half & ~mask).any() and half[:, 0].all()


def test_augment_images_crop_and_flip():
    image = torch.arange(2 * 3 * 4 * 4, dtype=torch.float).view(2, 3, 4, 4)
    assert torch.equal(augment_images(image, 1.0, 0.0), image)  # whole image, never flipped
    assert torch.equal(augment_images(image, 1.0, 1.0), image.flip(-1))
    torch.manual_seed(0)
    out = augment_images(image, 0.5, 0.0)
    assert out.shape == image.shape and not torch.equal(out, image)


@pytest.fixture(scope="module")
def mvsa(small_data):
    ds = load_dataset(small_data["synth-mvsa"])
    return ds, to_tensors(ds)["train"]


def _model(params, ds, **changes):
    torch.manual_seed(0)
    cfg = dataclasses.replace(method_config(params, "clmlf", ds.manifest.preset), **changes)
    return build_method("clmlf", cfg, ds.manifest)


def _grads(model, batch) -> dict[str, torch.Tensor]:
    model.train()
    torch.manual_seed(1)
    out = model(batch)
    sum(model.losses(out, batch, 0).values()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("switch,head", [("use_lbcl", "proj."), ("use_dbcl", "proj_aug.")])
def test_contrastive_switches_change_gradients(params, mvsa, switch, head):
    ds, train = mvsa
    batch = train.batch(torch.arange(12))
    other = {"use_lbcl": "use_dbcl", "use_dbcl": "use_lbcl"}[switch]
    on = _grads(_model(params, ds, **{switch: True, other: False}), batch)
    off = _grads(_model(params, ds, **{switch: False, other: False}), batch)
    assert any(n.startswith(head) for n in on) and not any(n.startswith(head) for n in off)
    shared = [n for n in off if n.startswith("fusion.")]
    assert shared and any(not torch.allclose(on[n], off[n]) for n in shared)


def test_loss_terms_follow_the_switches(params, mvsa):
    ds, train = mvsa
    batch = train.batch(torch.arange(8))
    for lbcl, dbcl in ((True, True), (True, False), (False, True), (False, False)):
        model = _model(params, ds, use_lbcl=lbcl, use_dbcl=dbcl).train()
        terms = model.losses(model(batch), batch, 0)
        assert set(terms) == {"sc"} | ({"lbcl"} if lbcl else set()) | ({"dbcl"} if dbcl else set())


def text_of(model) -> set[int]:
    return {id(p) for p in model.text.parameters()}


def test_text_encoder_learns_from_text_frozen_epochs_on(params, mvsa):
    ds, _ = mvsa
    model = _model(params, ds, text_frozen_epochs=2, max_epochs=5)
    assert model.stage_starts() == (0, 2)
    text = {id(p) for p in model.text.parameters()}
    model.enter_stage(0)
    first = {id(p) for g in model.param_groups() for p in g["params"]}
    model.enter_stage(1)
    second = {id(p) for g in model.param_groups() for p in g["params"]}
    assert not (first & text) and text <= second and first < second
    assert _model(params, ds, text_frozen_epochs=0).stage_starts() == (0,)
    never = _model(params, ds, text_frozen_epochs=5, max_epochs=5)  # K >= max_epochs: the text never learns
    assert never.stage_starts() == (0,)
    never.enter_stage(0)
    assert not ({id(p) for g in never.param_groups() for p in g["params"]} & text_of(never))


def test_fixed_resnet_stays_in_eval_mode_and_is_frozen(params, mvsa):
    ds, train = mvsa
    model = _model(params, ds, finetune_image=False).train()
    assert not model.resnet.training and model.text.training
    assert model.frozen_modules() == [model.resnet]
    assert not any(p.requires_grad for p in model.resnet.parameters())
    before = {k: v.clone() for k, v in model.resnet.state_dict().items()}
    model(train.batch(torch.arange(4)))
    assert all(torch.equal(before[k], v) for k, v in model.resnet.state_dict().items())  # BatchNorm stats too
    assert _model(params, ds, finetune_image=True).frozen_modules() == []


def test_images_below_one_grid_cell_are_refused(params, mvsa):
    ds, _ = mvsa
    cfg = dataclasses.replace(method_config(params, "clmlf", ds.manifest.preset), image_size=4)
    with pytest.raises(ConfigError, match="methods.clmlf.image_size"):
        build_method("clmlf", cfg, ds.manifest)


def test_the_papers_clmlf_rows_join_this_methods_runs():
    """INFIG's Table 2 rows of CLMLF name the registered method (method and variant `clmlf`): a clmlf run on
    MVSA-Single gets them as its rows, with delta = ours - paper in the tables' unit (percentage points)."""
    import pandas as pd

    from msarepro.report.tables import build_tables, load_paper_results

    from .conftest import ROOT
    paper = load_paper_results(ROOT / "reports" / "paper_results")
    mine = paper[paper["method"] == "clmlf"]
    assert set(mine["dataset"]) == {"mvsa-single", "mvsa-multiple", "hfm"} and (mine["variant"] == "clmlf").all()
    summary = pd.DataFrame([{"method": "clmlf", "dataset": "mvsa-single", "protocol": "valid-selected",
                             "metric": "Accuracy", "n": 3, "mean": 0.74, "std": 0.01}])
    rows = build_tables(summary, paper)["mvsa-single"]["rows"]
    labels = [r[0] for r in rows]
    assert "clmlf" in labels and any(lab.startswith("clmlf [") for lab in labels)
    cells = [r[2]["Accuracy"] for r in rows if r[0].startswith("clmlf [") and "Accuracy" in r[2]]
    # INFIG prints fractions, the tables percentages: delta in points, 74.0 - 75.33
    assert cells and all(c["delta"] == pytest.approx(100 * (0.74 - 0.7533)) for c in cells)


@pytest.mark.slow
def test_kill9_then_resume_across_the_text_stage_matches_uninterrupted(tmp_path, small_data):
    """The augmentation draws from torch's RNG and the text encoder joins at epoch 2 (a second stage): a run
    killed in epoch 2 and resumed ends with the same files as an uninterrupted one."""
    from .test_train import _cli_train
    data = small_data["synth-mvsa"]
    p = "methods.clmlf.presets.synth-mvsa"
    sets = [f"{p}.max_epochs=3", f"{p}.patience=5", f"{p}.text_frozen_epochs=2", f"{p}.batch_size=32"]
    full = _cli_train(tmp_path / "full", data, model="clmlf", sets=sets)
    assert full.returncode == 0, full.stderr
    killed = _cli_train(tmp_path / "cut", data, {"MSAREPRO_KILL_AT": "2:2"}, model="clmlf", sets=sets)
    assert killed.returncode == -9
    resumed = _cli_train(tmp_path / "cut", data, resume=True, model="clmlf", sets=sets)
    assert resumed.returncode == 0, resumed.stderr
    for f in ("metrics.json", "predictions.csv", "history.csv"):
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "cut" / f).read_bytes(), f
