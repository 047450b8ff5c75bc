"""Every variant of params.yaml (`variants:`), on an embedded dataset of its family: it builds, runs forward and
backward, every trainable parameter gets a finite gradient, and the variant really differs from its full model
(other parameters, other predictions or other loss terms from the same initial seed and batch; a variant that
changes only the pretraining must change the pretraining key). A new variant needs no new test code here."""
from __future__ import annotations

import pytest
import torch

from msarepro.config import ConfigError
from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import (build_method, get_method, load_params, method_config, method_of,
                              pretrain_settings)
from msarepro.train import provide_inputs

from .conftest import ROOT

FAMILY_DATASET = {"trimodal": "synth-mosi", "image_text": "synth-mvsa"}
PARAMS = load_params(ROOT / "params.yaml")
CASES = [(name, FAMILY_DATASET[get_method(v.method).families[0]])
         for name, v in sorted(PARAMS.variants.items()) if not v.refused]


def _outputs(name: str, ds, data_root, batch_idx) -> tuple[torch.nn.Module, dict, dict]:
    """The model of `name` built from seed 0 and its forward + loss terms on a fixed batch (dropout seeded)."""
    cfg = method_config(PARAMS, name, ds.manifest.preset)
    method = method_of(PARAMS, name)
    provide_inputs(method, cfg, ds, data_root)
    torch.manual_seed(0)
    model = build_method(method, cfg, ds.manifest)
    train = to_tensors(ds)["train"]
    model.on_epoch_start(0, train)
    model.train()
    batch = train.batch(batch_idx)
    torch.manual_seed(1)
    out = model(batch)
    return model, out, model.losses(out, batch, 0)


def test_there_are_variants():
    assert len(CASES) >= 30, "params.yaml lost its variants"


@pytest.mark.parametrize("name,dataset", CASES, ids=[c[0] for c in CASES])
def test_variant_forward_backward_and_differs_from_its_full_model(name, dataset, small_data, tmp_path):
    ds = load_dataset(small_data[dataset])
    try:
        method_config(PARAMS, name, ds.manifest.preset)
    except ConfigError as e:  # a setting the embedded preset cannot take (e.g. a layer it does not have)
        pytest.skip(f"{name} does not apply to {dataset}'s preset: {e}")
    idx = torch.arange(16)
    model, out, terms = _outputs(name, ds, tmp_path, idx)
    assert torch.isfinite(out["pred"]).all()
    assert terms and all(torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing[:10]}"

    full = method_of(PARAMS, name)
    base, base_out, base_terms = _outputs(full, ds, tmp_path, idx)
    shapes = lambda m: {k: tuple(p.shape) for k, p in m.named_parameters()}  # noqa: E731
    differs = (shapes(model) != shapes(base) or not torch.allclose(out["pred"], base_out["pred"])
               or set(terms) != set(base_terms)
               or any(not torch.allclose(terms[k], base_terms[k]) for k in terms))
    if get_method(full).uses_pretraining:
        differs = differs or (pretrain_settings(PARAMS, name, ds.manifest.preset)[1]
                              != pretrain_settings(PARAMS, full, ds.manifest.preset)[1])
    assert differs, f"{name}: same parameters, predictions and losses as {full}: its settings do nothing"
