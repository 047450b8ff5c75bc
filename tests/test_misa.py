"""MISA: each loss term on hand-computed cases (CMD against a direct numpy computation, the difference loss on
orthogonal and non-orthogonal matrices, the reconstruction loss), the total loss built from them with the
configured weights, padding that never reaches the utterance vectors, and the real presets carrying MMSA's
published settings."""
from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest
import torch

from msarepro import config
from msarepro.data import load_dataset
from msarepro.data.format import Manifest
from msarepro.data.loader import to_tensors
from msarepro.methods import build_method, method_config
from msarepro.methods.misa import MISA, MODS, cmd, difference, reconstruction
from msarepro.train import make_optimizer, provide_inputs

DIMS = {"text": 6, "vision": 4, "audio": 5}


def _manifest(preset: str = "") -> Manifest:
    return Manifest(name="tiny", family="trimodal", task="regression", metric_family="mosi", label_range=(-3.0, 3.0),
                    modalities={m: {"dim": d, "max_len": 9} for m, d in DIMS.items()},
                    splits={"train": 8, "valid": 4, "test": 4}, preset=preset)


def _batch(B: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in DIMS.items():
        n = torch.randint(2, 10, (B,), generator=g)
        mask = torch.arange(9)[None] < n[:, None]
        out[m] = torch.randn(B, 9, d, generator=g) * mask[..., None]
        out[f"{m}_mask"] = mask
    out["y"] = torch.randn(B, generator=g)
    return out


def _model(**settings) -> MISA:
    cfg = config.build(MISA.Config, {"hidden": 8, "fusion_ff": 16, **settings}, "methods.misa")
    torch.manual_seed(0)
    return build_method("misa", cfg, _manifest())


# -- the loss terms on hand-computed cases ------------------------------------------------------------------------
def test_cmd_on_a_hand_computed_case():
    # 1-d: x1 = {0, 1}, x2 = {0, 0}. Means differ by 0.5; x1's central moments are 0.25 (k=2), 0 (k=3), 0.0625 (k=4),
    # 0 (k=5), x2's all 0: CMD_5 = 0.5 + 0.25 + 0 + 0.0625 + 0 = 0.8125.
    x1, x2 = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [0.0]])
    assert cmd(x1, x2, 5).item() == pytest.approx(0.8125)
    assert cmd(x1, x2, 1).item() == pytest.approx(0.5)  # K = 1: the distance of the means only
    assert cmd(x1, x2, 2).item() == pytest.approx(0.75)


def test_cmd_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 1, (7, 4)), rng.uniform(0, 1, (5, 4)) ** 2  # different sizes and distributions
    want = np.linalg.norm(a.mean(0) - b.mean(0))
    for k in range(2, 6):
        want += np.linalg.norm(((a - a.mean(0)) ** k).mean(0) - ((b - b.mean(0)) ** k).mean(0))
    got = cmd(torch.tensor(a), torch.tensor(b), 5).item()
    assert got == pytest.approx(want, rel=1e-12)
    assert cmd(torch.tensor(a), torch.tensor(a), 5).item() == pytest.approx(0.0, abs=1e-12)  # same sample: 0
    assert cmd(torch.tensor(a), torch.tensor(b), 3).item() < got  # fewer moments, fewer (positive) terms


def test_difference_is_zero_for_orthogonal_and_positive_otherwise():
    # A's columns (1,-1,0,0), (0,0,1,-1); B's columns both (1,1,-1,-1): centred, unit rows, every column of A
    # orthogonal to every column of B -> A^T B = 0.
    A = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    B = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]])
    assert difference(A, B).item() == pytest.approx(0.0, abs=1e-12)
    # A with itself: A^T A = [[2, 0], [0, 2]] (rows already unit and centred): ||A^T A||_F^2 / d^2 = 8 / 4 = 2
    assert difference(A, A).item() == pytest.approx(2.0, rel=1e-5)
    # centring and row normalisation: shifting every row and scaling rows changes nothing
    assert difference(A + 3.0, 5.0 * B).item() == pytest.approx(0.0, abs=1e-12)
    assert difference(A * torch.tensor([[2.0], [2.0], [2.0], [2.0]]), A).item() == pytest.approx(2.0, rel=1e-5)


