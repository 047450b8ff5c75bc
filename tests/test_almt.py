"""ALMT (methods/almt.py): the AHL update (eq. 5) on a hand-computed case, the shape of every stage, the
parameter count on MOSI's dims against the paper's 2.50M, the 50 audio/vision frames of MOSI (sec. 3.2) against
the full lengths of the other presets, that every ablation row reads exactly the modalities it keeps (and the
refused Table 5 swap), that every ablation switch changes the computation, a real run of each through the
training loop, text ids through a BERT, and the saved attention maps."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from msarepro.config import ConfigError, build
from msarepro.data import load_dataset
from msarepro.data.format import Manifest
from msarepro.data.loader import to_tensors
from msarepro.methods import method_config
from msarepro.methods.almt import ALMT, AHLLayer, CrossModalityFusion, PooledFusion, UnguidedLayer
from msarepro.report.figures_papers import save_attention_maps
from msarepro.train import RunSpec, run

from .conftest import fast_params


def make_cfg(params, preset: str = "synth-mosi", **over) -> ALMT.Config:
    base = method_config(params, "almt", preset)
    return build(ALMT.Config, {**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, **over},
                 "methods.almt")


@pytest.fixture(scope="module")
def mosi(small_data):
    ds = load_dataset(small_data["synth-mosi"])
    return ds.manifest, to_tensors(ds)["train"].batch(torch.arange(6))


def build_model(params, manifest, preset: str = "synth-mosi", **over) -> ALMT:
    torch.manual_seed(0)
    return ALMT(make_cfg(params, preset, **over), manifest).eval()


def _set(linear: nn.Linear, w) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(w, dtype=torch.float32))


@pytest.mark.parametrize("residual,base", [("paper", 1.0), ("normed", 0.0)])
def test_ahl_update_eq5_by_hand(residual, base):
    """One head with d = d_k = 2, identity norms, W_Q = W_Ka = W_Kv = W_Va = I, W_Vv = 2I. With
    c = sqrt(2) ln 3 the scores are ln 3 or 0, so the softmax rows are (3/4, 1/4) or (1/2, 1/2)."""
    layer = AHLLayer(2, heads=1, head_dim=2, sources=("audio", "vision"), residual=residual, dropout=0.0)
    layer.norm_l = nn.Identity()
    layer.norm = nn.ModuleDict({"audio": nn.Identity(), "vision": nn.Identity()})
    for lin in (layer.to_q, layer.to_k["audio"], layer.to_k["vision"], layer.to_v["audio"]):
        _set(lin, torch.eye(2))
    _set(layer.to_v["vision"], 2 * torch.eye(2))
    assert isinstance(layer.to_out, nn.Identity)
    c = math.sqrt(2) * math.log(3)
    h_l = torch.tensor([[[c, 0.0], [0.0, c]]])
    # audio has a third, padded frame with a large value: it must get no weight
    h_a = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [50.0, 50.0]]])
    a_mask = torch.tensor([[True, True, False]])
    h_v = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    v_mask = torch.ones(1, 2, dtype=torch.bool)
    hyper = torch.ones(1, 2, 2)
    new, w = layer(h_l, {"audio": (h_a, a_mask), "vision": (h_v, v_mask)}, hyper)
    alpha = torch.tensor([[0.75, 0.25, 0.0], [0.5, 0.5, 0.0]])  # eq. 3
    beta = torch.tensor([[0.5, 0.5], [0.75, 0.25]])  # eq. 4
    torch.testing.assert_close(w["audio"][0, 0], alpha)
    torch.testing.assert_close(w["vision"][0, 0], beta)
    # eq. 5: H^{j-1} + alpha V_a + beta V_v = base + [[.75, 0], [.5, 0]] + [[0, 1], [0, 1.5]]
    # ("normed": LayerNorm of the constant H^{j-1} is 0, the authors' code's residual)
    expected = base + torch.tensor([[0.75, 1.0], [0.5, 1.5]])
    torch.testing.assert_close(new[0], expected)


def test_unguided_layer_is_mlp_over_concatenation():
    """Table 4's "replaced with feature concatenation": the language of the layer's scale, audio and vision
    concatenated along features (3d), then the MLP; the residual as in eq. 5."""
    torch.manual_seed(0)
    layer = UnguidedLayer(4, n_sources=2, mlp_dim=8, dropout=0.0)
    assert layer.norm.normalized_shape == (12,) and layer.mlp[0].in_features == 12
    h_l, h_a, h_v, hyper = (torch.randn(2, 3, 4) for _ in range(4))
    m = torch.ones(2, 3, dtype=torch.bool)
    out = layer(h_l, {"audio": (h_a, m), "vision": (h_v, m)}, hyper)
    torch.testing.assert_close(out, hyper + layer.mlp(layer.norm(torch.cat([h_l, h_a, h_v], -1))))
    # one modality dropped (Table 3, "w/o Audio & AHL"): [H_l^j ; H_v^1], 2d
    one = UnguidedLayer(4, n_sources=1, mlp_dim=8, dropout=0.0)
    out = one(h_l, {"vision": (h_v, m)}, hyper)
    torch.testing.assert_close(out, hyper + one.mlp(one.norm(torch.cat([h_l, h_v], -1))))


def test_every_stage_shape(params, mosi):
    manifest, batch = mosi
    model = build_model(params, manifest)
    cfg, b = model.cfg, 6
    d, t = cfg.dim, cfg.tokens
    enc = model.encode(batch)
    for m in ("text", "audio", "vision"):  # eq. 1
        h, mask = enc["h1"][m]
        assert h.shape == (b, t, d) and mask.shape == (b, t) and mask.all()
    assert len(enc["language"]) == 3 and all(h.shape == (b, t, d) for h in enc["language"])  # eq. 2
    assert enc["hyper"].shape == (b, t, d)  # eq. 5
    assert len(enc["weights"]) == 3
    for w in enc["weights"]:  # eqs. 3-4
        assert w["audio"].shape == w["vision"].shape == (b, cfg.ahl_heads, t, t)
        torch.testing.assert_close(w["audio"].sum(-1), torch.ones(b, cfg.ahl_heads, t))
    assert enc["fused"].shape == (b, d)  # eq. 8
    assert model(batch)["pred"].shape == (b,)
    deeper = build_model(params, manifest, ahl_depth=4)
    assert len(deeper.encode(batch)["language"]) == 4 and len(deeper.hyper_layers) == 4


def test_parameter_count_on_mosi_dims():
    """Paper Table 8: 2.50M on MOSI (BERT excluded), with the 50-frame audio/vision of its section 3.2."""
    manifest = Manifest(name="mosi", family="trimodal", task="regression", metric_family="mosi",
                        label_range=(-3.0, 3.0), splits={"train": 1},
                        modalities={"text": {"dim": 768, "max_len": 50}, "audio": {"dim": 5, "max_len": 375},
                                    "vision": {"dim": 20, "max_len": 500}})

    def count(**over):
        model = ALMT(ALMT.Config(fusion_depth=2, **over), manifest)
        return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith("text."))

    assert round(count() / 1e6, 2) == 2.50  # the default, max_frames: 50
    assert round(count(max_frames=0) / 1e6, 2) == 2.60  # full unaligned lengths: longer learned position tables


def test_ahl_guidance_switch(params, mosi):
    manifest, batch = mosi
    full = build_model(params, manifest)
    assert all(isinstance(layer, AHLLayer) for layer in full.hyper_layers)
    only3 = build_model(params, manifest, ahl_guidance=[3])
    assert [type(layer) for layer in only3.hyper_layers] == [UnguidedLayer, UnguidedLayer, AHLLayer]
    assert list(only3.attention_maps(batch)) == ["alpha_layer3", "beta_layer3"]
    no_ahl = build_model(params, manifest, ahl_guidance=[])
    assert all(isinstance(layer, UnguidedLayer) for layer in no_ahl.hyper_layers)
    assert no_ahl.attention_maps(batch) == {} and no_ahl.encode(batch)["weights"] == []
    # without guidance the language still reaches the hyper-modality, by concatenation (H_0 reads only that)
    other = dict(batch, text=batch["text"] + torch.randn_like(batch["text"]))
    with torch.no_grad():
        for model in (full, no_ahl):
            assert not torch.allclose(model.encode(batch)["hyper"], model.encode(other)["hyper"])
            assert not torch.allclose(model(batch)["pred"], model(other)["pred"])


def test_fusion_queries_with_language(params, mosi):
    manifest, batch = mosi
    model = build_model(params, manifest)
    seen = {}
    model.fusion.register_forward_pre_hook(lambda mod, args: seen.update(q=args[0], kv=args[2]))
    with torch.no_grad():
        enc = model.encode(batch)
    assert torch.equal(seen["q"], enc["language"][-1]) and torch.equal(seen["kv"], enc["hyper"])  # eqs. 6-7


def test_table5_swap_is_refused(params, mosi):
    """Table 5's swap (H_hyper^3 as query) would read H at H_0 on the hyper-modality stream, which attends only to
    the language: a model that never reads audio or vision. It is refused with the reason, on one line."""
    with pytest.raises(ConfigError) as err:
        make_cfg(params, fusion_query="hyper")
    msg = str(err.value)
    assert msg.startswith("methods.almt.fusion_query: hyper (Table 5's swap) is refused") and "\n" not in msg
    assert "would never read audio or vision" in msg


@pytest.mark.parametrize("kind", ["concat", "add", "gru", "tfn", "lmf"])
def test_fusion_alternatives(params, mosi, kind):
    manifest, batch = mosi
    model = build_model(params, manifest, fusion=kind, tfn_dim=5, lmf_rank=3)
    d = model.cfg.dim
    assert isinstance(model.fusion, PooledFusion)
    assert not any(isinstance(m, CrossModalityFusion) for m in model.modules())
    with torch.no_grad():
        enc = model.encode(batch)
    h_l, h_hyper = enc["language"][-1].mean(1), enc["hyper"].mean(1)
    if kind == "concat":
        torch.testing.assert_close(enc["fused"], torch.cat([h_l, h_hyper], -1))
    elif kind == "add":
        torch.testing.assert_close(enc["fused"], h_l + h_hyper)
    elif kind == "tfn":
        assert model.fusion.post[0].in_features == 6 * 6
    elif kind == "lmf":
        assert [tuple(f.shape) for f in model.fusion.factors] == [(3, d + 1, d)] * 2
    assert model.out.in_features == enc["fused"].shape[1] == (2 * d if kind == "concat" else d)
    model.train()
    model(batch)["pred"].sum().backward()
    assert all(p.grad is not None for p in model.fusion.parameters())


def test_without_modality_embedding(params, mosi):
    manifest, batch = mosi
    model = build_model(params, manifest, modality_embedding=False)
    assert all(e.tokens is None and len(e.layers) == 0 for e in model.embed.values())
    with torch.no_grad():
        enc = model.encode(batch)
    for m in ("text", "audio", "vision"):
        h, mask = enc["h1"][m]
        assert h.shape == (*batch[m].shape[:2], model.cfg.dim) and torch.equal(mask, batch[f"{m}_mask"])
    assert enc["hyper"].shape == enc["language"][-1].shape == (6, batch["text"].size(1), model.cfg.dim)
    assert enc["weights"][0]["audio"].shape[-2:] == (batch["text"].size(1), batch["audio"].size(1))


def _perturbed(batch, *mods):
    return dict(batch, **{m: batch[m] + 3 * torch.randn_like(batch[m]) for m in mods})


def test_dropped_modalities(params, mosi):
    manifest, batch = mosi
    with torch.no_grad():
        full = build_model(params, manifest)
        assert not torch.allclose(full(batch)["pred"], full(_perturbed(batch, "audio"))["pred"])
        no_audio = build_model(params, manifest, modalities=["text", "vision"])
        assert "audio" not in no_audio.embed
        assert torch.equal(no_audio(batch)["pred"], no_audio(_perturbed(batch, "audio"))["pred"])
        assert not torch.allclose(no_audio(batch)["pred"], no_audio(_perturbed(batch, "vision"))["pred"])
        assert all(list(w) == ["vision"] for w in no_audio.encode(batch)["weights"])
        text_only = build_model(params, manifest, modalities=["text"])
        assert len(text_only.hyper_layers) == 0 and text_only.h_hyper0 is None
        enc = text_only.encode(batch)
        assert torch.equal(enc["hyper"], enc["language"][-1])  # the language takes the hyper-modality's place
        assert torch.equal(text_only(batch)["pred"], text_only(_perturbed(batch, "audio", "vision"))["pred"])
        assert not torch.allclose(text_only(batch)["pred"], text_only(_perturbed(batch, "text"))["pred"])


MOSI = Manifest(name="mosi", family="trimodal", task="regression", metric_family="mosi", label_range=(-3.0, 3.0),
                splits={"train": 1}, preset="mosi",
                modalities={"text": {"dim": 768, "max_len": 50}, "audio": {"dim": 5, "max_len": 375},
                            "vision": {"dim": 20, "max_len": 500}})


def mosi_batch(audio_len: list[int], vision_len: list[int]) -> dict[str, torch.Tensor]:
    """Random features of MOSI's dims, right-padded with zeros and cut to the longest true length, as the loader
    gives them."""
    g = torch.Generator().manual_seed(0)
    b = len(audio_len)
    batch = {"text": torch.randn(b, 50, 768, generator=g), "text_mask": torch.ones(b, 50, dtype=torch.bool)}
    for m, dim, lens in (("audio", 5, audio_len), ("vision", 20, vision_len)):
        lens = torch.tensor(lens)
        mask = torch.arange(int(lens.max()))[None, :] < lens[:, None]  # (B, L)
        batch[m] = torch.randn(b, mask.size(1), dim, generator=g) * mask[..., None]
        batch[f"{m}_mask"] = mask
    return batch


def test_max_frames_of_each_preset(params):
    """Sec. 3.2 gives MOSI's audio and vision as 50 frames; the paper gives no length for MOSEI or CH-SIMS, which
    read the full unaligned lengths as the authors' code does. The embedded presets keep 50, which cuts nothing
    there (40 audio / 30 vision frames at most)."""
    got = {p: method_config(params, "almt", p).max_frames for p in ("mosi", "mosei", "sims", "simsv2",
                                                                      "synth-mosi", "synth-sims")}
    assert got == {"mosi": 50, "mosei": 0, "sims": 0, "simsv2": 0, "synth-mosi": 50, "synth-sims": 50}
    assert ALMT.Config().max_frames == 50


def test_mosi_preset_reads_the_first_50_frames(params):
    """The MOSI preset (its text encoder swapped for precomputed features, since BERT is not available offline):
    frame 60 does not affect any prediction; with the authors' full lengths (max_frames: 0) it does, for the
    samples where frame 60 is a real frame, and never where it is padding."""
    lens_a, lens_v = [375, 120, 45], [500, 61, 30]  # frame 60 real, real, padding
    batch = mosi_batch(lens_a, lens_v)
    late = dict(batch)
    for m in ("audio", "vision"):
        late[m] = batch[m].clone()
        late[m][:, 60] += 5.0
    preset = build_model(params, MOSI, "mosi", text_encoder="features")
    full = build_model(params, MOSI, "mosi", text_encoder="features", max_frames=0)
    assert preset.cfg.max_frames == 50 and preset.cfg.fusion_depth == 2
    assert preset.embed["vision"].pos.shape[0] == 50 + 8 and full.embed["vision"].pos.shape[0] == 500 + 8
    with torch.no_grad():
        assert torch.equal(preset(batch)["pred"], preset(late)["pred"])
        before, after = full(batch)["pred"], full(late)["pred"]
    assert (before - after).abs()[:2].min() > 1e-4  # real frames: the code option reads them
    torch.testing.assert_close(before[2], after[2])  # padding stays masked


def test_max_frames_cut_agrees_with_masks(params):
    """Cutting to 50 frames keeps each sample's first min(length, 50) real frames: a sample's prediction is the
    one it gets alone at its own true length (cut to 50), whatever the other samples' lengths."""
    lens_a, lens_v = [375, 45, 52], [500, 30, 49]
    batch = mosi_batch(lens_a, lens_v)
    model = build_model(params, MOSI, "mosi", text_encoder="features")
    with torch.no_grad():
        together = model(batch)["pred"]
        for i in range(3):
            alone = {"text": batch["text"][i:i + 1], "text_mask": batch["text_mask"][i:i + 1]}
            for m, lens in (("audio", lens_a), ("vision", lens_v)):
                n = min(lens[i], 50)
                alone[m] = batch[m][i:i + 1, :n]
                alone[f"{m}_mask"] = torch.ones(1, n, dtype=torch.bool)
            torch.testing.assert_close(model(alone)["pred"][0], together[i], rtol=1e-5, atol=1e-5)


