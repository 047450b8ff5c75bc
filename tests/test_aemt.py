"""AE-MT: pooling, tampering (eq. 6), the autoencoders' reconstruction path (eqs. 1-5), the contrastive term
(eqs. 17-18) on a hand-computed case, and pretraining -> fine-tuning through the real loop."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from msarepro import config
from msarepro.data import load_dataset
from msarepro.data.format import write_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import all_methods, build_method, method_config, pretraining_methods
from msarepro.methods.aemt import AEMT, contrastive_loss, polarity
from msarepro.methods.base import Method
from msarepro.methods.modality_encoder import MODS, EncoderSpec, average_pool, encoder_inputs
from msarepro.methods.mult import MulT, MulTFusion
from msarepro.pretrain.autoencoder import Autoencoders, reconstruction_loss, tamper
from msarepro.pretrain.run import run_pretraining
from .conftest import pretrain_params

ROOT = Path(__file__).resolve().parents[1]

SPEC = EncoderSpec(dim=8, heads=2, layers=1, kernel_text=3, kernel_audio=3, kernel_vision=3, arch="transformer",
                   dropout=0.0, pool_len=0, text_input="sequence")


def _params(tmp_path, *overrides):
    return pretrain_params(tmp_path / "data", 3, *overrides)


def test_average_pool_is_adaptive_pooling_over_each_samples_real_positions():
    torch.manual_seed(0)
    x = torch.randn(3, 10, 4)
    lengths = torch.tensor([10, 7, 3])
    mask = torch.arange(10)[None] < lengths[:, None]
    pooled, pmask = average_pool(x, mask, 5)
    assert pooled.shape == (3, 5, 4) and pmask.all()
    for i, n in enumerate(lengths.tolist()):
        ref = F.adaptive_avg_pool1d(x[i:i + 1, :n].transpose(1, 2), 5).transpose(1, 2)[0]
        assert torch.allclose(pooled[i], ref, atol=1e-6)
    # padded positions never count: changing them changes nothing
    x2 = x.clone()
    x2[~mask] = 99.0
    assert torch.allclose(average_pool(x2, mask, 5)[0], pooled)


def _id_inputs(B: int) -> dict:
    """Every modality row of sample i holds the value i (+ 1000 k for modality k); masks differ per sample."""
    out = {}
    for k, m in enumerate(MODS):
        x = (torch.arange(B, dtype=torch.float32) + 1000 * k)[:, None, None].expand(B, 4, 2).clone()
        mask = torch.arange(4)[None] < (torch.arange(B) % 4 + 1)[:, None]
        out[m] = (x, mask)
    return out


def test_tamper_labels_match_what_was_swapped():
    B = 64
    inputs = _id_inputs(B)
    out, y, which, donor = tamper(inputs, 0.5, torch.Generator().manual_seed(3))
    assert y.dtype == torch.float32 and set(y.unique().tolist()) == {0.0, 1.0}
    for i in range(B):
        swapped = [k for k, m in enumerate(MODS) if out[m][0][i, 0, 0].item() != inputs[m][0][i, 0, 0].item()]
        if y[i] == 0:
            assert swapped == [] and which[i] == -1
        else:
            assert swapped == [which[i].item()]  # exactly one modality, the one reported
            m = MODS[swapped[0]]
            j = donor[i].item()
            assert j != i
            assert torch.equal(out[m][0][i], inputs[m][0][j])  # it is the donor's ...
            assert torch.equal(out[m][1][i], inputs[m][1][j])  # ... with the donor's mask


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_tamper_rate_matches_p(p):
    gen = torch.Generator().manual_seed(0)
    inputs = _id_inputs(50)
    ys, whichs = [], []
    for _ in range(200):  # 10 000 samples: the rate's standard error is below 0.005
        _, y, which, _ = tamper(inputs, p, gen)
        ys.append(y)
        whichs.append(which)
    y, which = torch.cat(ys), torch.cat(whichs)
    assert abs(y.mean().item() - p) < 0.02
    if p > 0:
        share = torch.bincount(which[which >= 0], minlength=3).float() / (which >= 0).sum()
        assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.03)  # the modality is chosen uniformly


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_reconstruction_path_shapes_and_masked_loss(arch):
    torch.manual_seed(0)
    dims, lens = {"text": 5, "audio": 3, "vision": 7}, {"text": 6, "audio": 9, "vision": 4}
    model = Autoencoders(dims, replace(SPEC, arch=arch), decoder_layers=2)
    inputs = {}
    for m in MODS:
        mask = torch.arange(lens[m])[None] < torch.tensor([lens[m], 2, 3])[:, None]
        inputs[m] = (torch.randn(3, lens[m], dims[m]) * mask[..., None], mask)
    out = model(inputs)
    for m in MODS:
        assert out["hidden"][m].shape == (3, lens[m], SPEC.dim)  # H_m, eq. 2
        assert out["recon"][m].shape == (3, lens[m], dims[m])  # X^_m, eq. 4: back to the input width
    assert out["logit"].shape == (3,)
    # eq. 5 by hand: a reconstruction off by 1 on every real entry costs 1 per modality; padding is ignored
    recon = {m: inputs[m][0] + 1.0 + 50.0 * (~inputs[m][1])[..., None] for m in MODS}
    assert reconstruction_loss(recon, inputs).item() == pytest.approx(3.0)


def test_contrastive_loss_hand_computed():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])  # cosines: s01 = 0, s02 = -1, s12 = 0
    z_sp = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])  # cosines with anchors: 1, 1/sqrt(2), 1
    y = torch.tensor([0.4, 0.0, -1.2])  # MOSI convention: 0 counts as non-negative -> polarities +, +, -
    pol = polarity(y, "mosi")
    neg = pol[:, None] != pol[None, :]
    weak = ~neg
    t = 0.5
    e = lambda s: math.exp(s / t)  # noqa: E731
    # anchor 0: strong 1, weak {1}: 0, negatives {2}: -1
    l0 = -math.log((e(1) + e(0)) / e(-1))
    l1 = -math.log((e(1 / math.sqrt(2)) + e(0)) / e(0))  # anchor 1: weak {0}, negatives {2}
    l2 = -math.log(e(1) / (e(-1) + e(0)))  # anchor 2: no weak positive, negatives {0, 1}
    got = contrastive_loss(z, z_sp, weak, neg, t, "negatives")
    assert got.item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-5)
    a0 = -math.log((e(1) + e(0)) / (e(1) + e(0) + e(-1)))
    a1 = -math.log((e(1 / math.sqrt(2)) + e(0)) / (e(1 / math.sqrt(2)) + e(0) + e(0)))
    a2 = -math.log(e(1) / (e(1) + e(-1) + e(0)))
    assert contrastive_loss(z, z_sp, weak, neg, t, "all").item() == pytest.approx((a0 + a1 + a2) / 3, rel=1e-5)
    # anchors without any negative are skipped; with none at all the term is 0 (and still differentiable)
    zr = z.clone().requires_grad_(True)
    none = torch.zeros(3, 3, dtype=torch.bool)
    zero = contrastive_loss(zr, z_sp, ~none, none, t, "negatives")
    zero.backward()
    assert zero.item() == 0.0 and zr.grad is not None


def test_aemt_composes_mults_fusion_instead_of_subclassing_mult(small_data, params):
    assert not issubclass(AEMT, MulT)
    ds = load_dataset(small_data["synth-sims"])
    aemt = build_method("aemt", method_config(params, "aemt", "synth-sims"), ds.manifest)
    mult = build_method("mult", method_config(params, "mult", "synth-sims"), ds.manifest)
    assert type(aemt.fusion) is MulTFusion and type(mult.fusion) is MulTFusion
    assert set(dict(aemt.named_children())) == {"fusion", "text", "encoders"}
    # every parameter belongs to a module the model uses: the fusion, the text encoder or the modality encoders
    batch = to_tensors(ds)["train"].batch(torch.arange(8))
    aemt.train()
    out = aemt(batch)
    sum(aemt.losses(out, batch, 0).values()).backward()
    unused = [n for n, p in aemt.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused


def test_whether_a_method_pretrains_is_a_property_of_its_class():
    assert Method.uses_pretraining is False and MulT.uses_pretraining is False and AEMT.uses_pretraining is True
    assert pretraining_methods() == tuple(sorted(n for n, c in all_methods().items() if c.uses_pretraining))
    assert "aemt" in pretraining_methods() and "mult" not in pretraining_methods()


def test_sims_polarity_counts_neutral_as_negative():
    assert polarity(torch.tensor([-0.2, 0.0, 0.2]), "sims").tolist() == [False, False, True]
    assert polarity(torch.tensor([-0.2, 0.0, 0.2]), "mosi").tolist() == [False, True, True]


def test_ablation_switches(small_data, params):
    ds = load_dataset(small_data["synth-sims"])
    cfg = method_config(params, "aemt", "synth-sims")
    batch = to_tensors(ds)["train"].batch(torch.arange(8))
    torch.manual_seed(0)
    full = build_method("aemt", cfg, ds.manifest).train()
    out = full(batch)
    assert set(full.losses(out, batch, 0)) == {"senti", "contrastive"}
    no_cl = build_method("aemt", replace(cfg, contrastive_weight=0.0), ds.manifest).train()
    assert set(no_cl.losses(no_cl(batch), batch, 0)) == {"senti"}  # w/o CL
    lstm = build_method("aemt", replace(cfg, encoder="lstm"), ds.manifest)
    assert all(isinstance(lstm.encoders[m].body, torch.nn.LSTM) for m in MODS)  # w/o TR
    assert build_method("aemt", replace(cfg, pretrained=""), ds.manifest).on_train_start() == {}
    with pytest.raises(config.ConfigError, match="encoder"):
        config.build(type(cfg), {"encoder": "gru"}, "methods.aemt")


def test_pretrain_then_finetune_through_the_loop(small_data, tmp_path):
    from msarepro.train import RunSpec, run

    p = _params(tmp_path)
    pre = tmp_path / "pretrain" / "synth-sims"
    res = run_pretraining(p, str(small_data["synth-sims"]), 1111, pre, progress=False)
    assert res["pool"] == "unlabeled"
    hist = pd.read_csv(pre / "history.csv")
    assert {"train_recon", "heldout_recon", "heldout_consistency", "heldout_tamper_acc"} <= set(hist.columns)
    assert res["best"]["heldout_recon"] < res["initial"]["heldout_recon"]  # pretraining reconstructs better
    saved = torch.load(pre / "encoders.pt", weights_only=True)

    # fine-tuning: a missing directory is a clear error; an existing one initialises the encoders
    missing = _params(tmp_path, f"methods.aemt.pretrained={tmp_path / 'nowhere'}/{{dataset}}")
    with pytest.raises(FileNotFoundError, match="msarepro pretrain"):
        run(missing, RunSpec("aemt", str(small_data["synth-sims"]), 1111, tmp_path / "run0", progress=False))
    ds = load_dataset(small_data["synth-sims"])
    cfg = replace(method_config(p, "aemt", "synth-sims"), pretrained=str(tmp_path / "pretrain" / "{dataset}"))
    model = build_method("aemt", cfg, ds.manifest)
    info = model.on_train_start()
    assert info["pretrained_encoders"]["path"].endswith("synth-sims/encoders.pt")
    for m in MODS:
        for k, v in model.encoders[m].state_dict().items():
            assert torch.equal(v, saved["encoders"][m][k])
    with pytest.raises(config.ConfigError, match="layers"):
        build_method("aemt", replace(cfg, encoder_layers=2), ds.manifest).on_train_start()

    ft = _params(tmp_path, f"methods.aemt.pretrained={tmp_path / 'pretrain'}/{{dataset}}",
                 "methods.aemt.presets.synth-sims.max_epochs=2")
    out = run(ft, RunSpec("aemt", str(small_data["synth-sims"]), 1111, tmp_path / "run1", progress=False))
    assert out["epochs_run"] == 2
    conf = json.loads((tmp_path / "run1" / "config.json").read_text())
    assert len(conf["method_inputs"]["pretrained_encoders"]["sha256"]) == 64
    assert "train_contrastive" in pd.read_csv(tmp_path / "run1" / "history.csv").columns


def _with_shared_signature(src, out, strength: float = 2.5):
    """The synthetic set with a per-clip signature added to all three modalities (as a speaker or a recording
    would be): its modalities become dependent, which tamper detection needs and synth-sims lacks."""
    ds = load_dataset(src, splits=("train", "valid", "test", "unlabeled"))
    rng = np.random.default_rng(0)
    proj = {m: rng.normal(0, 1, (4, ds.manifest.modalities[m]["dim"])) for m in MODS}
    arrays = {}
    for name, split in ds.splits.items():
        a = dict(split.arrays)
        sig = rng.normal(0, 1, (len(split), 4))
        for m in MODS:
            real = np.arange(a[m].shape[1])[None] < a[f"{m}_lengths"][:, None]
            a[m] = (a[m] + strength * (sig @ proj[m])[:, None, :] * real[..., None]).astype(np.float32)
        arrays[name] = a
    labels = pd.concat([s.labels for s in ds.splits.values()], ignore_index=True)
    write_dataset(out, replace(ds.manifest, name="synth-sims-shared", files={}), arrays, labels)
    return out


def test_tamper_detection_is_learned_when_modalities_share_information(small_data, tmp_path):
    data = _with_shared_signature(small_data["synth-sims"], tmp_path / "shared")
    p = _params(tmp_path, "pretrain.presets.synth-sims.epochs=10", "pretrain.presets.synth-sims.batch_size=16",
                "pretrain.heldout=0.3")
    res = run_pretraining(p, str(data), 1111, tmp_path / "pre", progress=False)
    assert res["best"]["heldout_tamper_acc"] > 0.7  # chance is 0.5


def test_weak_positives_by_m_polarity_or_by_unimodal_polarities(small_data, params):
    ds = load_dataset(small_data["synth-sims"])
    cfg = method_config(params, "aemt", "synth-sims")
    batch = {"y": torch.tensor([0.4, 0.6, -0.2]), "y_T": torch.tensor([0.2, 0.2, -0.2]),
             "y_A": torch.tensor([0.2, -0.2, -0.2]), "y_V": torch.tensor([0.2, 0.2, 0.2])}
    weak, neg = build_method("aemt", cfg, ds.manifest).contrast_masks(batch)
    assert neg.tolist() == [[False, False, True], [False, False, True], [True, True, False]]
    assert weak[0, 1] and weak[1, 0]  # same M polarity
    weak_u, neg_u = build_method("aemt", replace(cfg, weak_positives="unimodal"), ds.manifest).contrast_masks(batch)
    assert torch.equal(neg_u, neg)
    assert not weak_u[0, 1] and not weak_u[1, 0]  # their audio polarities differ: neither positive nor negative


# --- text input, kernels, and every ablation switch: same weights, same batch, flipped switch -> a difference ---

def _small_cfg(params, **over):
    """synth-sims's preset, narrowed for speed, random initialisation."""
    base = method_config(params, "aemt", "synth-sims")
    return replace(base, **{"dim": 8, "heads": 2, "levels": 1, "encoder_layers": 1, "pretrained": "", **over})


