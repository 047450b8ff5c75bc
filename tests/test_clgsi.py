"""CLGSI (docs/methods/clgsi.md): the weight function (eq. 2), the pair partition (eq. 1, sec. 3.4.1), the weighted
contrastive loss (eq. 3), GLFK's stage shapes (sec. 3.2), the Subnet (sec. 3.3) and every ablation switch."""
from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch

from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import build_method, method_config
from msarepro.methods.clgsi import (GLFK, Subnet, intensity_contrastive_loss, intensity_difference,
                                    intensity_weights, map_labels, pair_partition)

from .conftest import fast_params

KAPPA = 0.4


def test_weight_function_at_hand_computed_points():
    # eq. 2 with gain 1.5: positives (D <= kappa) |tanh(D - 0.8)| * 1.5, negatives |tanh(D)| * 1.5
    d = torch.tensor([0.0, 0.2, 0.4, 0.41, 0.5, 0.8, 2.0], dtype=torch.float64)
    expected = [0.9960551554,  # tanh(0.8) * 1.5: identical labels weigh most among positives
                0.8055743505,  # tanh(0.6) * 1.5
                0.5699234434,  # D = kappa is a positive: tanh(0.4) * 1.5
                0.5827090203,  # just past kappa: negative branch tanh(0.41) * 1.5
                0.6931757359,  # tanh(0.5) * 1.5
                0.9960551554,  # tanh(0.8) * 1.5
                1.4460413701]  # tanh(2.0) * 1.5: the largest gap weighs most
    w = intensity_weights(d, KAPPA, 1.5)
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), atol=1e-9)
    # the two branches meet at kappa; positives fall and negatives rise with D
    assert w[2] == pytest.approx(math.tanh(KAPPA) * 1.5)
    assert w[0] > w[1] > w[2] and w[3] < w[4] < w[5] < w[6]


def test_pair_partition_on_a_small_labelled_batch():
    y = torch.tensor([-3.0, -1.8, 0.0, 0.6, 3.0])  # MOSI scale -> [-1, -0.6, 0, 0.2, 1]
    ym = map_labels(y, (-3.0, 3.0))
    assert torch.allclose(ym, torch.tensor([-1.0, -0.6, 0.0, 0.2, 1.0]))
    d = intensity_difference(ym)
    assert d[0, 1] == pytest.approx(0.4) and d[1, 4] == pytest.approx(1.6)
    pos, neg = pair_partition(d, KAPPA)
    want_pos = {(0, 1), (1, 0), (2, 3), (3, 2)}  # |diff| 0.4 (the boundary) and 0.2
    assert {tuple(p) for p in pos.nonzero().tolist()} == want_pos
    off_diag = {(i, j) for i in range(5) for j in range(5) if i != j}
    assert {tuple(p) for p in neg.nonzero().tolist()} == off_diag - want_pos
    assert not pos.diagonal().any() and not neg.diagonal().any()  # eq. 1: j != i


def test_label_map_paper_versus_code():
    y = torch.tensor([-1.0, 0.2, 1.0])
    assert torch.allclose(map_labels(y, (-1.0, 1.0), "paper"), y)  # SIMS is already in [-1, 1]
    assert torch.allclose(map_labels(y, (-1.0, 1.0), "code"), y / 3)  # the authors' code divides by 3 anyway


def _two_sample_case():
    # sample 0: every modality e1; sample 1: every modality (e1 + e2)/sqrt(2); cosine across samples 1/sqrt(2)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]) / math.sqrt(2)
    feats = [torch.stack([a, b]).double() for _ in range(3)]
    return feats, torch.tensor([0.0, 1.0], dtype=torch.float64)  # D = 1 > kappa: the samples are negatives