def test_reconstruction_is_the_mean_squared_error():
    u = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    u_hat = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert reconstruction(u_hat, u).item() == pytest.approx((0 + 4 + 9 + 0) / 4)
    assert reconstruction(u, u).item() == 0.0


# -- the total loss -----------------------------------------------------------------------------------------------
def test_losses_are_the_weighted_terms_over_the_papers_pairs():
    model = _model(sim_weight=0.7, diff_weight=0.2, recon_weight=0.4)
    model.eval()
    batch = _batch()
    out = model(batch)
    terms = model.losses(out, batch, 0)
    assert set(terms) == {"task", "sim", "diff", "recon"}
    s, p = ({m: out[f"{k}_{m}"] for m in MODS} for k in ("shared", "private"))
    pairs = list(combinations(MODS, 2))
    sim = sum(cmd(s[a], s[b], 5) for a, b in pairs) / 3
    diff = sum(difference(p[m], s[m]) for m in MODS) + sum(difference(p[a], p[b]) for a, b in pairs)
    recon = sum(reconstruction(out[f"recon_{m}"], out[f"u_{m}"]) for m in MODS) / 3
    assert terms["sim"].item() == pytest.approx(0.7 * sim.item())
    assert terms["diff"].item() == pytest.approx(0.2 * diff.item())
    assert terms["recon"].item() == pytest.approx(0.4 * recon.item())
    assert terms["task"].item() == pytest.approx(torch.mean((out["pred"] - batch["y"]) ** 2).item())
    assert all(terms[k].item() > 0 for k in ("sim", "diff", "recon"))
    # a weight of 0 removes its term; K changes L_sim
    off = _model(sim_weight=0.0, diff_weight=0.0, recon_weight=0.0)
    assert all(off.losses(off(batch), batch, 0)[k].item() == 0.0 for k in ("sim", "diff", "recon"))
    k2 = _model(sim_weight=0.7, cmd_moments=2)
    k2.eval()
    assert k2.losses(k2(batch), batch, 0)["sim"].item() != pytest.approx(terms["sim"].item())


def test_one_shared_encoder_private_ones_per_modality_and_a_six_step_fusion():
    model = _model()
    assert len(model.private) == 3 and len({id(model.private[m]) for m in MODS}) == 3
    assert isinstance(model.shared[1], torch.nn.Sigmoid) and all(
        isinstance(model.private[m][1], torch.nn.Sigmoid) for m in MODS)
    # the sLSTM width is the modality's input width by default (the authors' code), 4 r wide out
    assert {m: model.rnn[m].out_dim for m in MODS} == {m: 4 * d for m, d in DIMS.items()}
    assert _model(rnn_hidden=3).rnn["vision"].out_dim == 12
    out = model(_batch())
    assert out["fused"].shape == (6, 6 * 8) and out["pred"].shape == (6,)
    with pytest.raises(config.ConfigError, match=r"methods.misa.hidden \(10\) must be divisible"):
        config.build(MISA.Config, {"hidden": 10, "fusion_heads": 4}, "methods.misa")


def test_padding_never_reaches_the_utterance_vectors():
    model = _model()
    model.eval()
    batch = _batch()
    noisy = {k: v.clone() for k, v in batch.items()}
    for m in MODS:
        noisy[m] = noisy[m] + 100.0 * (~batch[f"{m}_mask"])[..., None]  # garbage at the padded positions only
    with torch.no_grad():
        a, b = model(batch), model(noisy)
    assert torch.allclose(a["pred"], b["pred"], atol=1e-6)
    for m in MODS:
        assert torch.allclose(a[f"u_{m}"], b[f"u_{m}"], atol=1e-6)


