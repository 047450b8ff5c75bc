"""Training and evaluation throughput (samples/s) of every registered method on synth-mosi-sized batches
(synth-mvsa for image-text methods): a training step (forward, losses, backward, Adam) on a batch of 32, and a
prediction pass (no_grad, eval mode) over one batch of up to 256 clips (train.predict's batch size; the small test
sets give 135, image-text 180), as the loop predicts VALID and TEST; each records its batch in extra_info. Run with
`pytest tests/benchmarks --benchmark-enable`; figures go to .benchmarks/ with `--benchmark-autosave`. The text-only
baseline is the in-run reference: compare methods by their ratio to it."""
from __future__ import annotations

import pytest
import torch

from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import all_methods, build_method, method_config
from msarepro.train import provide_inputs

BATCH = 32
EVAL_BATCH = 256  # train.predict's batch size
CASES = [(m, "synth-mvsa" if "trimodal" not in cls.families else "synth-mosi") for m, cls in sorted(all_methods().items())]


def _model(method, dataset, small_data, params, tmp_path):
    torch.manual_seed(0)
    ds = load_dataset(small_data[dataset])
    cfg = method_config(params, method, ds.manifest.preset)
    provide_inputs(method, cfg, ds, tmp_path)  # the token ids the method asks for, as training does
    model = build_method(method, cfg, ds.manifest)
    train = to_tensors(ds)["train"]
    model.on_epoch_start(0, train)
    return model, train


@pytest.mark.parametrize("method,dataset", CASES, ids=[m for m, _ in CASES])
def test_train_step_throughput(benchmark, method, dataset, small_data, params, tmp_path):
    model, train = _model(method, dataset, small_data, params, tmp_path)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = train.batch(torch.arange(BATCH))

    def step():
        out = model(batch)
        loss = sum(model.losses(out, batch, 0).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable (the default test run): one plain call
        benchmark.extra_info["samples_per_second"] = BATCH / benchmark.stats.stats.mean
    benchmark.extra_info["dataset"] = dataset
    benchmark.extra_info["batch"] = BATCH


@pytest.mark.parametrize("method,dataset", CASES, ids=[m for m, _ in CASES])
def test_eval_throughput(benchmark, method, dataset, small_data, params, tmp_path):
    model, train = _model(method, dataset, small_data, params, tmp_path)
    model.eval()
    batch = train.batch(torch.arange(min(EVAL_BATCH, len(train))))

    def predict():
        with torch.no_grad():
            return model(batch)["pred"]

    out = benchmark.pedantic(predict, rounds=5, iterations=1, warmup_rounds=1)
    assert torch.isfinite(out).all()
    if benchmark.stats is not None:
        benchmark.extra_info["samples_per_second"] = len(batch["y"]) / benchmark.stats.stats.mean
    benchmark.extra_info["dataset"] = dataset
    benchmark.extra_info["batch"] = len(batch["y"])