def test_weighted_loss_on_a_hand_computed_case():
    feats, y = _two_sample_case()
    # anchor i: P^i = the 3 inter pairs (X_i, Y_i), w = tanh(0.8) * 1.5 = 0.99606, sim 1;
    #           N^i = the 9 pairs (X_i, Y_k), w = tanh(1) * 1.5 = 1.14239, sim 1/sqrt(2) -> w * sim = 0.80779
    # tau = 1: L = log(1 + 9 e^0.80779 / (3 e^0.99606)) = log(1 + 3 e^-0.18826) = log(3.48519) = 1.24852
    loss = intensity_contrastive_loss(feats, y, KAPPA, temperature=1.0, gain=1.5)
    assert loss.item() == pytest.approx(1.2485229943, abs=1e-8)
    # "w/o Weight": every w = 1: log(1 + 3 e^(0.70711 - 1)) = 1.17505
    unweighted = intensity_contrastive_loss(feats, y, KAPPA, temperature=1.0, weighted=False)
    assert unweighted.item() == pytest.approx(1.1750501739, abs=1e-8)
    # tau = 0.5 doubles every logit: log(1 + 3 e^(2 * -0.18826)) = 1.11800
    assert intensity_contrastive_loss(feats, y, KAPPA, 0.5).item() == pytest.approx(1.1179983612, abs=1e-8)
    # only positives (D = 0.2 <= kappa): the ratio is 1, the loss 0
    assert intensity_contrastive_loss(feats, torch.tensor([0.0, 0.2], dtype=torch.float64), KAPPA, 1.0).item() \
        == pytest.approx(0.0, abs=1e-12)


def test_loss_matches_the_paper_pair_sets_enumerated():
    """Eq. 3 against a loop over the paper's listed sets P_intra, P_inter, N_intra, N_inter."""
    torch.manual_seed(3)
    b, tau = 6, 0.1
    feats = [torch.randn(b, 4, dtype=torch.float64) for _ in range(3)]  # T, V, A
    y = torch.tensor([-1.0, -0.8, -0.1, 0.2, 0.3, 0.9], dtype=torch.float64)
    z = [torch.nn.functional.normalize(f, dim=-1) for f in feats]
    total = 0.0
    for i in range(b):
        num = den = 0.0
        for (x, yy) in itertools.combinations(range(3), 2):  # (V_i, T_i), (V_i, A_i), (T_i, A_i)
            w = abs(math.tanh(0.0 - 2 * KAPPA)) * 1.5
            e = math.exp(w * float(z[x][i] @ z[yy][i]) / tau)
            num, den = num + e, den + e
        for j in range(b):
            if j == i:
                continue
            d = abs(float(y[i] - y[j]))
            positive = d <= KAPPA
            w = abs(math.tanh(d - 2 * KAPPA)) * 1.5 if positive else abs(math.tanh(d)) * 1.5
            for x, yy in itertools.product(range(3), range(3)):  # intra (x == yy) and both inter directions
                e = math.exp(w * float(z[x][i] @ z[yy][j]) / tau)
                den += e
                num += e if positive else 0.0
        total += -math.log(num / den)
    got = intensity_contrastive_loss(feats, y, KAPPA, tau)
    assert got.item() == pytest.approx(total / b, rel=1e-10)


def test_glfk_stage_shapes():
    fc = torch.randn(2, 8, 3)  # (B, d_c, 3) = [V_c, T_c, A_c]
    glfk = GLFK(beta=16)
    fk, stages = glfk(fc, return_stages=True)
    assert glfk.names == ["global", "local", "fine", "knowledge_reduce", "knowledge"]
    assert [tuple(s.shape[1:]) for s in stages] == [(8, 1), (8, 8), (8, 16), (8, 8), (8, 1)]
    assert fk.shape == (2, 8)
    _, gk = GLFK(16, "gk")(fc, return_stages=True)
    assert [tuple(s.shape[1:]) for s in gk] == [(8, 1), (8, 1)]  # no Local / Fine
    _, lfk = GLFK(16, "lfk")(fc, return_stages=True)
    assert [tuple(s.shape[1:]) for s in lfk] == [(8, 8), (8, 16), (8, 8), (8, 1)]  # no Global
    _, direct = GLFK(16, knowledge_direct=True)(fc, return_stages=True)
    assert [tuple(s.shape[1:]) for s in direct][-2:] == [(8, 16), (8, 1)]  # the authors' code: beta -> 1
    # 1x1 convolutions act on each of the d_c rows alike: permuting rows permutes F_k
    perm = torch.randperm(8)
    assert torch.allclose(glfk(fc[:, perm]), fk[:, perm], atol=1e-6)


def test_subnet_pools_real_positions_only():
    torch.manual_seed(0)
    net = Subnet(d_m=16, d_s=5)
    x = torch.randn(3, 7, 16)
    mask = torch.arange(7)[None] < torch.tensor([7, 4, 2])[:, None]
    out = net(x, mask)
    assert out.shape == (3, 5) and ((out > 0) & (out < 1)).all()  # Sigmoid
    x2 = x.clone()
    x2[~mask] = 100.0  # padding must not matter
    assert torch.allclose(net(x2, mask), out)
    assert net.net[0].out_features == 2  # W1: d_m -> d_m / 8
    assert Subnet(5, 4).net[0].out_features == 1  # MOSI's 5-d audio keeps one hidden unit


