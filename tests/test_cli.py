"""The `msarepro` command: listing, generation, clear errors for bad names and overrides, and the pipeline's
pretrain stage (`msarepro pretrain --stage`)."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from msarepro.cli import main
from msarepro.methods import all_methods

from .conftest import ROOT

P = ["--params", str(ROOT / "params.yaml")]


def test_list_shows_every_registered_method(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in all_methods():
        assert name in out
    assert "synth-mosi" in out


def test_data_synth(tmp_path, capsys):
    assert main(["data", "synth", "synth-mvsa", "--out", str(tmp_path / "mv"), "--scale", "0.05"]) == 0
    man = json.loads((tmp_path / "mv" / "manifest.json").read_text())
    assert man["family"] == "image_text" and "reference" in man["provenance"]


def test_unknown_dataset(tmp_path, capsys):
    assert main(["train", "--model", "tfn", "--dataset", "nope", "--out", str(tmp_path / "r"), *P]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'" in err and "synth-mosi" in err
    assert not (tmp_path / "r").exists()


def test_unknown_method_is_rejected_before_anything_runs(tmp_path, capsys):
    """--model takes a method or a variant (variants live in params.yaml, so argparse cannot list them): an unknown
    name is refused with the registered methods and the variants listed, and no run directory is made."""
    code = main(["train", "--model", "nope", "--out", str(tmp_path / "r"), *P])
    err = capsys.readouterr().err
    assert code != 0 and "unknown method or variant 'nope'" in err and "registered methods: aemt" in err
    assert "variants" in err and "almt-wo-ahl" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("override,msg", [("methods.tfn.lr", "expected KEY=VALUE"),
                                          ("methods.tfn.hidden=3", "unknown key(s) methods.tfn.hidden")])
def test_bad_override(tmp_path, capsys, override, msg):
    assert main(["train", "--model", "tfn", "--dataset", "synth-mosi", "--out", str(tmp_path / "r"), *P,
                 "-S", override]) == 2
    assert msg in capsys.readouterr().err


def test_wrong_family(tmp_path, capsys, small_data):
    assert main(["train", "--model", "tfn", "--dataset", str(small_data["synth-mvsa"]), "--out",
                 str(tmp_path / "r"), *P]) == 2
    assert "handles trimodal datasets" in capsys.readouterr().err


# ------------------------------------------------------------------------- the pipeline's pretrain stage
def _stage_params(tmp_path, model: str, epochs: int = 2) -> list[str]:
    """A params file whose sweep has no AE-MT run; `model` decides whether the train stage needs AE-MT."""
    from msarepro import config

    raw = config.load_raw(ROOT / "params.yaml")
    raw["model"], raw["dataset"] = model, "synth-mosi"
    raw["data"].update(root=str(tmp_path / "data"), synth_scale=0.15)
    raw["sweep"] = {"methods": ["text_only"], "datasets": ["synth-mosi"], "seeds": [1111]}
    raw["ablations"] = {"variants": [], "datasets": [], "seeds": [1111]}  # the default grid has AE-MT's w/o CL
    raw["pipeline"] = {"datasets": ["synth-mosi"], "pretrain_seed": 1111}
    raw["pretrain"]["presets"]["synth-mosi"]["epochs"] = epochs
    f = tmp_path / f"params-{model}-{epochs}.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return ["--params", str(f)]


def test_pretrain_stage_skips_where_no_aemt_run_needs_it(tmp_path, capsys):
    out = tmp_path / "pretrain" / "synth-mosi"
    out.mkdir(parents=True)
    (out / "encoders.pt").write_text("stale")
    assert main(["pretrain", "--stage", "--dataset", "synth-mosi", "--out", str(out), "--no-progress",
                 *_stage_params(tmp_path, "text_only")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["skipped.json"]
    assert json.loads((out / "skipped.json").read_text())["dataset"] == "synth-mosi"
    assert "skipped" in capsys.readouterr().out
    assert not (tmp_path / "data").exists()  # nothing was prepared or trained


def test_pretrain_stage_pretrains_once_and_keeps_up_to_date_encoders(tmp_path, capsys):
    out = tmp_path / "pretrain" / "synth-mosi"
    cmd = ["pretrain", "--stage", "--dataset", "synth-mosi", "--out", str(out), "--no-progress"]
    assert main([*cmd, *_stage_params(tmp_path, "aemt")]) == 0  # the train stage runs AE-MT: pretrain
    (key,) = [d.name for d in out.iterdir()]  # one pretraining: pretrain/<dataset>/<key>/
    enc = out / key / "encoders.pt"
    stamp = enc.stat().st_mtime_ns
    assert json.loads((out / key / "fingerprint.json").read_text())["seed"] == 1111  # pipeline.pretrain_seed
    assert len(pd.read_csv(out / key / "history.csv")) == 2
    capsys.readouterr()
    assert main([*cmd, *_stage_params(tmp_path, "aemt")]) == 0  # same settings: kept
    assert "up to date" in capsys.readouterr().out and enc.stat().st_mtime_ns == stamp
    assert main([*cmd, *_stage_params(tmp_path, "aemt", epochs=3)]) == 0  # a pretraining setting changed: new key
    (key3,) = [d.name for d in out.iterdir()]
    assert key3 != key and len(pd.read_csv(out / key3 / "history.csv")) == 3
    assert main([*cmd, "--seed", "7", *_stage_params(tmp_path, "aemt", epochs=3)]) == 2  # seed: pipeline's
    assert "pipeline.pretrain_seed" in capsys.readouterr().err


def test_sweep_pretrain_is_a_deprecated_alias_of_the_stage(tmp_path, capsys):
    out = tmp_path / "pretrain" / "synth-mosi"
    assert main(["sweep", "--pretrain", "synth-mosi", "--out", str(out), *_stage_params(tmp_path, "text_only")]) == 0
    assert (out / "skipped.json").exists()
    err = capsys.readouterr().err
    assert "deprecated" in err and "msarepro pretrain --stage --dataset synth-mosi" in err


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "msarepro.cli", "list"], capture_output=True, text=True)
    assert r.returncode == 0 and "aemt" in r.stdout
