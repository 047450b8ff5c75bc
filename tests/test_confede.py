"""ConFEDE: each loss term on hand-computed cases (the intra-sample NT-Xent in closed form, the inter-sample term
against a direct enumeration of the pairs, the unimodal loss on fixed heads), the total loss from its configured
weights, options that change what they say, SFTTR's shared pieces being the same objects, and the papers' ConFEDE
rows joining confede's runs."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from msarepro import config
from msarepro.data.format import Manifest
from msarepro.methods import build_method, method_config, sfttr
from msarepro.methods.confede import ConFEDE
from msarepro.methods.contrastive import C_A, C_T, C_V, F_A, F_T, F_V, contrastive_pairs, nt_xent, select_pairs

DIMS = {"text": 6, "vision": 4, "audio": 5}


def _manifest(unimodal: bool = False) -> Manifest:
    return Manifest(name="tiny", family="trimodal", task="regression", metric_family="mosi", label_range=(-3.0, 3.0),
                    modalities={m: {"dim": d, "max_len": 9} for m, d in DIMS.items()},
                    splits={"train": 8, "valid": 4, "test": 4}, unimodal_labels=unimodal)


def _batch(B: int = 8, seed: int = 0, unimodal: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in DIMS.items():
        n = torch.randint(2, 10, (B,), generator=g)
        mask = torch.arange(9)[None] < n[:, None]
        out[m] = torch.randn(B, 9, d, generator=g) * mask[..., None]
        out[f"{m}_mask"] = mask
    out["y"] = torch.tensor([-2.0, -2.0, -2.0, 1.0, 1.0, 1.0, 0.0, 0.0])[:B]
    if unimodal:
        for k in "TVA":
            out[f"y_{k}"] = torch.randn(B, generator=g)
    return out


def _model(unimodal: bool = False, **settings) -> ConFEDE:
    small = {"text_pool": "transformer", "encoder_dim": 8, "encoder_heads": 2, "encoder_ff": 16, "proj_dim": 8,
             "fusion_heads": 2}
    cfg = config.build(ConFEDE.Config, {**small, **settings}, "methods.confede")
    torch.manual_seed(0)
    return build_method("confede", cfg, _manifest(unimodal))


def _feats(rows: list[list[list[float]]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)  # (N, 6, d)


# -- the loss terms on hand-computed cases ------------------------------------------------------------------------
def test_intra_sample_term_in_closed_form():
    """One sample, no partners: positives (s_T, s_V), (s_T, s_A), negatives (s_T, d_T), (s_T, d_V), (s_T, d_A), all
    sharing the anchor s_T. Cosines 1, 0 | -1, 0, 0 at temperature 0.5 -> s = 2, 0 | -2, 0, 0;
    loss = sum over the two positives of log(e^2 + e^0 + e^-2 + e^0 + e^0) - s_p."""
    f = _feats([[[1, 0], [1, 0], [0, 1], [-1, 0], [0, 1], [0, -1]]])
    none = torch.zeros(1, 0, dtype=torch.long)
    pairs = contrastive_pairs(1, none, none.bool(), none, none.bool())
    got = nt_xent(f, pairs, 1, temperature=0.5)
    denom = math.exp(2) + 3 + math.exp(-2)
    assert got.item() == pytest.approx(2 * math.log(denom) - 2.0, rel=1e-12)
    assert sorted(zip(pairs["a_feat"].tolist(), pairs["b_feat"].tolist(), pairs["positive"].tolist())) == sorted(
        [(C_T, C_V, True), (C_T, C_A, True), (C_T, F_T, False), (C_T, F_V, False), (C_T, F_A, False)])


def test_confedes_pairwise_form_in_closed_form():
    """The same case in ConFEDE's form: each positive against itself and the anchor's three negatives,
    mean over the two positives (s = 2 and 0; the negatives s = -2, 0, 0)."""
    f = _feats([[[1, 0], [1, 0], [0, 1], [-1, 0], [0, 1], [0, -1]]])
    none = torch.zeros(1, 0, dtype=torch.long)
    pairs = contrastive_pairs(1, none, none.bool(), none, none.bool())
    got = nt_xent(f, pairs, 1, temperature=0.5, denominator="pair")
    neg = math.exp(-2) + 2
    want = ((math.log(math.exp(2) + neg) - 2) + (math.log(1 + neg) - 0)) / 2
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_inter_sample_term_against_a_direct_enumeration():
    """Two samples, each the other's neighbour (no outliers): sample 0's pairs are its intra-sample pairs, the
    partner's own intra-sample pairs and (s_m^0, s_m^1) for m in T, V, A; eq. 8's denominator per anchor feature
    of each group. Checked against a loop over those pairs written out here."""
    torch.manual_seed(3)
    f = torch.randn(2, 6, 3, dtype=torch.float64)
    neigh = torch.tensor([[1], [0]])
    ok = torch.ones(2, 1, dtype=torch.bool)
    empty = torch.zeros(2, 0, dtype=torch.long)
    got = nt_xent(f, contrastive_pairs(2, neigh, ok, empty, empty.bool()), 2, temperature=0.7)

    def s(a, b):
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0)) / 0.7

    total = 0.0
    for i, j in ((0, 1), (1, 0)):
        groups = []  # (positives, negatives) sharing one anchor feature of one sample
        own_ct = ([(f[i, C_T], f[i, C_V]), (f[i, C_T], f[i, C_A]), (f[i, C_T], f[j, C_T])],
                  [(f[i, C_T], f[i, k]) for k in (F_T, F_V, F_A)])
        groups += [own_ct, ([(f[i, C_V], f[j, C_V])], []), ([(f[i, C_A], f[j, C_A])], [])]
        partner = [(f[j, C_T], f[j, k]) for k in (F_T, F_V, F_A)]
        groups.append(([(f[j, C_T], f[j, C_V]), (f[j, C_T], f[j, C_A])], partner))
        for pos, neg in groups:
            denom = sum(math.exp(s(a, b)) for a, b in pos + neg)
            total += sum(math.log(denom) - s(a, b) for a, b in pos)
    assert got.item() == pytest.approx(total / 2, rel=1e-10)


def test_pair_selection_by_label_and_similarity():
    """Anchor 0 (label 1): same-label candidates 1 (cos .9), 2 (.5); different-label 3 (.8), 4 (-.9), 5 (.1),
    6 (.7). Neighbours = the two most similar same-label ones; outliers = 2 least (4, 5), then 2 most similar (3, 6)."""
    sim = torch.tensor([[1.0, 0.9, 0.5, 0.8, -0.9, 0.1, 0.7]])
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, -1.0, 2.0])
    exclude = torch.tensor([[True] + [False] * 6])
    neigh, neigh_ok, outl, outl_ok = select_pairs(sim, labels[:1], labels, exclude, neighbours=2, pool=2)
    assert sorted(neigh[0].tolist()) == [1, 2] and neigh_ok.all()
    assert outl[0].tolist() == [4, 5, 3, 6] and outl_ok.all()


def test_unimodal_term_on_fixed_heads_and_targets():
    """The shared head replaced by Linear(d -> 1) reading feature 0: the loss is the MSE over B x 6 of
    feats[:, k, 0] against [y, y, y, y_T, y_V, y_A]; without T/A/V labels all six targets are y."""
    m = _model(unimodal=True)
    d = m.cfg.proj_dim
    lin = nn.Linear(d, 1, bias=False)
    lin.weight.data.zero_()
    lin.weight.data[0, 0] = 1.0
    m.unimodal_head = lin
    feats = torch.zeros(2, 6, d)
    feats[:, :, 0] = torch.tensor([[1.0, 0.0, 2.0, 1.0, 0.0, 3.0], [0.0, 0.0, 0.0, 2.0, 2.0, 2.0]])
    batch = {"y": torch.tensor([1.0, 0.0]), "y_T": torch.tensor([0.0, 2.0]), "y_V": torch.tensor([0.0, 0.0]),
             "y_A": torch.tensor([1.0, 2.0])}
    # sample 0: errors 0, 1, 1 | 1, 0, 2 -> 0+1+1+1+0+4 = 7; sample 1: 0, 0, 0 | 0, 2, 0 -> 4; mean over 12
    assert m.unimodal_loss(feats, batch).item() == pytest.approx(11 / 12)
    del batch["y_T"], batch["y_V"], batch["y_A"]
    # targets all y: sample 0: 0, 1, 1, 0, 1, 4 = 7; sample 1: 0, 0, 0, 4, 4, 4 = 12
    assert m.unimodal_loss(feats, batch).item() == pytest.approx(19 / 12)


# -- the model ----------------------------------------------------------------------------------------------------
def test_total_loss_weights_and_options_change_what_they_say():
    batch = _batch()
    m = _model(beta_cl=0.3, beta_uni=0.5)
    m.eval()  # no dropout: the same features give the same terms
    out = m(batch)
    terms = m.losses(out, batch, 0)
    assert set(terms) == {"pred", "uni", "cl"}
    assert terms["pred"].item() == pytest.approx(((out["pred"] - batch["y"]) ** 2).mean().item(), rel=1e-5)
    torch.manual_seed(5)
    cl = m.contrastive_loss(out, batch).item()
    torch.manual_seed(5)
    assert terms["cl"].item() != 0 and 0.3 * cl == pytest.approx(0.3 * m.contrastive_loss(out, batch).item())
    assert terms["uni"].item() == pytest.approx(0.5 * m.unimodal_loss(out["feats"], batch).item(), rel=1e-5)
    torch.manual_seed(5)
    pair = m.contrastive_loss(out, batch).item()
    torch.manual_seed(5)
    anchor = _model(cl_denominator="anchor").eval().contrastive_loss(out, batch).item()
    assert pair != pytest.approx(anchor)  # the NT-Xent form option reaches the loss
    assert set(_model(contrastive=False).losses(out, batch, 0)) == {"pred", "uni"}
    assert set(_model(beta_uni=0.0).losses(out, batch, 0)) == {"pred", "cl"}


def test_fusion_is_the_concatenation_and_sequential_fusion_is_refused():
    m = _model()
    assert not hasattr(m, "cme_va") and m.regressor[0].in_features == 6 * m.cfg.proj_dim
    out = m.eval()(_batch())
    assert out["pred"].shape == (8,) and out["feats"].shape == (8, 6, m.cfg.proj_dim)
    with pytest.raises(config.ConfigError, match="concatenation"):
        _model(fusion="sequential")


def test_sfttr_uses_the_same_shared_pieces():
    assert sfttr.nt_xent is nt_xent and sfttr.contrastive_pairs is contrastive_pairs
    assert sfttr.select_pairs is select_pairs


def test_embedded_preset_is_small(params):
    cfg = method_config(params, "confede", "synth-mosi")
    assert (cfg.fusion, cfg.beta_cl, cfg.proj_dim) == ("concat", 0.005, 32)
    code = {"mosi": (16, 25, 2, "MAE"), "mosei": (8, 6, 3, "MAE"), "sims": (32, 50, 2, "Mult_acc_2")}
    for p, want in code.items():  # the authors' code, <dataset>/config.py
        cfg = method_config(params, "confede", p)
        assert (cfg.batch_size, cfg.max_epochs, cfg.encoder_layers, cfg.select_metric) == want
        assert (cfg.lr, cfg.weight_decay, cfg.temperature, cfg.beta_cl, cfg.beta_uni) == (1e-4, 1e-3, 0.5, 0.1, 0.01)
        assert (cfg.pairs_from, cfg.cl_denominator, cfg.close_dropout, cfg.far_dropout) == ("bank", "pair", 0.5, 0.5)


def test_the_papers_confede_rows_sit_under_this_methods_runs():
    import pandas as pd

    from msarepro.report.tables import build_tables, load_paper_results

    from .conftest import ROOT
    paper = load_paper_results(ROOT / "reports" / "paper_results")
    assert {"aemt", "clgsi"} <= set(paper.loc[paper["method"] == "confede", "paper"])
    summary = pd.DataFrame([{"method": "confede", "dataset": "mosi", "protocol": "valid-selected", "metric": "MAE",
                             "n": 3, "mean": 0.8, "std": 0.01}])
    rows = build_tables(summary, paper)["mosi"]["rows"]
    labels = [r[0] for r in rows]
    mine = [lab for lab in labels if lab == "confede" or lab.startswith("confede [")]  # not "confede*": CLGSI's
    assert mine[0] == "confede" and len(mine) > 1  # own reproduction, a row of its own
    assert labels.index("confede") + len(mine) - 1 == labels.index(mine[-1])  # the paper rows follow the run's row
    cells = [r[2]["MAE"] for r in rows if r[0].startswith("confede [") and "MAE" in r[2]]
    assert cells and all(c["delta"] is not None for c in cells)
