"""Checkpoints: the parameters of a method's frozen modules (weights from outside that never change) are not written
to checkpoint.pt / best.pt, which store their SHA-256 fingerprint instead; `train.load_weights`, the one loader
(resume, the papers' figures), loads everything else strictly and refuses other frozen weights.

Every registered method whose model has frozen modules on its embedded data is tested, and a method holding a
frozen tiny BERT (`finetune=False`, as a config with a frozen text encoder builds it) stands for one today."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from msarepro import methods
from msarepro.config import ConfigError, MethodConfig
from msarepro.data import load_dataset
from msarepro.methods import all_methods, build_method, method_config
from msarepro.methods.base import Method
from msarepro.methods.blocks import masked_mean
from msarepro.methods.text_encoder import TextEncoder
from msarepro.train import RunSpec, _save, fingerprint, frozen_keys, load_weights, run

from .conftest import fast_params

FAMILY_DATASET = {"trimodal": "synth-mosi", "image_text": "synth-mvsa"}


class FrozenBert(Method):
    """A frozen tiny BERT over the token ids (not fine-tuned), a trained linear head over its mean state."""
    name = "frozen_bert"

    @dataclass(frozen=True)
    class Config(MethodConfig):
        max_epochs: int = 2

    def __init__(self, cfg, manifest):
        super().__init__(cfg, manifest)
        self.text = TextEncoder("tiny-bert", manifest, finetune=False)
        self.out = nn.Linear(self.text.out_dim, self.out_dim)

    def forward(self, batch):
        h, mask = self.text(batch)
        return {"pred": self.head(self.out(masked_mean(h, mask)))}


@pytest.fixture
def frozen_bert(monkeypatch):
    monkeypatch.setitem(methods.METHODS, FrozenBert.name, FrozenBert)
    return FrozenBert.name


# every registered method on its embedded data (those whose model has no frozen module there are skipped)
REGISTERED = [(m, FAMILY_DATASET[cls.families[-1]]) for m, cls in sorted(all_methods().items())]
CASES = [("frozen_bert", "synth-mosi")] + REGISTERED


def test_text_encoder_declares_its_model_frozen_only_when_not_fine_tuned(small_data):
    m = load_dataset(small_data["synth-mosi"]).manifest
    frozen = TextEncoder("tiny-bert", m, finetune=False)
    assert frozen.frozen_modules() == [frozen.model]
    assert all(not p.requires_grad for p in frozen.model.parameters())
    assert TextEncoder("tiny-bert", m).frozen_modules() == []
    assert TextEncoder("features", m, finetune=False).frozen_modules() == []


@pytest.mark.parametrize("method,dataset", CASES, ids=[f"{m}-{d}" for m, d in CASES])
def test_frozen_weights_stay_out_of_checkpoints_and_are_verified_on_load(method, dataset, frozen_bert, small_data,
                                                                         params, tmp_path):
    from msarepro.report.figures_papers import load_best, load_run

    ds = load_dataset(small_data[dataset])
    cls = methods.get_method(method)
    cfg = method_config(params, method, ds.manifest.preset)
    probe = build_method(method, cfg, ds.manifest)
    if not probe.frozen_modules():
        pytest.skip(f"{method} has no frozen modules on {dataset}")
    keys = frozen_keys(probe)
    assert keys
    out = tmp_path / "r"
    run(fast_params(1), RunSpec(method, str(small_data[dataset]), 3, out, progress=False))

    model, _, _ = load_run(out, method)  # rebuilt as in training: the same frozen weights
    state = model.state_dict()
    frozen_bytes = sum(state[k].numel() * state[k].element_size() for k in keys)
    for name in ("checkpoint.pt", "best.pt"):
        saved = torch.load(out / name, map_location="cpu", weights_only=False)
        assert not set(keys) & set(saved["model"]), name
        assert set(saved["model"]) == set(state) - set(keys), name
        assert saved["frozen"] == {"sha256": fingerprint(model, keys), "tensors": len(keys), "bytes": frozen_bytes}
        # the file is smaller by about the frozen tensors' bytes: the same content with them put back
        full = tmp_path / f"full-{name}"
        _save(full, {**saved, "model": {**saved["model"], **{k: state[k] for k in keys}}})
        gap = full.stat().st_size - (out / name).stat().st_size
        assert frozen_bytes <= gap <= frozen_bytes + 1024 + 512 * len(keys), (name, gap, frozen_bytes)  # + zip records

    # best.pt reloads through the one loader: the best epoch's test outputs again
    load_best(model, out)
    best_epoch = torch.load(out / "best.pt", weights_only=False)["epoch"]
    with np.load(out / "epochs" / f"epoch_{best_epoch:03d}.npz") as z:
        want = z["test"]
    from msarepro.data.loader import to_tensors
    from msarepro.train import predict
    got, _ = predict(model, to_tensors(load_dataset(small_data[dataset]))["test"], torch.device("cpu"))
    assert np.array_equal(got, want)

    # a file that records no frozen weights must hold every entry
    bare = {k: v for k, v in torch.load(out / "best.pt", weights_only=False).items() if k != "frozen"}
    with pytest.raises(ConfigError, match=rf"bare\.pt: holds the weights of another model \({len(keys)} entries missing"):
        load_weights(model, bare, tmp_path / "bare.pt")

    # a frozen weight that differs from training's (another download, a tampered file) is refused, naming best.pt
    with torch.no_grad():
        dict(model.named_parameters())[keys[0]].add_(1e-3)
    with pytest.raises(ConfigError, match=r"best\.pt: was trained with frozen weights of SHA-256 ") as e:
        load_best(model, out)
    assert "\n" not in str(e.value)


def test_models_without_frozen_modules_keep_every_entry(small_data, tmp_path):
    """lf_dnn: best.pt and checkpoint.pt hold the whole state_dict, with no "frozen" record, as before."""
    out = tmp_path / "r"
    run(fast_params(1), RunSpec("lf_dnn", str(small_data["synth-mosi"]), 1, out, progress=False))
    ds = load_dataset(small_data["synth-mosi"])
    model = build_method("lf_dnn", method_config(fast_params(1), "lf_dnn", "synth-mosi"), ds.manifest)
    for name in ("best.pt", "checkpoint.pt"):
        saved = torch.load(out / name, weights_only=False)
        assert "frozen" not in saved and set(saved["model"]) == set(model.state_dict())
    load_weights(model, out / "best.pt")
    for k, v in torch.load(out / "best.pt", weights_only=False)["model"].items():
        assert torch.equal(model.state_dict()[k], v)
    other = build_method("tfn", method_config(fast_params(1), "tfn", "synth-mosi"), ds.manifest)
    with pytest.raises(ConfigError, match=r"best\.pt: holds the weights of another model") as e:
        load_weights(other, out / "best.pt")
    assert "\n" not in str(e.value)


def test_a_frozen_module_that_trains_is_a_programming_error(frozen_bert, small_data):
    m = load_dataset(small_data["synth-mosi"]).manifest
    model = FrozenBert(FrozenBert.Config(), m)
    next(model.text.model.parameters()).requires_grad_(True)
    with pytest.raises(ConfigError, match="frozen_modules\\(\\) holds parameters that train"):
        frozen_keys(model)


def test_frozen_keys_are_matched_by_identity_and_leave_buffers(small_data):
    """Only the frozen modules' parameters, by identity: a BatchNorm's running statistics (a buffer that changes)
    stay in the checkpoint even in a frozen module."""
    m = load_dataset(small_data["synth-mosi"]).manifest

    class WithNorm(FrozenBert):
        def __init__(self, cfg, manifest):
            super().__init__(cfg, manifest)
            self.norm = nn.BatchNorm1d(4)
            for p in self.norm.parameters():
                p.requires_grad_(False)

        def frozen_modules(self):
            return [self.text.model, self.norm]

    model = WithNorm(FrozenBert.Config(), m)
    keys = frozen_keys(model)
    assert "norm.weight" in keys and "norm.running_mean" not in keys and "out.weight" not in keys
    assert {k for k in keys if k.startswith("text.")} == {f"text.{n}" for n, _ in model.text.named_parameters()}