def test_max_frames_truncates_audio_and_vision(params, mosi):
    manifest, batch = mosi
    model = build_model(params, manifest, max_frames=5)
    assert model.embed["audio"].pos.shape[0] == 5 + model.cfg.tokens
    late = dict(batch)
    for m in ("audio", "vision"):
        late[m] = batch[m].clone()
        late[m][:, 5:] += 10.0
    with torch.no_grad():
        assert torch.equal(model(batch)["pred"], model(late)["pred"])


@pytest.mark.parametrize("over", [
    {"fusion": "transformer", "fusion_query": "language", "ahl_guidance": [1, 2], "fusion_depth": 2},
    {"text_encoder": "features", "modality_embedding": False, "ahl_guidance": None},
], ids=["guide-l1-l2", "no-me"])
def test_valid_combinations_build(params, over):
    make_cfg(params, **over)


@pytest.mark.parametrize("over", [
    {"modalities": ["audio", "vision"]}, {"modalities": ["text", "text"]}, {"modalities": ["text", "depth"]},
    {"ahl_guidance": [0]}, {"ahl_guidance": [4]}, {"ahl_guidance": [1, 1]}, {"fusion": "mean"},
    {"fusion_query": "audio"}, {"fusion_query": "hyper"}, {"ahl_residual": "post"},
    {"modality_embedding": False, "ahl_guidance": [1]}, {"modality_embedding": False, "fusion": "gru"},
    {"dim": 0}, {"max_frames": -1},
])
def test_invalid_configs_are_rejected(params, over):
    with pytest.raises(ConfigError, match="methods.almt"):
        make_cfg(params, **over)