ABLATIONS = {
    "w/o CL": {"use_cl": False},
    "w/o Weight": {"cl_weights": False},
    "Add": {"fusion": "add"},
    "Concatenate": {"fusion": "concat"},
    "GK": {"fusion": "gk"},
    "LFK": {"fusion": "lfk"},
    "Transformer-2": {"fusion": "transformer", "fusion_layers": 2},
    "w/o Con": {"use_common": False},
    "w/o Spe": {"use_specific": False},
    "label_map code": {"label_map": "code"},
    "tiny-bert text": {"text_encoder": "tiny-bert"},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_switches_build_and_train_a_step(name, small_data, params):
    torch.manual_seed(0)
    ds = load_dataset(small_data["synth-sims"])
    cfg = replace(method_config(params, "clgsi", ds.manifest.preset), **ABLATIONS[name])
    model = build_method("clgsi", cfg, ds.manifest)
    batch = to_tensors(ds)["train"].batch(torch.arange(12))
    out = model(batch)
    terms = model.losses(out, batch, 0)
    has_cl = cfg.use_cl and cfg.use_common
    assert ("cl" in terms) == has_cl
    d_c, d_s = cfg.common_dim, cfg.specific_dim
    common = {"concat": 3 * d_c, "transformer": 3 * d_c}.get(cfg.fusion, d_c) if cfg.use_common else 0
    assert out["fused"].shape == (12, common + (3 * d_s if cfg.use_specific else 0))
    sum(terms.values()).backward()
    groups = model.param_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_contrastive_term_is_scaled_by_gamma(small_data, params):
    ds = load_dataset(small_data["synth-mosi"])
    cfg = method_config(params, "clgsi", ds.manifest.preset)
    torch.manual_seed(0)
    model = build_method("clgsi", cfg, ds.manifest).eval()
    batch = to_tensors(ds)["train"].batch(torch.arange(16))
    out = model(batch)
    t1 = model.losses(out, batch, 0)["cl"]
    model.cfg = replace(cfg, gamma=2 * cfg.gamma)
    assert model.losses(out, batch, 0)["cl"].item() == pytest.approx(2 * t1.item(), rel=1e-6)
    model.cfg = replace(cfg, gamma=0.0)
    assert "cl" not in model.losses(out, batch, 0)


def test_parameter_groups_take_table7_learning_rates(params, small_data):
    ds = load_dataset(small_data["synth-mosi"])
    cfg = method_config(params, "clgsi", "mosi")  # Table 7: BERT 5e-5, visual 5e-3, audio 1e-3, others 1e-2
    assert (cfg.batch_size, cfg.lr_text, cfg.lr_video, cfg.lr_audio, cfg.lr) == (64, 5e-5, 5e-3, 1e-3, 1e-2)
    assert (cfg.common_dim, cfg.specific_dim, cfg.gamma) == (64, 64, 0.24)
    assert method_config(params, "clgsi", "mosei").lr == 2.5e-3 and method_config(params, "clgsi", "sims").gamma == 1.0
    small = replace(method_config(params, "clgsi", ds.manifest.preset), lr_text=1e-4, lr_audio=2e-4, lr_video=3e-4,
                    lr=4e-4)
    model = build_method("clgsi", small, ds.manifest)
    by_lr = {g["lr"]: sum(p.numel() for p in g["params"]) for g in model.param_groups()}
    assert by_lr[2e-4] == sum(p.numel() for p in model.audio.parameters())
    assert by_lr[3e-4] == sum(p.numel() for p in model.vision.parameters())
    assert by_lr[4e-4] == sum(p.numel() for n, p in model.named_parameters()
                              if n.split(".")[0] not in ("text", "text_ctx", "audio", "vision"))


def test_ablation_runs_end_to_end_through_the_training_loop(small_data, tmp_path):
    import json

    from msarepro.train import RunSpec, run

    p = fast_params(1, **{"methods.clgsi.fusion": "lfk", "methods.clgsi.cl_weights": "false"})
    m = run(p, RunSpec("clgsi", str(small_data["synth-mosi"]), 1111, tmp_path / "run", progress=False))
    assert m["epochs_run"] == 1 and set(m["test"]) >= {"MAE", "Corr", "Non0_acc_2", "Mult_acc_7"}
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["method"]
    assert resolved["fusion"] == "lfk" and resolved["cl_weights"] is False and resolved["select_metric"] == "MAE"
