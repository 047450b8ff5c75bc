"""MMIM: the Gaussian log-likelihood, the mixture entropy, the BA lower bound and the CPC loss on hand-computed
cases; the gradient routing of the one-optimizer form (which parameters learn from which term); the entropy memory
(when H enters, what it holds, its reset per epoch); the switches (lld_logvar, alpha, beta) changing what they say;
the real presets carrying MMSA's settings; the papers' MMIM rows under this method's runs."""
from __future__ import annotations

import math

import pytest
import torch

from msarepro import config
from msarepro.config import ConfigError
from msarepro.data.format import Manifest
from msarepro.methods import build_method, method_config
from msarepro.methods.mmim import MMIM, PAIRS, UNI, ba_bound, class_entropy, cpc_nce, gaussian_lld
from msarepro.train import make_optimizer

DIMS = {"text": 6, "vision": 4, "audio": 5}


def _manifest(task: str = "regression") -> Manifest:
    return Manifest(name="tiny", family="trimodal", task=task, metric_family="mosi", label_range=(-3.0, 3.0),
                    modalities={m: {"dim": d, "max_len": 9} for m, d in DIMS.items()},
                    splits={"train": 8, "valid": 4, "test": 4}, num_classes=3 if task == "classification" else 0)


def _batch(B: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in DIMS.items():
        n = torch.randint(2, 10, (B,), generator=g)
        mask = torch.arange(9)[None] < n[:, None]
        out[m] = torch.randn(B, 9, d, generator=g) * mask[..., None]
        out[f"{m}_mask"] = mask
    y = torch.randn(B, generator=g)
    out["y"] = torch.where(y.abs() < 0.1, y + 0.5, y)  # no neutral sample: both classes well filled
    return out


def _model(**settings) -> MMIM:
    cfg = config.build(MMIM.Config, {"text_out": 8, "text_rnn_hidden": 4, "audio_out": 8, "vision_out": 8,
                                     "audio_rnn_hidden": 4, "vision_rnn_hidden": 4, "fusion_dim": 8,
                                     "fusion_dropout": 0.0, **settings}, "methods.mmim")
    torch.manual_seed(0)
    return build_method("mmim", cfg, _manifest())


# -- the loss terms on hand-computed cases ------------------------------------------------------------------------
def test_gaussian_log_likelihood_on_a_hand_computed_case():
    mu = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    y = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    # row 0: -1/2 (1/1 + 0) - 1/2 (4/4 + ln 4) = -1 - ln 2; row 1: -1/2 (0 + 0) - 1/2 (4 + 0) = -2
    assert gaussian_lld(mu, logvar, y).item() == pytest.approx((-1 - math.log(2) - 2) / 2)
    # without the log-variance term (the authors' code): row 0 -1, row 1 -2
    assert gaussian_lld(mu, logvar, y, with_logvar=False).item() == pytest.approx(-1.5)


def test_mixture_entropy_on_a_hand_computed_case():
    """Each class's biased covariance is diagonal here: positive diag(0.5, 2) (log det 0), negative diag(4.5, 0.5)
    (log det ln 2.25); a shift of a class's samples changes nothing (the covariance is centred)."""
    pos = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]) + torch.tensor([5.0, -1.0])
    neg = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert class_entropy(pos, neg).item() == pytest.approx(0.25 * (0.0 + math.log(2.25)), abs=1e-6)


def test_mixture_entropy_runs_in_float32_under_bf16_autocast():
    """log det has no low-precision kernel: under runtime.precision bf16 the entropy is taken in float32."""
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(12, 3, generator=g), torch.randn(10, 3, generator=g)
    want = class_entropy(pos, neg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = class_entropy(pos.bfloat16(), neg.bfloat16())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), abs=0.05)  # the inputs rounded to bf16


def test_ba_lower_bound_is_the_log_likelihood_plus_the_entropy():
    mu, logvar = torch.zeros(1, 2), torch.tensor([[0.0, math.log(4.0)]])
    y = torch.tensor([[1.0, 2.0]])
    pos = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    neg = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    lld = gaussian_lld(mu, logvar, y)  # -1/2 (1 + 0) - 1/2 (4/4 + ln 4) = -1 - ln 2
    bound = ba_bound(lld, class_entropy(pos, neg))
    assert bound.item() == pytest.approx(-1 - math.log(2) + 0.25 * math.log(2.25), abs=1e-6)