def _twin(params, ds, cfg_a, cfg_b):
    """Two AE-MT models with the same weights (b loads a's), in training mode."""
    torch.manual_seed(0)
    a = build_method("aemt", cfg_a, ds.manifest)
    b = build_method("aemt", cfg_b, ds.manifest)
    b.load_state_dict(a.state_dict())
    return a.train(), b.train()


def _loss_and_grads(model, batch, seed=1):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    terms = model.losses(model(batch), batch, 0)
    total = sum(terms.values())
    total.backward()
    return terms, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_text_input_first_word_reads_only_the_first_position(small_data, params):
    ds = load_dataset(small_data["synth-sims"])
    batch = to_tensors(ds)["train"].batch(torch.arange(6))
    changed = dict(batch)
    changed["text"] = batch["text"].clone()
    changed["text"][:, 1:] += 5.0  # every token after the first
    torch.manual_seed(0)
    first = build_method("aemt", _small_cfg(params, text_input="first_word", pool_len=4), ds.manifest).eval()
    enc, enc2 = first.encode_inputs(batch), first.encode_inputs(changed)
    assert enc["text"][0].shape[1] == 1 and enc["audio"][0].shape[1] == 4  # one text position; A/V pooled
    assert torch.equal(enc["text"][0], enc2["text"][0])
    assert torch.allclose(first(batch)["pred"], first(changed)["pred"])
    seq = build_method("aemt", _small_cfg(params, text_input="sequence", pool_len=4), ds.manifest).eval()
    seq.load_state_dict(first.state_dict())
    assert seq.encode_inputs(batch)["text"][0].shape[1] == 4
    assert not torch.allclose(seq.encode_inputs(batch)["text"][0], seq.encode_inputs(changed)["text"][0])
    # pretraining reads the same inputs: the first word is x[:, :1], and is never pooled
    spec = replace(SPEC, text_input="first_word", pool_len=3)
    x = {m: (torch.randn(2, 5, 2), torch.ones(2, 5, dtype=torch.bool)) for m in MODS}
    got = encoder_inputs(x, spec)
    assert torch.equal(got["text"][0], x["text"][0][:, :1]) and got["vision"][0].shape == (2, 3, 2)


