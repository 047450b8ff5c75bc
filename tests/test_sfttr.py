"""SFTTR (methods/sfttr.py): pair selection (eq. 1), the pair sets and NT-Xent (eqs. 2-8, both readings of eq. 4),
the count of dropped pairs, the unimodal loss (eqs. 14-16), the two-stage schedule, every switch changing the
computation, the Table 3 ablation switches end to end, and that the contrastive term pulls text-close features
together and pushes text-far features away (cosine statistics before/after training)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import build_method, method_config
from msarepro.methods.sfttr import C_A, C_T, C_V, F_A, F_T, F_V, contrastive_pairs, nt_xent, select_pairs
from msarepro.report.figures_papers import cosine_statistics, sfttr_tsne
from msarepro.train import RunSpec, run

from .conftest import ROOT, fast_params


def _circle(deg):
    """Unit vectors at the given angles: their cosine similarities are cos(angle differences)."""
    r = torch.tensor(deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([r.cos(), r.sin()], 1)


def _sim(x):
    return x @ x.T


# ---- eq. 1 and the selection that follows it --------------------------------------------------------------------
def test_pair_selection_known_neighbours_and_outliers():
    # label 0 at 0, 10, 20, 90, 170 degrees; label 1 at 5, 60, 120, 180, 250 degrees
    x = _circle([0, 10, 20, 90, 170, 5, 60, 120, 180, 250])
    y = torch.tensor([0.] * 5 + [1.] * 5)
    eye = torch.eye(10, dtype=torch.bool)
    neigh, neigh_ok, outl, outl_ok = select_pairs(_sim(x), y, y, eye, neighbours=2, pool=2, low=2, high=2)
    # anchor 0: the two most similar same-label samples are 1 (10 deg) and 2 (20 deg); of the different-label
    # ones, the least similar are 8 (180 deg, cos -1) then 7 (120 deg, -0.5); the most similar 5 (0.996), 6 (0.5)
    assert set(neigh[0].tolist()) == {1, 2}
    assert outl[0].tolist() == [8, 7, 5, 6]
    assert neigh_ok.all() and outl_ok.all()
    # every anchor: against a brute-force sort of the similarities (by value, so ties do not matter)
    s = _sim(x)
    for i in range(10):
        same = [j for j in range(10) if j != i and y[j] == y[i]]
        diff = [j for j in range(10) if y[j] != y[i]]
        assert sorted(s[i, neigh[i]].tolist()) == pytest.approx(sorted(s[i, same].tolist())[-2:])
        assert s[i, outl[i, :2]].tolist() == pytest.approx(sorted(s[i, diff].tolist())[:2])
        assert sorted(s[i, outl[i, 2:]].tolist()) == pytest.approx(sorted(s[i, diff].tolist())[-2:])
        assert i not in neigh[i].tolist() and len(set(outl[i].tolist())) == 4


def test_neighbours_drawn_from_the_similar_pool_and_missing_ones_masked():
    x = _circle([0, 10, 20, 30, 40, 150, 200, 90, 100, 110, 120, 130])
    y = torch.tensor([0.] * 5 + [2.] + [1.] * 6)  # sample 5 is the only one of its label
    eye = torch.eye(12, dtype=torch.bool)
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        neigh, neigh_ok, outl, outl_ok = select_pairs(_sim(x), y, y, eye, neighbours=2, pool=3)
        assert set(neigh[0].tolist()) <= {1, 2, 3}  # the 3 most similar same-label samples of anchor 0
        assert neigh[0, 0] != neigh[0, 1]
        seen |= set(neigh[0].tolist())
        assert not neigh_ok[5].any() and outl_ok[5].all()  # no same-label partner for sample 5
        assert neigh_ok[0].all()
    assert seen == {1, 2, 3}  # the draw is random within the pool


# ---- eqs. 2-8 -----------------------------------------------------------------------------------------------------
def _no_partners(B=1, eq4="text"):
    z = torch.zeros(B, 2, dtype=torch.long)
    return contrastive_pairs(B, z, torch.zeros(B, 2, dtype=torch.bool), torch.zeros(B, 4, dtype=torch.long),
                             torch.zeros(B, 4, dtype=torch.bool), eq4)


def test_eq4_pairs_which_features_are_pulled_together():
    """Sample i's own eq. 4 positives: anchored on C_T (the text of sec. 3.3, the authors' code) by default, the
    equation as printed with `printed`."""
    for eq4, expected in (("text", {(C_T, C_V), (C_T, C_A)}), ("printed", {(C_T, C_V), (C_V, C_A)})):
        pairs = _no_partners(eq4=eq4)
        pos = pairs["positive"]
        assert set(zip(pairs["a_feat"][pos].tolist(), pairs["b_feat"][pos].tolist())) == expected
        neg = set(zip(pairs["a_feat"][~pos].tolist(), pairs["b_feat"][~pos].tolist()))
        assert neg == {(C_T, F_T), (C_T, F_V), (C_T, F_A)}  # eq. 5, the same under both readings


def test_nt_xent_hand_computed():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    feats = torch.stack([e1, e1, e1, e2, e2, e2])[None]  # C_T = C_V = C_A = e1, F_* = e2 orthogonal
    # tau = 0.5: s = 2 for the positives (cos 1), 0 for the negatives (cos 0); N^i = {(C_T,F_T), (C_T,F_V), (C_T,F_A)}
    # eq4 text: P^i = {(C_T,C_V), (C_T,C_A)}, both anchored on C_T: 2 * -log e^2 / (2 e^2 + 3)
    text = 2 * (math.log(2 * math.e ** 2 + 3) - 2)
    assert float(nt_xent(feats, _no_partners(), 1, 0.5, "anchor")) == pytest.approx(text, rel=1e-6)
    # eq4 printed: P^i = {(C_T,C_V), (C_V,C_A)}; anchor C_T: -log e^2 / (e^2 + 3); anchor C_V: -log e^2 / e^2 = 0
    printed = _no_partners(eq4="printed")
    assert float(nt_xent(feats, printed, 1, 0.5, "anchor")) == pytest.approx(math.log(1 + 3 * math.exp(-2)), rel=1e-6)
    # one denominator over all five pairs: 2 * (log(2 e^2 + 3) - 2) under both readings
    assert float(nt_xent(feats, printed, 1, 0.5, "all")) == pytest.approx(text, rel=1e-6)


def _reference_loss(feats, i, N, O, tau, eq4="text"):
    """Eqs. 2-8 for anchor sample i, written out as sets of ((row, feature), (row, feature)) pairs."""
    P = [((i, C_T), (i, C_V)), ((i, C_V), (i, C_A)) if eq4 == "printed" else ((i, C_T), (i, C_A))]
    P += [((j, C_T), (j, fb)) for j in N + O for fb in (C_V, C_A)]
    P += [((i, f), (j, f)) for j in N for f in (C_T, C_V, C_A)]
    Nn = [((i, C_T), (i, fb)) for fb in (F_T, F_V, F_A)]
    Nn += [((j, C_T), (j, fb)) for j in N + O for fb in (F_T, F_V, F_A)]
    Nn += [((i, f), (k, f)) for k in O for f in (C_T, C_V, C_A)]
    s = lambda a, b: float(torch.cosine_similarity(feats[a], feats[b], dim=0)) / tau  # noqa: E731
    loss = 0.0
    for a, p in P:
        den = sum(math.exp(s(a2, k)) for a2, k in P + Nn if a2 == a)
        loss -= math.log(math.exp(s(a, p)) / den)
    return loss, len(P), len(Nn)


@pytest.mark.parametrize("eq4", ["text", "printed"])
def test_pair_sets_and_loss_match_the_equations(eq4):
    torch.manual_seed(0)
    B = 7
    feats = torch.randn(B, 6, 5, dtype=torch.float64)
    neigh = torch.tensor([[1, 2], [0, 2], [3, 4], [2, 4], [5, 6], [4, 6], [4, 5]])
    outl = torch.tensor([[3, 4, 5, 6], [3, 4, 5, 6], [0, 1, 5, 6], [0, 1, 5, 6], [0, 1, 2, 3], [0, 1, 2, 3],
                         [0, 1, 2, 3]])
    neigh_ok = torch.ones(B, 2, dtype=torch.bool)
    outl_ok = torch.ones(B, 4, dtype=torch.bool)
    neigh_ok[6, 1] = False  # a missing neighbour and a missing outlier leave their pairs out
    outl_ok[6, 3] = False
    pairs = contrastive_pairs(B, neigh, neigh_ok, outl, outl_ok, eq4)
    expected, sizes = 0.0, []
    for i in range(B):
        N = [int(j) for j, ok in zip(neigh[i], neigh_ok[i]) if ok]
        O = [int(k) for k, ok in zip(outl[i], outl_ok[i]) if ok]
        li, nP, nN = _reference_loss(feats, i, N, O, 0.5, eq4)
        expected += li / B  # eq. 17
        sizes.append((nP, nN))
    assert sizes[0] == (20, 33)  # |P^i| = 2 + 2*6 + 3*2, |N^i| = 3 + 3*6 + 3*4
    got = [(int((pairs["positive"] & (pairs["i"] == i)).sum()), int((~pairs["positive"] & (pairs["i"] == i)).sum()))
           for i in range(B)]
    assert got == sizes
    assert float(nt_xent(feats, pairs, B, 0.5, "anchor")) == pytest.approx(expected, rel=1e-9)


# ---- the model: unimodal loss, schedule, text encoders ----------------------------------------------------------
def _model(small_data, dataset, **over):
    params = fast_params(**{f"methods.sfttr.{k}": v for k, v in over.items()})
    ds = load_dataset(small_data[dataset])
    torch.manual_seed(0)
    model = build_method("sfttr", method_config(params, "sfttr", ds.manifest.preset), ds.manifest)
    train = to_tensors(ds)["train"]
    model.on_epoch_start(0, train)
    model.train()
    return model, train, train.batch(torch.arange(16))


def test_unimodal_loss_only_with_unimodal_labels(small_data):
    model, _, batch = _model(small_data, "synth-mosi")  # no T/A/V labels
    assert "uni" not in model.losses(model(batch), batch, 0) and not hasattr(model, "unimodal_head")
    model, _, batch = _model(small_data, "synth-sims")
    model.eval()  # no dropout, so that the head can be re-applied below
    with torch.no_grad():
        out = model(batch)
        terms = model.losses(out, batch, 0)
        u_hat = model.unimodal_head(out["feats"]).squeeze(-1)  # eq. 14
    y = batch["y"]
    u = torch.stack([y, y, y, batch["y_T"], batch["y_V"], batch["y_A"]], 1)  # eq. 15
    assert float(terms["uni"]) == pytest.approx(0.01 * float(((u - u_hat) ** 2).sum(1).mean()), rel=1e-5)
    model, _, batch = _model(small_data, "synth-sims", unimodal_loss=False)  # Table 3 "-uni"
    assert "uni" not in model.losses(model(batch), batch, 0)


def test_two_stage_schedule_freezes_the_right_parts(small_data):
    model, train, batch = _model(small_data, "synth-sims", pretrain_epochs=1)
    assert model.stage == "pretrain"
    terms = model.losses(model(batch), batch, 0)
    assert set(terms) == {"pre_text", "pre_vision", "pre_audio"}
    sum(terms.values()).backward()
    assert model.encoders["audio"].inp.weight.grad is not None
    assert model.cme_m.modality.weight.grad is None and model.regressor[0].weight.grad is None
    model.zero_grad(set_to_none=True)
    model.on_epoch_start(1, train)
    assert model.stage == "fusion"
    terms = model.losses(model(batch), batch, 1)
    assert {"pred", "cl", "uni"} <= set(terms)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in model.encoders["text"].parameters())  # text encoder frozen
    assert model.encoders["vision"].inp.weight.grad is not None and model.cme_m.modality.weight.grad is not None


def test_two_stages_optimise_their_own_parameters(small_data):
    """Each stage's optimizer holds only what that stage trains: the unimodal encoders and their heads at
    pretrain_lr, then everything but the frozen text encoder and the pretraining heads at lr."""
    model, _, _ = _model(small_data, "synth-sims", pretrain_epochs=1, pretrain_lr=3.0e-4)
    assert model.stage_starts() == (0, 1)
    names = {id(p): n for n, p in model.named_parameters()}
    model.enter_stage(0)
    groups = model.param_groups()
    first = {names[id(p)] for g in groups for p in g["params"]}
    assert all(g["lr"] == 3.0e-4 for g in groups)
    assert first == {n for n in names.values() if n.startswith(("text.", "encoders.", "pretrain_heads."))}
    model.enter_stage(1)
    assert model.stage == "fusion"
    groups = model.param_groups()
    second = {names[id(p)] for g in groups for p in g["params"]}
    assert all("lr" not in g for g in groups)  # the optimizer's lr, cfg.lr
    assert second == {n for n in names.values() if not n.startswith(("text.", "encoders.text.", "pretrain_heads."))}
    assert "encoders.vision.inp.weight" in second and "cme_m.modality.weight" in second
    # one stage (the embedded presets): every parameter, no lr override, as before stages existed
    model, _, _ = _model(small_data, "synth-sims")
    assert model.stage_starts() == (0,)
    assert sum(len(g["params"]) for g in model.param_groups()) == len(list(model.parameters()))


# ---- item: pairs dropped when the batch cannot supply them ------------------------------------------------------
def test_dropped_pairs_counted_at_batch_4(small_data):
    """At batch 4 an anchor has 3 candidates for 2 neighbours + 4 outliers. Rounded labels [0, 0, 0, 1]: anchors
    0-2 find 2 neighbours and 1 outlier (3 dropped each), anchor 3 no neighbour and 3 outliers (3 dropped): 12 of
    24. Four equal labels: 2 neighbours, no outlier, 4 dropped per anchor: 16 of 24."""
    model, _, _ = _model(small_data, "synth-mosi")
    train = to_tensors(load_dataset(small_data["synth-mosi"]))["train"]
    for labels, dropped in (([0.2, -0.4, 0.0, 1.3], 12), ([1.0, 1.1, 0.9, 0.6], 16)):
        batch = train.batch(torch.arange(4))
        batch["y"] = torch.tensor(labels)
        model.pop_epoch_counters()
        model.losses(model(batch), batch, 0)
        assert model.pop_epoch_counters() == {"pairs_wanted": 24, "pairs_dropped": dropped}
    # the same batch with partners from the training-split bank: only labels too rare in the whole split drop
    model, train, _ = _model(small_data, "synth-mosi", pairs_from="bank")
    y = torch.round(train.tensors["y"])
    count = {float(c): int((y == c).sum()) for c in y.unique()}
    rows = torch.tensor([i for i in range(len(y)) if count[float(y[i])] >= 3][:4])  # labels with >= 2 partners
    batch = train.batch(rows)
    model.pop_epoch_counters()
    model.losses(model(batch), batch, 0)
    assert model.pop_epoch_counters() == {"pairs_wanted": 24, "pairs_dropped": 0}
    rare = [i for i in range(len(y)) if count[float(y[i])] < 3]  # e.g. |label| = 3: fewer than 2 same-label rows
    if rare:
        batch = train.batch(torch.tensor(rare[:1]))
        model.losses(model(batch), batch, 0)
        assert model.pop_epoch_counters()["pairs_dropped"] == 2 - (count[float(y[rare[0]])] - 1)


def test_dropped_pairs_column_in_history_of_a_real_run(small_data, tmp_path):
    """`msarepro train` at batch 4: history.csv counts per epoch the inter-sample pairs wanted (6 per training
    sample) and those the batch could not supply (at least 3 per sample, since 3 candidates < 6 partners)."""
    data = small_data["synth-mosi"]
    n_train = len(to_tensors(load_dataset(data))["train"])
    cmd = [sys.executable, "-m", "msarepro.cli", "train", "--model", "sfttr", "--dataset", str(data),
           "--seed", "1", "--out", str(tmp_path / "r"), "--params", str(ROOT / "params.yaml"), "--no-progress",
           "-S", "methods.sfttr.presets.synth-mosi.max_epochs=2", "-S", "methods.sfttr.presets.synth-mosi.batch_size=4"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    hist = pd.read_csv(tmp_path / "r" / "history.csv")
    assert (hist["train_pairs_wanted"] == 6 * n_train).all()
    assert (hist["train_pairs_dropped"] >= 3 * n_train).all() and (hist["train_pairs_dropped"] < 6 * n_train).all()


def test_token_ids_through_a_bert_encoder(small_data):
    model, _, batch = _model(small_data, "synth-mosi", text_encoder="tiny-bert", text_pool="cls")
    out = model(batch)
    sum(model.losses(out, batch, 0).values()).backward()
    assert out["pred"].shape == (16,)
    assert model.text.model.embeddings.word_embeddings.weight.grad is not None


def test_bank_retrieval_over_the_training_split(small_data):
    model, train, batch = _model(small_data, "synth-mosi", pairs_from="bank")
    pool, pool_ok, outl, outl_ok = model._bank
    assert pool.shape == (len(train), 4) and outl.shape == (len(train), 4)
    y = torch.round(train.tensors["y"])
    rows = torch.arange(len(train))[:, None]
    assert (y[pool][pool_ok] == y.expand(4, -1).T[pool_ok]).all() and not (pool == rows)[pool_ok].any()
    assert (y[outl][outl_ok] != y.expand(4, -1).T[outl_ok]).all()
    assert torch.isfinite(model.losses(model(batch), batch, 0)["cl"])


# ---- every switch changes the computation ------------------------------------------------------------------------
def _step(small_data, base_state=None, **over):
    """One loss and backward on a fixed batch of synth-sims (T/A/V labels), the RNG reseeded; the weights of
    `base_state` wherever names and shapes match. -> (pred, loss terms, names of parameters with a gradient)."""
    model, _, batch = _model(small_data, "synth-sims", **{f"presets.synth-sims.{k}": v for k, v in over.items()})
    assert all(getattr(model.cfg, k) == v for k, v in over.items())
    if base_state is not None:
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in base_state.items() if k in own and k != "_extra_state"
                               and own[k].shape == v.shape}, strict=False)
    torch.manual_seed(1)
    out = model(batch)
    terms = model.losses(out, batch, 0)
    sum(terms.values()).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    return out["pred"].detach(), {k: float(v.detach()) for k, v in terms.items()}, grads, model


SWITCHES = {"contrastive": False, "unimodal_loss": False, "fusion": "concat", "pairs_from": "bank",
            "text_pool": "cls", "eq4_pairs": "printed", "cl_denominator": "all", "pretrain_epochs": 1}


def test_every_switch_is_listed():
    """Every boolean SFTTR setting and every setting with a fixed set of choices is in SWITCHES (and so tested)."""
    import inspect

    from msarepro.config import MethodConfig
    from msarepro.methods.sfttr import SFTTR
    own = set(SFTTR.Config.__dataclass_fields__) - set(MethodConfig.__dataclass_fields__)
    bools = {k for k in own if SFTTR.Config.__dataclass_fields__[k].type in ("bool", bool)}
    src = inspect.getsource(SFTTR.Config.validate)
    choices = {k for k in own if f'"{k}": (' in src}
    assert bools == {"contrastive", "unimodal_loss"}
    assert choices == {"text_pool", "fusion", "cl_denominator", "pairs_from", "eq4_pairs"}
    assert bools | choices <= set(SWITCHES)


@pytest.mark.parametrize("key", list(SWITCHES))
def test_switch_changes_the_computation(key, small_data):
    """Same weights, same batch: flipping the switch changes the prediction, a loss term or the set of parameters
    that receive a gradient (and each switch changes what it should)."""
    pred0, terms0, grads0, model0 = _step(small_data)
    pred0b, terms0b, grads0b, _ = _step(small_data, model0.state_dict())
    assert torch.equal(pred0, pred0b) and terms0 == terms0b and grads0 == grads0b  # reproducible as is
    pred1, terms1, grads1, _ = _step(small_data, model0.state_dict(), **{key: SWITCHES[key]})
    same_pred = pred0.shape == pred1.shape and torch.allclose(pred0, pred1)
    assert not (same_pred and terms0 == terms1 and grads0 == grads1), f"{key} left the computation unchanged"
    if key == "contrastive":
        assert "cl" not in terms1 and same_pred
    elif key == "unimodal_loss":
        assert "uni" not in terms1 and not any(n.startswith("unimodal_head") for n in grads1)
    elif key == "fusion":
        assert not same_pred and not any(n.startswith("cme_") for n in grads1)
    elif key in ("pairs_from", "eq4_pairs", "cl_denominator"):
        assert same_pred and terms1["pred"] == terms0["pred"] and terms1["cl"] != pytest.approx(terms0["cl"])
    elif key == "text_pool":
        assert any(n.startswith("encoders.text.") for n in grads0)
        assert not any(n.startswith("encoders.text.") for n in grads1)
    elif key == "pretrain_epochs":
        assert set(terms1) == {"pre_text", "pre_vision", "pre_audio"}
        assert not any(n.startswith(("cme_", "regressor")) for n in grads1)


# ---- end to end through the one training loop ---------------------------------------------------------------------
@pytest.mark.parametrize("switch", [{"contrastive": False}, {"unimodal_loss": False}, {"fusion": "concat"},
                                   {"pairs_from": "bank"}, {"pretrain_epochs": 1}],
                         ids=["-cl", "-uni", "-fusion", "bank", "two-stage"])
def test_ablation_switches_end_to_end(switch, small_data, tmp_path):
    params = fast_params(max_epochs=2, **{f"methods.sfttr.{k}": v for k, v in switch.items()})
    res = run(params, RunSpec("sfttr", str(small_data["synth-sims"]), 1111, tmp_path, progress=False))
    assert np.isfinite(res["test"]["MAE"])
    hist = open(tmp_path / "history.csv").readline().strip().split(",")
    assert ("train_cl" in hist) == switch.get("contrastive", True)
    assert ("train_uni" in hist) == switch.get("unimodal_loss", True)
    cfg = json.loads((tmp_path / "config.json").read_text())["method"]
    assert all(cfg[k] == v for k, v in switch.items())


def test_contrastive_term_pulls_close_together_and_pushes_far_away(small_data, tmp_path):
    """Cosine statistics of the test set's decomposed features, at initialisation and after training: with the
    contrastive term C_T/C_V/C_A move together and C_T moves away from F_*; without it they do not."""
    stats = {}
    for cl in (True, False):
        params = fast_params(max_epochs=6, **{"methods.sfttr.contrastive": cl,  # the paper's beta_cl
                                              "methods.sfttr.presets.synth-sims.beta_cl": 0.1})
        out = tmp_path / f"cl_{cl}"
        run(params, RunSpec("sfttr", str(small_data["synth-sims"]), 1111, out, progress=False))
        stats[cl] = sfttr_tsne(out)
        assert (out / "sfttr_tsne_test.png").stat().st_size > 0
        with np.load(out / "sfttr_features_test.npz") as z:
            assert z["trained"].shape[1] == 6 and cosine_statistics(z["trained"]) == pytest.approx(stats[cl]["trained"])
    before, after = stats[True]["initialised"], stats[True]["trained"]
    assert after["close_close"] > before["close_close"] + 0.2
    assert after["text_far"] < before["text_far"] - 0.1
    assert after["close_close"] > stats[False]["trained"]["close_close"] + 0.2
    assert after["text_far"] < stats[False]["trained"]["text_far"] - 0.1
