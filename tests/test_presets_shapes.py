"""Embedded presets on real shapes (issue 17, point 4): `train --preset`, and every trimodal method's embedded
preset building and running on data in MOSI's and CH-SIMS's real feature sizes (synth_like.py)."""
from __future__ import annotations

import json

import pytest

from msarepro.config import ConfigError
from msarepro.train import RunSpec, run

from .conftest import ROOT, fast_params

LIKE_SCALE = 0.0125  # MOSI-like: 16 / 3 / 9 clips; CH-SIMS-like: 17 / 6 / 6


@pytest.fixture(scope="module")
def like_data(tmp_path_factory) -> dict[str, object]:
    from msarepro.data.synth_like import write_like
    root = tmp_path_factory.mktemp("like")
    return {like: (write_like(like, root / like, seed=0, scale=LIKE_SCALE), root / like)[1] for like in ("mosi", "sims")}


def test_train_preset_flag_resolves_that_preset(tmp_path, like_data):
    """--preset resolves methods.<m>.presets.<NAME> instead of the manifest's (mosi); absent, the manifest's."""
    params = fast_params(1, **{"methods.lf_dnn.presets.synth-mosi.lr": 0.005})
    run(params, RunSpec("lf_dnn", str(like_data["mosi"]), 1, tmp_path / "own", progress=False))
    run(params, RunSpec("lf_dnn", str(like_data["mosi"]), 1, tmp_path / "other", progress=False, preset="synth-mosi"))
    own = json.loads((tmp_path / "own" / "config.json").read_text())
    other = json.loads((tmp_path / "other" / "config.json").read_text())
    assert own["preset"] == "mosi" and other["preset"] == "synth-mosi"
    assert own["method"]["lr"] == 1.0e-3 and other["method"]["lr"] == 0.005
    with pytest.raises(ConfigError, match="no such preset"):
        run(params, RunSpec("lf_dnn", str(like_data["mosi"]), 1, tmp_path / "x", progress=False, preset="synth-mosy"))


EMBEDDED = {"mosi": "synth-mosi", "sims": "synth-sims"}  # the embedded preset tried on each real dataset's shapes


def _trimodal_methods() -> list[str]:
    from msarepro.methods import all_methods
    return sorted(n for n, c in all_methods().items() if "trimodal" in c.families)


def _built(params, name: str, data_dir, preset: str):
    """(model, train split) of method `name` with `preset`'s settings on the dataset at `data_dir`."""
    import dataclasses

    import torch

    from msarepro.data import load_dataset
    from msarepro.data.loader import to_tensors
    from msarepro.methods import build_method, method_config
    from msarepro.train import provide_inputs, with_preset_override
    ds = with_preset_override(params, load_dataset(data_dir), preset)
    cfg = method_config(params, name, preset)
    if getattr(cfg, "pretrained", None):  # AE-MT: its encoders from random initialisation (no pretraining here)
        cfg = dataclasses.replace(cfg, pretrained="")
    provide_inputs(name, cfg, ds, data_dir.parent / ".tokens")
    torch.manual_seed(0)
    return build_method(name, cfg, ds.manifest), to_tensors(ds)["train"]


@pytest.mark.parametrize("like", ["mosi", "sims"])
def test_every_embedded_preset_builds_and_steps_on_real_shapes(like, like_data, params):
    """Every trimodal method, with its embedded-data preset, builds on MOSI's (audio 5, vision 20) and CH-SIMS's
    (audio 33, vision 709) feature sizes and runs one forward / backward with a finite loss and gradients."""
    import torch
    for name in _trimodal_methods():
        model, split = _built(params, name, like_data[like], EMBEDDED[like])
        model.train()
        model.use_split(split)
        batch = next(iter(split.batches(8, shuffle=False)))
        loss = sum(model.losses(model(batch), batch, 0).values())
        loss.backward()
        assert torch.isfinite(loss), name
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), name