def test_text_ids_through_tiny_bert(params, mosi):
    manifest, batch = mosi
    model = build_model(params, manifest, text_encoder="tiny-bert").train()
    assert model.embed["text"].proj.in_features == model.text.out_dim
    out = model(batch)
    assert out["pred"].shape == (6,)
    out["pred"].sum().backward()
    assert all(p.grad is not None for p in model.text.model.parameters() if p.requires_grad)


def test_attention_maps_are_saved(params, mosi, tmp_path):
    manifest, batch = mosi
    model = build_model(params, manifest)
    path = save_attention_maps(model, batch, tmp_path / "att.npz", sample=2)
    with np.load(path) as z:
        keys = sorted(z.files)
        assert keys == sorted([f"{n}_layer{j}" for n in ("alpha", "beta") for j in (1, 2, 3)] + ["index"])
        t, h = model.cfg.tokens, model.cfg.ahl_heads
        assert z["beta_layer3"].shape == (h, t, t)
        np.testing.assert_allclose(z["alpha_layer1"].sum(-1), np.ones((h, t)), rtol=1e-5)
        assert int(z["index"]) == 2
    # without modality embedding the keys are the sample's real frames only
    raw = build_model(params, manifest, modality_embedding=False).attention_maps(batch, sample=1)
    assert raw["alpha_layer1"].shape[-1] == int(batch["audio_mask"][1].sum())
    np.testing.assert_allclose(raw["alpha_layer1"].sum(-1), 1.0, rtol=1e-5)


