"""LMF: the low-rank fusion on a case worked by hand, its equality with TFN's full tensor fusion under the weight
its factors make up (also through the built model), the factor learning rate, the task loss, and the real presets
carrying MMSA's published settings."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from msarepro.data.format import Manifest
from msarepro.methods import build_method, method_config
from msarepro.methods.lmf import LMF, low_rank_fusion
from msarepro.methods.tfn import tensor_fusion
from msarepro.train import make_optimizer

MODS = ("text", "audio", "vision")


def _manifest(dims=(6, 5, 4), task="regression") -> Manifest:
    return Manifest(name="t", family="trimodal", task=task, metric_family="mosi", label_range=(-3.0, 3.0),
                    modalities={m: {"dim": d, "max_len": 7} for m, d in zip(MODS, dims)},
                    splits={"train": 8, "valid": 4, "test": 4}, num_classes=3 if task == "classification" else 0)


def _batch(B: int = 5, dims=(6, 5, 4), L: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in zip(MODS, dims):
        n = torch.randint(1, L + 1, (B,), generator=g)
        mask = torch.arange(L)[None] < n[:, None]
        out[m], out[f"{m}_mask"] = torch.randn(B, L, d, generator=g) * mask[..., None], mask
    out["y"] = torch.randn(B, generator=g)
    return out


def test_low_rank_fusion_by_hand():
    """Rank 1, one unit per modality, d_y = 1: ([2, 1] . [1, 0.5]) ([3, 1] . [2, 1]) ([-1, 1] . [1, 3])
    = 2.5 * 7 * 2 = 35; times lambda 0.5, plus bias 1: 18.5. Rank 2 with a second term of 1 * 1 * 1 at lambda 2: 20.5."""
    hs = [torch.tensor([[2.0]]), torch.tensor([[3.0]]), torch.tensor([[-1.0]])]
    fac = [torch.tensor([[[1.0], [0.5]]]), torch.tensor([[[2.0], [1.0]]]), torch.tensor([[[1.0], [3.0]]])]
    out = low_rank_fusion(hs, fac, torch.tensor([0.5]), torch.tensor([1.0]))
    assert out.shape == (1, 1) and out.item() == pytest.approx(18.5)
    fac2 = [torch.cat([f, torch.tensor([[[0.0], [1.0]]])]) for f in fac]  # rank 2: the second factor is [0, 1]
    assert low_rank_fusion(hs, fac2, torch.tensor([0.5, 2.0]), torch.tensor([1.0])).item() == pytest.approx(20.5)


def _full_weight(factors, lam):
    """The (prod (H_m + 1), d_y) weight of TFN that the rank-r factors make up: sum_i lam_i W_a^i x W_v^i x W_t^i,
    flattened in tensor_fusion's order (audio major, text minor)."""
    a, v, t = factors
    return torch.einsum("r,rio,rjo,rko->ijko", lam, a, v, t).flatten(0, 2)


def test_low_rank_fusion_equals_tensor_fusion_with_the_decomposed_weight():
    g = torch.Generator().manual_seed(1)
    widths, rank, d_y, B = (2, 3, 4), 3, 2, 6
    hs = [torch.randn(B, h, generator=g, dtype=torch.float64) for h in widths]
    factors = [torch.randn(rank, h + 1, d_y, generator=g, dtype=torch.float64) for h in widths]
    lam, bias = torch.randn(rank, generator=g, dtype=torch.float64), torch.randn(d_y, generator=g, dtype=torch.float64)
    full = tensor_fusion(*hs) @ _full_weight(factors, lam) + bias  # (B, 3*4*5) @ (60, d_y)
    assert torch.allclose(low_rank_fusion(hs, factors, lam, bias), full, atol=1e-12)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_model_output_is_tfn_fusion_under_the_full_weight(task):
    """The built model's prediction = TFN's tensor fusion of its own sub-network outputs times the full weight
    its factors and rank weights make up, plus its bias (eval mode)."""
    torch.manual_seed(0)
    cfg = LMF.Config(hidden_audio=3, hidden_vision=2, hidden_text=6, text_out=4, rank=2, dropout=0.1)
    model = build_method("lmf", cfg, _manifest(task=task)).eval()
    batch = _batch()
    with torch.no_grad():
        pred = model(batch)["pred"]
        h_t, h_a, h_v = model.subnets(batch)
        expected = (tensor_fusion(h_a, h_v, h_t) @ _full_weight(list(model.factors), model.rank_weights[0])
                    + model.bias)
    assert pred.shape == ((5,) if task == "regression" else (5, 3))
    assert torch.allclose(pred, expected.squeeze(-1) if task == "regression" else expected, atol=1e-5)


def test_factor_lr_puts_the_factors_in_their_own_group():
    cfg = LMF.Config(lr=1e-3, factor_lr=5e-4, weight_decay=0.01)
    model = build_method("lmf", cfg, _manifest())
    opt = make_optimizer(model, cfg)
    ids = [{id(p) for p in g["params"]} for g in opt.param_groups]
    assert ids[0] == {id(p) for p in model.factors}
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 1e-3]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.01]
    assert set().union(*ids) == {id(p) for p in model.parameters()}  # every parameter is trained (cf. MMSA)
    plain = replace(cfg, factor_lr=0.0)
    same = make_optimizer(build_method("lmf", plain, _manifest()), plain)
    assert len(same.param_groups) == 1 and same.param_groups[0]["lr"] == 1e-3


def test_task_loss_by_hand():
    """The only loss term: MSE by default, L1 in the real presets (MMSA's trainer)."""
    pred, y = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 1.0, 2.0])
    batch = {"y": y}
    mse = build_method("lmf", LMF.Config(), _manifest()).losses({"pred": pred}, batch, 0)
    l1 = build_method("lmf", LMF.Config(task_loss="l1"), _manifest()).losses({"pred": pred}, batch, 0)
    assert set(mse) == {"task"} and mse["task"].item() == pytest.approx((0.25 + 4.0) / 3)
    assert l1["task"].item() == pytest.approx((0.5 + 2.0) / 3)


# MMSA's config_regression.json, "lmf" -> datasetParams, written out by hand: hidden_dims (text, audio, vision),
# dropouts[0], rank, batch_size, learning_rate, factor_lr, weight_decay.
MMSA = {"mosi": ((128, 16, 128), 0.3, 3, 64, 1e-3, 1e-3, 0.005), "mosei": ((128, 16, 128), 0.2, 4, 32, 1e-3, 1e-3, 0.001),
        "sims": ((64, 16, 64), 0.2, 4, 64, 2e-3, 5e-4, 0.005), "simsv2": ((64, 32, 64), 0.3, 4, 32, 2e-3, 5e-4, 1e-4)}


@pytest.mark.parametrize("preset", sorted(MMSA))
def test_real_presets_are_mmsas(preset, params):
    hidden, drop, rank, batch, lr, factor_lr, wd = MMSA[preset]
    cfg = method_config(params, "lmf", preset)
    assert (cfg.hidden_text, cfg.hidden_audio, cfg.hidden_vision) == hidden and cfg.text_out == hidden[0] // 2
    assert (cfg.dropout, cfg.rank, cfg.batch_size, cfg.lr, cfg.factor_lr, cfg.weight_decay) == \
        (drop, rank, batch, lr, factor_lr, wd)
    assert cfg.patience == 8 and cfg.task_loss == "l1"
