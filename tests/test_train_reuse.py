"""The train stage reuses the sweep's run when it is exactly the same run (`msarepro train --reuse-from`)."""
from __future__ import annotations

import json

import yaml

from msarepro import config, sweep
from msarepro.cli import main

from .conftest import ROOT

FILES = (*sweep.RUN_FILES, "epochs/ids.json")


def _params_file(tmp_path, **methods_over):
    raw = config.load_raw(ROOT / "params.yaml")
    raw["model"], raw["dataset"], raw["seed"] = "text_only", "synth-mosi", 1111
    raw["data"].update(root=str(tmp_path / "data"), synth_scale=0.1)
    raw["ablations"] = {"variants": [], "datasets": [], "seeds": [1111]}
    raw["methods"]["text_only"].update(max_epochs=2, **methods_over)
    f = tmp_path / f"params-{len(methods_over)}.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f


def _sweep_run(tmp_path, pfile):
    """Train text_only/synth-mosi/1111 as a sweep job would: its run dir and its fingerprint.json."""
    root = tmp_path / "sweep"
    job = sweep.Job("text_only", "synth-mosi", 1111)
    assert main(["train", "--model", job.method, "--dataset", job.dataset, "--seed", "1111", "--out",
                 str(job.run_dir(root)), "--params", str(pfile), "--no-progress"]) == 0
    from msarepro.methods import load_params
    (job.run_dir(root) / "fingerprint.json").write_text(json.dumps(sweep.fingerprint(load_params(pfile), job)))
    return root, job


def _no_training(*args, **kwargs):
    raise AssertionError("the train stage retrained a run the sweep already has")


def test_the_same_run_is_copied_byte_for_byte_and_not_retrained(tmp_path, monkeypatch):
    pfile = _params_file(tmp_path)
    root, job = _sweep_run(tmp_path, pfile)
    import msarepro.train
    monkeypatch.setattr(msarepro.train, "run", _no_training)
    out = tmp_path / "train"
    assert main(["train", "--out", str(out), "--params", str(pfile), "--no-progress", "--reuse-from", str(root)]) == 0
    for f in FILES:
        assert (out / f).read_bytes() == (job.run_dir(root) / f).read_bytes(), f
    assert sorted(p.name for p in (out / "epochs").iterdir()) == sorted(p.name for p in (job.run_dir(root) / "epochs").iterdir())


def test_another_setting_device_or_a_missing_fingerprint_trains(tmp_path):
    pfile = _params_file(tmp_path)
    root, job = _sweep_run(tmp_path, pfile)
    from msarepro.methods import load_params
    p = load_params(pfile)
    assert sweep.reusable_run(p, job, "cpu", root) == job.run_dir(root)
    assert sweep.reusable_run(load_params(_params_file(tmp_path, lr=0.002)), job, "cpu", root) is None  # other lr
    assert sweep.reusable_run(p, sweep.Job("text_only", "synth-mosi", 1112), "cpu", root) is None  # other seed
    assert sweep.reusable_run(p, job, "cuda", root) is None  # trained on a CPU, asked on a GPU
    (job.run_dir(root) / "fingerprint.json").unlink()
    assert sweep.reusable_run(p, job, "cpu", root) is None
    # and the command then trains: a real run, with the same bytes as the sweep's
    out = tmp_path / "train"
    assert main(["train", "--out", str(out), "--params", str(pfile), "--no-progress", "--reuse-from", str(root)]) == 0
    assert (out / "metrics.json").read_bytes() == (job.run_dir(root) / "metrics.json").read_bytes()
    assert json.loads((out / "timing.json").read_text())["device"] == "cpu"