ALL = ("text", "audio", "vision")
ROWS = {  # paper row -> (switches, the modalities its model reads)
    "Table 1 ALMT": ({}, ALL),
    "Table 3 w/o Audio": ({"modalities": ["text", "vision"]}, ("text", "vision")),
    "Table 3 w/o Video": ({"modalities": ["text", "audio"]}, ("text", "audio")),
    "Table 3 w/o Audio & AHL": ({"modalities": ["text", "vision"], "ahl_guidance": []}, ("text", "vision")),
    "Table 3 w/o Video & AHL": ({"modalities": ["text", "audio"], "ahl_guidance": []}, ("text", "audio")),
    "Table 3 w/o Video & Audio": ({"modalities": ["text"]}, ("text",)),
    "Table 4 w/o AHL": ({"ahl_guidance": []}, ALL),
    "Table 4 w/o Modality Embedding": ({"modality_embedding": False}, ALL),
    "Table 6 H_l^2 only": ({"ahl_guidance": [2]}, ALL),
    "Table 6 H_l^1 and H_l^3": ({"ahl_guidance": [1, 3]}, ALL),
    **{f"Table 7 {kind}": ({"fusion": kind}, ALL) for kind in ("concat", "add", "gru", "tfn", "lmf")},
}


@pytest.mark.parametrize("row", list(ROWS))
def test_each_row_reads_the_modalities_it_keeps(params, mosi, row):
    """Perturbing a modality the paper's row uses changes every prediction; perturbing one it drops changes none."""
    manifest, batch = mosi
    over, reads = ROWS[row]
    model = build_model(params, manifest, **over)
    with torch.no_grad():
        pred = model(batch)["pred"]
        for m in ALL:
            moved = (pred - model(_perturbed(batch, m))["pred"]).abs()
            if m in reads:
                assert moved.min() > 1e-6, f"{row} ignores {m}"
            else:
                assert moved.max() == 0, f"{row} reads {m}"