def test_the_paper_is_the_default_text_input_and_kernels_per_modality(params):
    cfg = method_config(params, "aemt", "simsv2")
    assert cfg.text_input == "first_word"  # section 3.2.1
    spec = AEMT.encoder_spec(cfg)
    assert (spec.kernel_text, spec.kernel_audio, spec.kernel_vision) == (5, 3, 1)  # k_m, eq. 1 (MMSA's MulT values)


def test_each_modality_encoder_and_decoder_has_its_own_kernel(small_data, params):
    ds = load_dataset(small_data["synth-sims"])
    cfg = _small_cfg(params, conv_kernel_text=5, conv_kernel_audio=1, conv_kernel_vision=3)
    model = build_method("aemt", cfg, ds.manifest)
    assert [model.encoders[m].conv.kernel_size[0] for m in MODS] == [5, 1, 3]
    spec = AEMT.encoder_spec(cfg)
    ae = Autoencoders({m: ds.manifest.modalities[m]["dim"] for m in MODS}, spec, decoder_layers=1)
    assert [ae.encoders[m].conv.kernel_size[0] for m in MODS] == [5, 1, 3]
    assert [ae.decoders[m].conv.kernel_size[0] for m in MODS] == [5, 1, 3]  # eq. 4 uses k_m too
    shared = build_method("aemt", replace(cfg, conv_kernel=3), ds.manifest)  # the option: one kernel for all
    assert [shared.encoders[m].conv.kernel_size[0] for m in MODS] == [3, 3, 3]


