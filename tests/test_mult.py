"""MulT: the real presets carry MMSA's published settings (kernels, dropouts, weight decay) into the built model,
and every dropout switch changes the training-mode outputs (same weights, same batch)."""
from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

from msarepro import config
from msarepro.data.format import Manifest
from msarepro.methods import build_method, method_config
from msarepro.methods.blocks import CrossModalLayer, transformer_encoder
from msarepro.methods.mult import MODS, MulT
from msarepro.train import make_optimizer

# MMSA's config_regression.json, "mult" -> datasetParams (simsv2: the GitHub repository's later file), written out
# by hand: kernels l/a/v, attn_dropout (text) / _a / _v, relu, res, embed, output, text dropout, weight decay.
MMSA = {
    "mosi": dict(k=(5, 5, 5), attn=(0.3, 0.2, 0.0), relu=0.0, res=0.0, embed=0.2, out=0.5, text=0.5, wd=0.005),
    "mosei": dict(k=(5, 1, 3), attn=(0.4, 0.0, 0.0), relu=0.0, res=0.0, embed=0.0, out=0.5, text=0.3, wd=0.001),
    "sims": dict(k=(5, 1, 1), attn=(0.2, 0.1, 0.0), relu=0.0, res=0.2, embed=0.1, out=0.1, text=0.3, wd=0.001),
    "simsv2": dict(k=(5, 3, 1), attn=(0.1, 0.2, 0.0), relu=0.1, res=0.0, embed=0.2, out=0.3, text=0.5, wd=0.005),
}
DIMS = {"mosi": (768, 5, 20), "mosei": (768, 74, 35), "sims": (768, 33, 709), "simsv2": (768, 25, 177)}


def _manifest(name: str, dims=(6, 5, 4), preset: str = "") -> Manifest:
    return Manifest(name=name, family="trimodal", task="regression", metric_family="mosi", label_range=(-3.0, 3.0),
                    modalities={m: {"dim": d, "max_len": 12} for m, d in zip(MODS, dims)},
                    splits={"train": 8, "valid": 4, "test": 4}, preset=preset)