def _same_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy every parameter/buffer of src into dst where the names match; a table that is shorter in dst
    (learned positions of fewer frames) takes src's leading rows. What stays unmatched is what the switch adds."""
    theirs = src.state_dict()
    with torch.no_grad():
        for name, t in dst.state_dict().items():
            s = theirs.get(name)
            if s is not None and s.dim() == t.dim() and all(a <= b for a, b in zip(t.shape, s.shape)):
                t.copy_(s[tuple(slice(0, n) for n in t.shape)])


SWITCHES = [  # (key, off, on, other settings of both models)
    ("modalities", ["text", "audio", "vision"], ["text", "vision"], {}),
    ("modalities", ["text", "audio", "vision"], ["text", "audio"], {}),
    ("modalities", ["text", "audio", "vision"], ["text"], {}),
    ("ahl_guidance", None, [], {}),
    ("ahl_guidance", None, [1, 3], {}),
    ("ahl_guidance", [1], [2], {}),
    ("ahl_guidance", None, [], {"modalities": ["text", "vision"]}),
    ("modality_embedding", True, False, {}),
    *[("fusion", "transformer", kind, {}) for kind in ("concat", "add", "gru", "tfn", "lmf")],
    ("max_frames", 0, 20, {}),  # the embedded sequences (up to 40 / 30 frames) are longer than 20
    ("ahl_residual", "paper", "normed", {}),
]