def test_switch_contrastive_weight_zero_changes_loss_and_gradients(small_data, params):
    ds = load_dataset(small_data["synth-sims"])
    batch = to_tensors(ds)["train"].batch(torch.arange(8))
    # Z and Z^sp share one pass of 2B rows, so the dropout draws of Z depend on the switch: compare without the
    # model's own dropouts (the strong positive's mask, eq. 16, touches only Z^sp's rows).
    off = dict(relu_dropout=0.0, res_dropout=0.0, embed_dropout=0.0, attn_dropout_text=0.0, attn_dropout_audio=0.0,
               attn_dropout_vision=0.0, attn_dropout_self=0.0, out_dropout=0.0, text_dropout=0.0, encoder_dropout=0.0)
    full, no_cl = _twin(params, ds, _small_cfg(params, **off), _small_cfg(params, contrastive_weight=0.0, **off))
    t_full, g_full = _loss_and_grads(full, batch)
    t_no, g_no = _loss_and_grads(no_cl, batch)
    assert set(t_full) == {"senti", "contrastive"} and set(t_no) == {"senti"}
    assert t_full["contrastive"].item() != 0  # eq. 18 as printed can be negative (its ratio can exceed 1)
    assert torch.allclose(t_full["senti"], t_no["senti"])  # same weights, same batch, Z unchanged by the switch
    assert any(not torch.allclose(g_full[n], g_no[n]) for n in g_no)


