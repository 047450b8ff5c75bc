"""Every registered method, on every dataset family it handles: forward, backward, every trainable parameter
gets a finite gradient, output shape and dtype right, no NaN. New methods need no new test code here."""
from __future__ import annotations

import pytest
import torch

from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import all_methods, build_method, method_config
from msarepro.train import provide_inputs

FAMILY_DATASETS = {"trimodal": ["synth-mosi", "synth-sims"], "image_text": ["synth-mvsa"]}
CASES = [(m, d) for m, cls in sorted(all_methods().items()) for f in cls.families for d in FAMILY_DATASETS[f]]


@pytest.mark.parametrize("method,dataset", CASES, ids=[f"{m}-{d}" for m, d in CASES])
def test_forward_backward_gradients(method, dataset, small_data, params, tmp_path):
    torch.manual_seed(0)
    ds = load_dataset(small_data[dataset])
    cfg = method_config(params, method, ds.manifest.preset)
    provide_inputs(method, cfg, ds, tmp_path)  # the token ids the method asks for, as training does
    model = build_method(method, cfg, ds.manifest)
    train = to_tensors(ds)["train"]
    model.on_epoch_start(0, train)
    model.train()
    batch = train.batch(torch.arange(16))
    out = model(batch)
    pred = out["pred"]
    if ds.manifest.task == "classification":
        assert pred.shape == (16, ds.manifest.num_classes)
    else:
        assert pred.shape == (16,)
    assert pred.dtype == torch.float32
    assert torch.isfinite(pred).all()
    terms = model.losses(out, batch, 0)
    assert terms and all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:10]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:10]}"
    model.eval()
    with torch.no_grad():
        p1 = model(batch)["pred"]
        p2 = model(batch)["pred"]
    assert torch.equal(p1, p2), "eval mode must be deterministic"


def test_registry_names_are_the_only_list(params):
    from msarepro.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    model_action = next(a for a in train._actions if a.dest == "model")
    assert model_action.choices is None  # methods and variants are checked against the registry and params.yaml
    assert all(m in model_action.help for m in all_methods())
    assert set(params.methods) <= set(all_methods())