@pytest.mark.parametrize("key,off,on,common", SWITCHES,
                         ids=[f"{k}={on}" + ("+" + ",".join(c) if c else "") for k, _, on, c in SWITCHES])
def test_every_switch_changes_the_computation(params, mosi, key, off, on, common):
    """Same weights (copied wherever the two models share a parameter), same batch: flipping the switch moves
    the predictions. A switch that did nothing would build the same model and fail here."""
    manifest, batch = mosi
    a = build_model(params, manifest, **common, **{key: off})
    b = build_model(params, manifest, **common, **{key: on})
    _same_weights(a, b)
    with torch.no_grad():
        assert not torch.allclose(a(batch)["pred"], b(batch)["pred"], rtol=0, atol=1e-6)
    if key == "max_frames":  # the cut, not the shorter position table, is what moves them
        assert set(dict(a.named_parameters())) == set(dict(b.named_parameters()))


ABLATIONS = {
    "paper": {},
    "wo-audio": {"modalities": ["text", "vision"]},
    "wo-audio-ahl": {"modalities": ["text", "vision"], "ahl_guidance": []},
    "wo-video-audio": {"modalities": ["text"]},
    "wo-ahl": {"ahl_guidance": []},
    "wo-me": {"modality_embedding": False},
    "guide-l1-l3": {"ahl_guidance": [1, 3]},
    "wo-video-ahl": {"modalities": ["text", "audio"], "ahl_guidance": []},
    "gru": {"fusion": "gru"},
    "tfn": {"fusion": "tfn"},
    "lmf": {"fusion": "lmf"},
    "normed-residual": {"ahl_residual": "normed"},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_runs_end_to_end(name, small_data, tmp_path):
    over = {f"methods.almt.{k}": json.dumps(v) for k, v in ABLATIONS[name].items()}
    params = fast_params(max_epochs=1, **over)
    res = run(params, RunSpec("almt", str(small_data["synth-mosi"]), 1111, tmp_path / name, progress=False))
    assert res["epochs_run"] == 1 and math.isfinite(res["test"]["MAE"])
    saved = json.loads((tmp_path / name / "config.json").read_text())["method"]
    for k, v in ABLATIONS[name].items():
        assert saved[k] == v