def test_switch_encoder_lstm_replaces_the_encoders(small_data, params):
    ds = load_dataset(small_data["synth-sims"])
    batch = to_tensors(ds)["train"].batch(torch.arange(8))
    torch.manual_seed(0)
    tr = build_method("aemt", _small_cfg(params), ds.manifest).train()
    torch.manual_seed(0)
    lstm = build_method("aemt", _small_cfg(params, encoder="lstm"), ds.manifest).train()
    _, g_tr = _loss_and_grads(tr, batch)
    _, g_lstm = _loss_and_grads(lstm, batch)
    body = lambda g: {n for n in g if n.startswith("encoders.") and ".body." in n}  # noqa: E731  E_m's parameters
    assert body(g_tr) and body(g_lstm) and body(g_tr).isdisjoint(body(g_lstm))  # other parameters get gradients
    assert all(isinstance(lstm.encoders[m].body, torch.nn.LSTM) for m in MODS)


def test_switch_pretrained_file_changes_the_encoders_outputs(small_data, params, tmp_path):
    ds = load_dataset(small_data["synth-sims"])
    batch = to_tensors(ds)["train"].batch(torch.arange(8))
    cfg = _small_cfg(params)
    torch.manual_seed(5)
    donor = build_method("aemt", cfg, ds.manifest)  # stands in for pretraining's encoders
    spec = AEMT.encoder_spec(cfg)
    (tmp_path / "synth-sims").mkdir()
    torch.save({"spec": spec.as_dict(), "in_dims": {m: donor.encoders[m].in_dim for m in MODS},
                "encoders": {m: donor.encoders[m].state_dict() for m in MODS}}, tmp_path / "synth-sims" / "encoders.pt")
    scratch, pre = _twin(params, ds, cfg, replace(cfg, pretrained=str(tmp_path / "{dataset}")))
    assert scratch.on_train_start() == {}
    assert pre.on_train_start()["pretrained_encoders"]["path"].endswith("encoders.pt")
    scratch.eval(), pre.eval()
    assert not torch.allclose(scratch(batch)["pred"], pre(batch)["pred"])
    for m in MODS:
        assert torch.equal(pre.encoders[m].conv.weight, donor.encoders[m].conv.weight)
    # a file pretrained with another text input or kernels is refused
    with pytest.raises(config.ConfigError, match="text_input"):
        build_method("aemt", replace(cfg, pretrained=str(tmp_path / "{dataset}"), text_input="first_word"),
                     ds.manifest).on_train_start()