def test_cpc_loss_on_hand_computed_cases():
    # orthogonal unit rows (the predictions' lengths do not count): s = I, each row -(1 - ln(e + 1))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert cpc_nce(x, torch.tensor([[2.0, 0.0], [0.0, 3.0]])).item() == pytest.approx(math.log(1 + math.e) - 1)
    # predictions (1, 1)/sqrt 2 and (0, 1): row 0 scores (r, 0), row 1 scores (r, 1), r = 1/sqrt 2
    r = 1 / math.sqrt(2)
    want = -((r - math.log(math.exp(r) + 1)) + (1 - math.log(math.exp(r) + math.e))) / 2
    assert cpc_nce(x, torch.tensor([[1.0, 1.0], [0.0, 1.0]])).item() == pytest.approx(want, abs=1e-6)


def test_losses_are_the_weighted_terms():
    """task = L1; cpc = alpha sum_m L_N(m) over the three modalities; ba = -beta sum over (t, v), (t, a) of lld (no
    H on an epoch's first batch; by default the authors' lld, without the log-variance term); ba_fit = -sum lld:
    the same numbers, other gradients."""
    model = _model(alpha=0.3, beta=0.2, task_loss="l1")
    model.on_epoch_start(0, None)
    model.train()
    batch = _batch()
    out = model(batch)
    terms = model.losses(out, batch, 0)
    assert set(terms) == {"task", "cpc", "ba", "ba_fit"}
    assert terms["task"].item() == pytest.approx((out["pred"] - batch["y"]).abs().mean().item())
    nce = sum(cpc_nce(out[f"h_{m}"], model.cpc[m](out["fusion"])) for m in UNI)
    assert terms["cpc"].item() == pytest.approx(0.3 * nce.item(), rel=1e-6)
    lld = sum(gaussian_lld(*model.mi[f"{a}_{b}"](out[f"h_{a}"]), out[f"h_{b}"], with_logvar=False) for a, b in PAIRS)
    assert terms["ba"].item() == pytest.approx(-0.2 * lld.item(), rel=1e-6)
    assert terms["ba_fit"].item() == pytest.approx(-lld.item(), rel=1e-6)


# -- which parameters learn from which term ------------------------------------------------------------------------
def _grads(model: MMIM, term: str) -> set[str]:
    model.zero_grad(set_to_none=True)
    model.on_epoch_start(0, None)
    batch = _batch()
    model.losses(model(batch), batch, 0)[term].backward()
    return {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith(("rnn", "mi", "cpc")) else "")
            for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_gradient_routing_of_the_one_optimizer_form():
    """The authors' stage 1 (the predictors fit lld on the encoders' output) and stage 2 (everything else learns from
    task + alpha CPC - beta BA, the predictors fixed) as one step: ba_fit reaches only mu and log sigma^2; ba only the
    encoders (the predictors read through detached parameters); cpc and task never the predictors."""
    model = _model()
    model.train()
    mi = {f"mi.{a}_{b}" for a, b in PAIRS}
    encoders = {"rnn.text", "rnn.audio", "rnn.vision"}
    assert _grads(model, "ba_fit") == mi
    assert _grads(model, "ba") == encoders
    cpc = _grads(model, "cpc")
    assert cpc == encoders | {"fusion1", "fusion2", "cpc.text", "cpc.audio", "cpc.vision"}
    task = _grads(model, "task")
    assert task == encoders | {"fusion1", "fusion2", "out"}
    # the entropy projection is fixed (no optimizer steps it in the authors' code)
    assert not any(p.requires_grad for q in model.mi.values() for p in q.entropy_proj.parameters())


def test_predictors_get_their_own_learning_rate_and_decay():
    model = _model(lr=1e-3, weight_decay=1e-4, lr_mmilb=3e-3, weight_decay_mmilb=2e-4)
    opt = make_optimizer(model, model.cfg)
    mi = {id(p) for p in model.mi.parameters() if p.requires_grad}
    groups = [(g["lr"], g["weight_decay"], {id(p) for p in g["params"]}) for g in opt.param_groups]
    assert (3e-3, 2e-4, mi) in groups
    rest = [g for g in groups if g[2] != mi]
    assert len(rest) == 1 and rest[0][:2] == (1e-3, 1e-4) and not rest[0][2] & mi