def test_a_bert_text_encoder_is_averaged_over_the_real_tokens(small_data, params, tmp_path):
    ds = load_dataset(small_data["synth-mosi"])
    cfg = replace(method_config(params, "misa", "synth-mosi"), text_encoder="tiny-bert")
    provide_inputs("misa", cfg, ds, tmp_path)
    torch.manual_seed(0)
    model = build_method("misa", cfg, ds.manifest)
    assert "text" not in model.rnn and model.project["text"][0].in_features == model.text.out_dim
    model.eval()
    batch = to_tensors(ds)["train"].batch(torch.arange(8))
    ids, mask = batch["text_ids"], batch["text_ids_mask"]
    assert (~mask).any()
    other = dict(batch, text_ids=torch.where(mask, ids, torch.ones_like(ids)))  # other ids at the padding
    with torch.no_grad():
        u, v = model(batch)["u_text"], model(other)["u_text"]
        seq, _ = model.text(batch)
        want = model.project["text"]((seq * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
    assert torch.allclose(u, v, atol=1e-5) and torch.allclose(u, want, atol=1e-6)


# -- the published presets -----------------------------------------------------------------------------------------
# MMSA's config_regression.json, "misa" -> datasetParams (simsv2: only in the GitHub repository's later file),
# written out by hand: batch, lr, hidden_size, dropout, sim / diff / recon weight, grad_clip, weight_decay, BERT.
MMSA = {
    "mosi": (16, 1e-4, 128, 0.2, 0.3, 0.1, 1.0, 0.8, 0.0, "bert-base-uncased"),
    "mosei": (64, 1e-4, 128, 0.5, 0.8, 0.3, 1.0, 0.8, 5e-5, "bert-base-uncased"),
    "sims": (64, 1e-4, 128, 0.0, 1.0, 0.3, 0.8, 1.0, 5e-5, "bert-base-chinese"),
    "simsv2": (16, 1e-4, 64, 0.5, 1.0, 0.5, 0.5, 0.8, 5e-5, "bert-base-chinese"),
}


@pytest.mark.parametrize("preset", sorted(MMSA))
def test_real_presets_carry_mmsas_settings(params, preset):
    cfg = method_config(params, "misa", preset)
    got = (cfg.batch_size, cfg.lr, cfg.hidden, cfg.dropout, cfg.sim_weight, cfg.diff_weight, cfg.recon_weight,
           cfg.grad_clip, cfg.weight_decay, cfg.text_encoder)
    assert got == MMSA[preset]
    common = (cfg.patience, cfg.optimizer, cfg.cmd_moments, cfg.finetune, cfg.select_metric)
    assert common == (8, "adam", 5, True, "loss")


def test_embedded_preset_builds_small_and_its_weight_decay_reaches_the_optimizer(params):
    cfg = method_config(params, "misa", "synth-mosi")
    assert cfg.text_encoder == "features" and cfg.hidden <= 64
    model = build_method("misa", replace(cfg, weight_decay=0.01), _manifest("synth-mosi"))
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert make_optimizer(model, replace(cfg, weight_decay=0.01)).param_groups[0]["weight_decay"] == 0.01


# -- the papers' MISA rows ----------------------------------------------------------------------------------------
def test_the_papers_misa_rows_sit_under_this_methods_runs():
    """reports/paper_results name MISA's rows `misa`, the registered name: a misa run on MOSI gets them as its ↳
    rows, with Δ = ours − paper (no alias needed)."""
    import pandas as pd

    from msarepro.report.tables import build_tables, load_paper_results

    from .conftest import ROOT
    paper = load_paper_results(ROOT / "reports" / "paper_results")
    assert {"almt", "clgsi", "sfttr", "aemt"} <= set(paper.loc[paper["method"] == "misa", "paper"])
    summary = pd.DataFrame([{"method": "misa", "dataset": "mosi", "protocol": "valid-selected", "metric": "MAE",
                             "n": 3, "mean": 0.8, "std": 0.01}])
    rows = build_tables(summary, paper)["mosi"]["rows"]
    labels = [r[0] for r in rows]
    mine = [lab for lab in labels if lab.startswith("misa")]
    assert mine[0] == "misa" and len(mine) > 1 and all(lab.startswith("misa [") for lab in mine[1:])
    assert labels.index("misa") + len(mine) - 1 == labels.index(mine[-1])  # the paper rows follow the run's row
    cells = [r[2]["MAE"] for r in rows if r[0].startswith("misa [") and "MAE" in r[2]]
    assert cells and all(c["delta"] is not None for c in cells)