@pytest.mark.parametrize("switch", [{"weak_positives": "unimodal"}, {"contrastive_denominator": "all"},
                                    {"text_input": "first_word"}])
def test_switch_changes_the_loss_with_the_same_weights_and_batch(small_data, params, switch):
    ds = load_dataset(small_data["synth-sims"])
    batch = to_tensors(ds)["train"].batch(torch.arange(16))
    assert "y_T" in batch  # unimodal labels (synth-sims has them)
    a, b = _twin(params, ds, _small_cfg(params), _small_cfg(params, **switch))
    assert any(getattr(a.cfg, k) != v for k, v in switch.items())
    t_a, _ = _loss_and_grads(a, batch)
    t_b, _ = _loss_and_grads(b, batch)
    assert not torch.allclose(t_a["contrastive"], t_b["contrastive"])


def test_aemt_applies_mults_text_dropout_in_training(small_data, params):
    ds = load_dataset(small_data["synth-sims"])
    batch = to_tensors(ds)["train"].batch(torch.arange(8))
    a, b = _twin(params, ds, _small_cfg(params, contrastive_weight=0.0),
                 _small_cfg(params, contrastive_weight=0.0, text_dropout=0.5))
    t_a, _ = _loss_and_grads(a, batch)
    t_b, _ = _loss_and_grads(b, batch)
    assert not torch.allclose(t_a["senti"], t_b["senti"])
    a.eval(), b.eval()
    assert torch.allclose(a(batch)["pred"], b(batch)["pred"])