# -- the entropy memory --------------------------------------------------------------------------------------------
def test_entropy_enters_after_the_memory_fills_and_reads_memory_plus_batch():
    """memory_batches = 1 (the authors' mem_size): batches 0 and 1 of an epoch carry no H; from batch 2 on, H is
    computed over the previous batch's projected samples (detached) and this batch's, per class; the next epoch
    starts with an empty memory."""
    model = _model(beta=1.0, lld_logvar=True)
    model.train()
    model.on_epoch_start(0, None)
    batches = [_batch(seed=s) for s in range(3)]
    for step, batch in enumerate(batches):
        out = model(batch)
        proj = {k: q.entropy_proj(out[f"h_{k.split('_')[1]}"]) for k, q in model.mi.items()}
        lld = sum(gaussian_lld(*model.mi[f"{a}_{b}"](out[f"h_{a}"]), out[f"h_{b}"], model.cfg.lld_logvar)
                  for a, b in PAIRS)
        if step == 2:
            prev = {k: q.entropy_proj(prev_out[f"h_{k.split('_')[1]}"]) for k, q in model.mi.items()}
            y0, y1 = batches[1]["y"], batch["y"]
            H = sum(class_entropy(torch.cat([prev[k][y0 > 0], proj[k][y1 > 0]]),
                                  torch.cat([prev[k][y0 < 0], proj[k][y1 < 0]])) for k in proj)
            want = -(lld + H)
        else:
            want = -lld
        got = model.losses(out, batch, 0)["ba"]
        assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6), step
        prev_out = {k: v.detach() for k, v in out.items()}
    assert all(len(m["pos"]) == 1 and not m["pos"][0].requires_grad for m in model._memory.values())
    model.on_epoch_start(1, None)
    assert all(m["pos"] == [] for m in model._memory.values()) and model._step == 0


def test_a_longer_memory_holds_more_batches_and_lets_h_in_later():
    """memory_batches = 2: no H before an epoch's fourth batch (index 3), then two past batches in the memory."""
    model = _model(memory_batches=2)
    model.train()
    model.on_epoch_start(0, None)
    for step in range(5):
        batch = _batch(seed=step)
        out = model(batch)
        lld = sum(gaussian_lld(*model.mi[f"{a}_{b}"](out[f"h_{a}"]), out[f"h_{b}"], model.cfg.lld_logvar)
                  for a, b in PAIRS)
        ba = model.losses(out, batch, 0)["ba"]
        assert (ba.item() == pytest.approx(-model.cfg.beta * lld.item(), rel=1e-6)) == (step < 3), step
    assert all(len(m["pos"]) == 2 for m in model._memory.values())


def test_too_few_samples_of_a_class_skip_the_entropy_and_count_it():
    model = _model()
    model.train()
    model.on_epoch_start(0, None)
    for s in range(3):
        batch = _batch(B=2, seed=s)
        batch["y"] = torch.tensor([1.0, -1.0])  # 2 samples per class over memory + batch: k = 2 needs 3
        terms = model.losses(model(batch), batch, 0)
        assert torch.isfinite(terms["ba"])
    assert model.pop_epoch_counters() == {"entropy_skipped": 2}  # batch 2, both pairs


def test_evaluation_leaves_the_memory_alone():
    model = _model()
    model.on_epoch_start(0, None)
    model.eval()
    batch = _batch()
    with torch.no_grad():
        model.losses(model(batch), batch, 0)
    assert model._step == 0 and all(m["pos"] == [] for m in model._memory.values())


# -- switches ------------------------------------------------------------------------------------------------------
def test_lld_logvar_switch_changes_the_bound_and_its_fit():
    batch = _batch()
    terms = {}
    for flag in (True, False):
        model = _model(lld_logvar=flag)
        model.train()
        model.on_epoch_start(0, None)
        terms[flag] = model.losses(model(batch), batch, 0)
    assert terms[True]["task"].item() == terms[False]["task"].item()  # same weights, same predictions
    assert terms[True]["ba"].item() != pytest.approx(terms[False]["ba"].item())
    assert terms[True]["ba_fit"].item() != pytest.approx(terms[False]["ba_fit"].item())


def test_cpc_layers_builds_a_deeper_predictor():
    assert isinstance(_model(cpc_layers=1).cpc["audio"], torch.nn.Linear)
    deep = _model(cpc_layers=2).cpc["audio"]
    assert [type(m).__name__ for m in deep] == ["Linear", "Tanh", "Linear"]


def test_classification_data_is_refused():
    cfg = config.build(MMIM.Config, {}, "methods.mmim")
    with pytest.raises(ConfigError, match="regression"):
        build_method("mmim", cfg, _manifest("classification"))


# -- presets and the papers' rows ----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset,bert", [("mosi", "bert-base-uncased"), ("mosei", "bert-base-uncased"),
                                         ("sims", "bert-base-chinese"), ("simsv2", "bert-base-chinese")])
def test_real_presets_carry_mmsas_settings(params, preset, bert):
    cfg = method_config(params, "mmim", preset)
    got = (cfg.text_encoder, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.lr_text, cfg.weight_decay_text,
           cfg.lr_mmilb, cfg.weight_decay_mmilb, cfg.grad_clip, cfg.alpha, cfg.beta, cfg.audio_rnn_hidden,
           cfg.vision_rnn_hidden, cfg.audio_out, cfg.vision_out, cfg.bidirectional, cfg.fusion_dim,
           cfg.fusion_dropout, cfg.cpc_layers, cfg.memory_batches, cfg.patience, cfg.task_loss, cfg.finetune,
           cfg.lld_logvar)
    assert got == (bert, 32, 1e-3, 1e-4, 5e-5, 1e-4, 1e-3, 1e-4, 1.0, 0.1, 0.1, 16, 16, 16, 16, True, 128, 0.1, 1,
                   1, 8, "l1", True, False)