def test_fitting_heads():
    from msarepro.methods.blocks import fitting_heads
    assert [fitting_heads(w, h) for w, h in ((8, 2), (12, 4), (5, 2), (33, 2), (709, 4), (177, 4), (35, 4))] == \
        [2, 4, 1, 1, 1, 3, 1]


def test_clgsi_heads_fitted_on_real_shapes_only(like_data, small_data, params):
    """CLGSI's embedded preset (2 audio, 4 vision heads): on MOSI's 5-d audio the audio heads become 1 (recorded);
    on the embedded data (audio 8, vision 12) nothing changes: the same heads, so the same model and outputs."""
    model, _ = _built(params, "clgsi", like_data["mosi"], "synth-mosi")
    assert model.adapted == {"audio_heads": {"configured": 2, "used": 1, "width": 5}}
    assert model.audio.encoder.layers[0].self_attn.num_heads == 1
    for data in ("synth-mosi", "synth-sims"):
        model, _ = _built(params, "clgsi", small_data[data], data)
        assert model.adapted == {}
        assert model.audio.encoder.layers[0].self_attn.num_heads == model.cfg.audio_heads == 2
        assert model.vision.encoder.layers[0].self_attn.num_heads == model.cfg.video_heads == 4


def test_real_presets_keep_their_head_counts(params):
    """Every real CLGSI preset's head counts divide its own dataset's feature sizes: none is fitted."""
    from msarepro.data.synth_like import LIKE
    from msarepro.methods import method_config
    from msarepro.methods.blocks import fitting_heads
    for preset in ("mosi", "mosei", "sims", "simsv2"):
        cfg, dims = method_config(params, "clgsi", preset), LIKE[preset].dims
        for setting, mod in (("audio_heads", "audio"), ("video_heads", "vision")):
            heads = getattr(cfg, setting)
            assert fitting_heads(dims[mod], heads) == heads, (preset, setting)


def test_adapted_heads_recorded_in_config_json(tmp_path, like_data):
    params = fast_params(1)
    run(params, RunSpec("clgsi", str(like_data["sims"]), 1, tmp_path / "r", progress=False, preset="synth-sims"))
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["adapted"] == {"audio_heads": {"configured": 2, "used": 1, "width": 33},
                              "video_heads": {"configured": 4, "used": 1, "width": 709}}


def test_pretrain_preset_resolves_that_preset(tmp_path, like_data, capsys):
    """AE-MT's pretraining with --preset synth-mosi pretrains with that preset's settings (its key), on MOSI's
    shapes; an unknown name, or --preset with --stage, is refused."""
    from msarepro.cli import main
    from msarepro.methods import pretrain_settings
    from msarepro.pretrain.run import run_pretraining

    from .conftest import pretrain_params
    params = pretrain_params(tmp_path / "data", 1)
    r = run_pretraining(params, str(like_data["mosi"]), 1, tmp_path / "enc", progress=False, preset="synth-mosi")
    assert r["key"] == pretrain_settings(params, "aemt", "synth-mosi")[1] != pretrain_settings(params, "aemt", "mosi")[1]
    P = ["--params", str(ROOT / "params.yaml")]
    for extra in (["--preset", "synth-mosy"], ["--preset", "synth-mosi", "--stage"]):
        assert main(["pretrain", "--dataset", str(like_data["mosi"]), "--out", str(tmp_path / "x"), *extra, *P]) == 2
    assert "synth-mosy" in capsys.readouterr().err


def test_preset_override_leaves_the_callers_dataset_alone(params, small_data):
    """`train --preset` resolves settings under another preset through a copy: the loaded dataset's own manifest
    keeps its preset (a caller holding the dataset, e.g. check-presets, must not see it change)."""
    from msarepro.data import load_dataset
    from msarepro.train import with_preset_override
    ds = load_dataset(small_data["synth-mosi"])
    over = with_preset_override(params, ds, "synth-sims")
    assert over.manifest.preset == "synth-sims" and ds.manifest.preset in ("", None, "synth-mosi")
    assert over.splits is ds.splits  # the arrays are shared, not copied
    assert with_preset_override(params, ds, None) is ds