def _batch(B: int = 6, dims=(6, 5, 4), lens=(7, 9, 5), seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d, L in zip(MODS, dims, lens):
        n = torch.randint(2, L + 1, (B,), generator=g)
        mask = torch.arange(L)[None] < n[:, None]
        out[m] = torch.randn(B, L, d, generator=g) * mask[..., None]
        out[f"{m}_mask"] = mask
    out["y"] = torch.randn(B, generator=g)
    return out


@pytest.mark.parametrize("preset", sorted(MMSA))
def test_real_preset_builds_mult_with_mmsas_kernels_and_dropouts(params, preset):
    cfg = method_config(params, "mult", preset)
    want = MMSA[preset]
    model = build_method("mult", cfg, _manifest(preset, DIMS[preset], preset))
    assert tuple(model.proj[m].kernel_size[0] for m in MODS) == want["k"]
    assert tuple(model.proj[m].padding[0] for m in MODS) == tuple((k - 1) // 2 for k in want["k"])
    attn = dict(zip(MODS, want["attn"]))
    for t in MODS:
        for s in MODS:
            if s == t:
                continue
            for layer in model.fusion.cross[f"{t}<-{s}"].layers:
                assert layer.attn.dropout == attn[s]  # keyed by the modality attended to, as MMSA does
                assert layer.ff[2].p == want["relu"] and layer.drop.p == want["res"]
        for layer in model.fusion.mem[t].layers:  # the self-attention transformers: MMSA's attn_dropout
            assert layer.self_attn.dropout == attn["text"]
            assert layer.dropout.p == want["relu"]
            assert layer.dropout1.p == want["res"] and layer.dropout2.p == want["res"]
        assert model.fusion.mem[t].norm is not None  # MulT's transformers end with a LayerNorm
    assert (cfg.embed_dropout, cfg.out_dropout, cfg.text_dropout) == (want["embed"], want["out"], want["text"])
    opt = make_optimizer(model, cfg)
    assert opt.param_groups[0]["weight_decay"] == want["wd"]


def test_one_kernel_for_every_modality_overrides_the_per_modality_ones(params):
    cfg = replace(method_config(params, "mult", "mosei"), conv_kernel=3)
    model = build_method("mult", cfg, _manifest("mosei", DIMS["mosei"], "mosei"))
    assert [model.proj[m].kernel_size[0] for m in MODS] == [3, 3, 3]
    with pytest.raises(config.ConfigError, match=r"methods.mult.conv_kernel_audio: 2; expected an odd number"):
        config.build(MulT.Config, {"conv_kernel_audio": 2}, "methods.mult")
    with pytest.raises(config.ConfigError, match=r"methods.mult.res_dropout: 1.0; expected a rate"):
        config.build(MulT.Config, {"res_dropout": 1.0}, "methods.mult")


SWITCHES = ("attn_dropout_text", "attn_dropout_audio", "attn_dropout_vision", "attn_dropout_self", "relu_dropout",
            "res_dropout", "embed_dropout", "out_dropout", "text_dropout")


def _quiet_config() -> MulT.Config:
    """Small MulT with every dropout off."""
    return config.build(MulT.Config, {"dim": 8, "heads": 2, "levels": 1, **{k: 0.0 for k in SWITCHES}}, "methods.mult")


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_dropout_switch_changes_training_outputs(switch):
    base = _quiet_config()
    torch.manual_seed(0)
    off = build_method("mult", base, _manifest("t"))
    on = build_method("mult", replace(base, **{switch: 0.5}), _manifest("t"))
    on.load_state_dict(off.state_dict())  # same weights
    batch = _batch()
    off.train(), on.train()
    torch.manual_seed(1)
    y_off = off(batch)["pred"]
    torch.manual_seed(1)
    y_off2 = off(batch)["pred"]
    torch.manual_seed(1)
    y_on = on(batch)["pred"]
    assert torch.equal(y_off, y_off2)  # with every dropout off, training outputs are deterministic
    assert not torch.allclose(y_on, y_off)  # the switch acts in training ...
    off.eval(), on.eval()
    assert torch.allclose(on(batch)["pred"], off(batch)["pred"], atol=1e-6)  # ... and only there


def test_text_dropout_acts_on_the_text_input_only():
    base = _quiet_config()
    torch.manual_seed(0)
    model = build_method("mult", replace(base, text_dropout=0.5), _manifest("t")).train()
    batch = _batch()
    torch.manual_seed(2)
    enc = model.encode_inputs(batch)
    model.eval()
    ref = model.encode_inputs(batch)
    assert not torch.allclose(enc["text"][0], ref["text"][0])
    for m in ("audio", "vision"):
        assert torch.equal(enc[m][0], ref[m][0])


def test_shared_blocks_keep_their_single_dropout_rate_by_default():
    """TFN, SFTTR, INFIG, the text-only baseline and AE-MT's encoders call these without MulT's separate rates."""
    enc = transformer_encoder(8, 2, 2, dropout=0.3)
    for layer in enc.layers:
        assert layer.self_attn.dropout == 0.3 and layer.dropout.p == 0.3
        assert layer.dropout1.p == 0.3 and layer.dropout2.p == 0.3
    assert enc.norm is None
    layer = CrossModalLayer(8, 2, dropout=0.3, attn_dropout=0.1)
    assert layer.drop.p == 0.3 and layer.ff[2].p == 0.3 and layer.attn.dropout == 0.1


def test_aemt_embedded_presets_use_mults_embedded_backbone(params):
    """A fair table: on the embedded data AE-MT's MulT part is configured exactly as MulT is."""
    for ds in ("synth-mosi", "synth-sims"):
        mult, aemt = method_config(params, "mult", ds), method_config(params, "aemt", ds)
        diff = {f.name: (getattr(mult, f.name), getattr(aemt, f.name)) for f in fields(MulT.Config)
                if getattr(mult, f.name) != getattr(aemt, f.name)}
        assert not diff, diff
        assert aemt.encoder_layers == 3  # the paper's value (Table 2)