def test_embedded_preset_is_small(params):
    cfg = method_config(params, "mmim", "synth-mosi")
    assert cfg.text_encoder == "features" and cfg.max_epochs <= 20
    m = Manifest(name="x", family="trimodal", task="regression", metric_family="mosi", label_range=(-3.0, 3.0),
                 modalities={"text": {"dim": 32, "max_len": 24}, "audio": {"dim": 8, "max_len": 40},
                             "vision": {"dim": 12, "max_len": 30}}, splits={"train": 900, "valid": 200, "test": 300},
                 preset="synth-mosi")
    assert sum(p.numel() for p in build_method("mmim", cfg, m).parameters()) < 100_000


def test_the_papers_mmim_rows_sit_under_this_methods_runs():
    """reports/paper_results name MMIM's rows `mmim`, the registered name (variant column too): an mmim run on MOSI
    gets them as its ↳ rows, with Δ = ours − paper."""
    import pandas as pd

    from msarepro.report.tables import build_tables, load_paper_results

    from .conftest import ROOT
    paper = load_paper_results(ROOT / "reports" / "paper_results")
    rows = paper[paper["method"] == "mmim"]
    assert {"almt", "aemt"} <= set(rows["paper"]) and (rows["variant"] == "mmim").all()
    summary = pd.DataFrame([{"method": "mmim", "dataset": "mosi", "protocol": "valid-selected", "metric": "MAE",
                             "n": 3, "mean": 0.75, "std": 0.01}])
    table = build_tables(summary, paper)["mosi"]["rows"]
    labels = [r[0] for r in table]
    mine = [lab for lab in labels if lab.startswith("mmim")]
    assert mine[0] == "mmim" and len(mine) > 1 and all(lab.startswith("mmim [") for lab in mine[1:])
    cells = [r[2]["MAE"] for r in table if r[0].startswith("mmim [") and "MAE" in r[2]]
    assert cells and all(c["delta"] is not None for c in cells)


# -- a BERT-family text encoder and a resumed run --------------------------------------------------------------------
def test_a_bert_text_encoder_gives_its_first_token_at_its_own_rate(small_data, params, tmp_path):
    from msarepro.data import load_dataset
    from msarepro.data.loader import to_tensors
    from msarepro.train import provide_inputs

    ds = load_dataset(small_data["synth-mosi"])
    cfg = config.build(MMIM.Config, {"text_encoder": "tiny-bert", "lr_text": 5e-5, "weight_decay_text": 0.01,
                                     "fusion_dropout": 0.0}, "methods.mmim")
    provide_inputs("mmim", cfg, ds, tmp_path)
    torch.manual_seed(0)
    model = build_method("mmim", cfg, ds.manifest).eval()
    assert "text" not in model.rnn and model.widths["text"] == model.text.out_dim
    batch = to_tensors(ds)["train"].batch(torch.arange(4))
    with torch.no_grad():
        assert torch.equal(model(batch)["h_text"], model.text(batch)[0][:, 0])  # the [CLS] state
    groups = make_optimizer(model, cfg).param_groups
    text = {id(p) for p in model.text.parameters()}
    assert [(g["lr"], g["weight_decay"]) for g in groups if {id(p) for p in g["params"]} == text] == [(5e-5, 0.01)]


@pytest.mark.slow  # three CLI processes: about 10 s
def test_kill9_mid_epoch_then_resume_ends_as_an_uninterrupted_run(tmp_path, small_data):
    """The entropy memory lives within an epoch (emptied at its start), so a run killed between the batches of an
    epoch where H already counts and resumed from the last epoch's checkpoint ends with the same files."""
    from .test_train import _cli_train
    data = small_data["synth-mosi"]
    sets = ["methods.mmim.presets.synth-mosi.max_epochs=2", "methods.mmim.presets.synth-mosi.patience=10",
            "methods.mmim.presets.synth-mosi.batch_size=16"]
    full = _cli_train(tmp_path / "full", data, model="mmim", sets=sets)
    assert full.returncode == 0, full.stderr
    killed = _cli_train(tmp_path / "cut", data, {"MSAREPRO_KILL_AT": "1:4"}, model="mmim", sets=sets)
    assert killed.returncode == -9
    resumed = _cli_train(tmp_path / "cut", data, resume=True, model="mmim", sets=sets)
    assert resumed.returncode == 0, resumed.stderr
    for f in ("metrics.json", "predictions.csv", "history.csv"):
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "cut" / f).read_bytes(), f
