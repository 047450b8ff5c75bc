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

# Where each family's variants are tried, in order: a switch that acts only on what a dataset has (SFTTR's unimodal
# loss needs the T/A/V labels of synth-sims) must make a difference on one of them.
FAMILY_DATASETS = {"trimodal": ("synth-mosi", "synth-sims"), "image_text": ("synth-mvsa",)}
PARAMS = load_params(ROOT / "params.yaml")
CASES = [(name, FAMILY_DATASETS[get_method(v.method).families[0]])
         for name, v in sorted(PARAMS.variants.items()) if not v.refused]


_FULL: dict[tuple[str, str], tuple] = {}  # (full model, dataset) -> its parameter shapes, outputs, losses


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


def _differs(name: str, dataset: str, small_data, tmp_path) -> str | bool:
    """-> True if `name` differs from its full model on `dataset`, False if not, or why it does not apply there."""
    ds = load_dataset(small_data[dataset])
    full, preset = method_of(PARAMS, name), ds.manifest.preset
    try:
        cfg = method_config(PARAMS, name, preset)
    except ConfigError as e:
        return f"its settings do not fit the {preset} preset ({e})"
    same_pretraining = (not get_method(full).uses_pretraining
                        or pretrain_settings(PARAMS, name, preset)[1] == pretrain_settings(PARAMS, full, preset)[1])
    if cfg == method_config(PARAMS, full, preset) and same_pretraining:
        return f"it sets what {full}'s {preset} preset already has (a sensitivity point at the full model)"
    idx = torch.arange(8)  # small (~50 variants), but enough for SFTTR's partners (2 neighbours + 4 outliers)
    try:
        model, out, terms = _outputs(name, ds, tmp_path, idx)
    except ConfigError as e:  # e.g. a GAM layer deeper than the tiny encoders of the embedded preset
        return f"its model cannot be built on the {preset} preset ({e})"
    assert torch.isfinite(out["pred"]).all()
    assert terms and all(torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name} on {dataset}: parameters without gradient: {missing[:10]}"
    shapes = lambda m: {k: tuple(p.shape) for k, p in m.named_parameters()}  # noqa: E731
    if (full, dataset) not in _FULL:
        base, base_out, base_terms = _outputs(full, ds, tmp_path, idx)
        _FULL[(full, dataset)] = (shapes(base), base_out, {k: t.detach() for k, t in base_terms.items()})
    base_shapes, base_out, base_terms = _FULL[(full, dataset)]
    return (shapes(model) != base_shapes or not torch.allclose(out["pred"], base_out["pred"])
            or set(terms) != set(base_terms) or any(not torch.allclose(terms[k], base_terms[k]) for k in terms)
            or not same_pretraining)


@pytest.mark.parametrize("name,datasets", CASES, ids=[c[0] for c in CASES])
def test_variant_forward_backward_and_differs_from_its_full_model(name, datasets, small_data, tmp_path):
    why = []
    for d in datasets:
        r = _differs(name, d, small_data, tmp_path / d)
        if r is True:
            return
        why.append(f"{d}: " + (r or "same parameters, predictions and losses as the full model"))
    if all(isinstance(w, str) and "same parameters" not in w for w in why):
        pytest.skip(f"{name} does not apply to the embedded data: {'; '.join(why)}")
    raise AssertionError(f"{name}: its settings do nothing on the embedded data ({'; '.join(why)})")
