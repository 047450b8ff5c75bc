"""params.yaml -> typed config: overrides in DVC's syntax, and errors that name the offending key."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import yaml

from msarepro import config
from msarepro.cli import main
from msarepro.config import ConfigError
from msarepro.data import load_dataset
from msarepro.methods import build_method, load_params, method_config, validate_params

from .conftest import ROOT


def raw():
    return config.load_raw(ROOT / "params.yaml")


def full(overrides=(), r=None) -> config.Params:
    """Load the way every command does: config's sections, then the method blocks (methods layer)."""
    return validate_params(config.from_dict(config.apply_overrides(r if r is not None else raw(), list(overrides))))


def test_params_yaml_loads_and_is_frozen(params):
    cfg = method_config(params, "mult", "synth-mosi")
    assert cfg.dim == 30 and cfg.lr == pytest.approx(1e-3)
    with pytest.raises(Exception):
        cfg.lr = 1.0  # frozen


def test_preset_overrides_block(params):
    assert method_config(params, "mult", "mosi").dim == 50
    assert method_config(params, "mult", "mosei").batch_size == 4
    assert method_config(params, "mult", "unknown-preset").dim == 30


def test_overrides_dvc_syntax():
    p = full(["methods.mult.lr=1e-3", "seed=7", "methods.mult.dim=12", "methods.mult.heads=4", "model=tfn",
              "sweep.seeds=[1, 2]"])
    assert p.seed == 7 and p.model == "tfn" and p.sweep.seeds == (1, 2)
    c = method_config(p, "mult", "synth-mosi")
    assert c.lr == 1e-3 and isinstance(c.lr, float) and c.dim == 12


@pytest.mark.parametrize("override,match", [
    ("train.max_epochs=5", r"no key 'train'"),
    ("data.rooot=x", r"no key 'data.rooot'"),
    ("seed", r"malformed override 'seed': expected KEY=VALUE, e.g. -S methods.mult.lr=1e-3"),
    ("a..b=1", r"malformed override"),
    ("methods.mult.lr=[1", r"not valid YAML"),
])
def test_bad_override_names_key(override, match):
    with pytest.raises(ConfigError, match=match):
        config.apply_overrides(raw(), [override])


@pytest.mark.parametrize("override,match", [
    ("methods.mult.dimm=3", r"unknown key\(s\) methods.mult.dimm"),
    ("methods.mult.dim=three", r"methods.mult.dim: expected an integer"),
    ("methods.mult.lr=fast", r"methods.mult.lr: expected a number"),
    ("methods.mult.presets.mosi.heads=x", r"methods.mult.presets.mosi.heads: expected an integer"),
    ("model=nope", r"model: unknown method 'nope'; registered methods: .*mult"),
    ("sweep.methods=[mult, nope]", r"sweep.methods: unknown method 'nope'"),
    ("data.verify_hashes=maybe", r"data.verify_hashes: expected true or false"),
])
def test_bad_value_names_key(override, match):
    with pytest.raises(ConfigError, match=match):
        full([override])


def test_unknown_method_section():
    r = raw()
    r["methods"]["mulT"] = {}
    with pytest.raises(ConfigError, match=r"methods.mulT: not a registered method"):
        full(r=r)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


# ------------------------------------------------------------------ every section typed, the whole file checked

def _with(path: list[str], value):
    r = raw()
    node = r
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value
    return r


@pytest.mark.parametrize("path,match", [
    (["trian"], r"unknown top-level key\(s\) trian; known: model, dataset, seed, data, sweep, pipeline"),
    (["evaluate", "ci_levle"], r"unknown key\(s\) evaluate.ci_levle; known keys under evaluate: "
                               r"bootstrap_resamples, bootstrap_seed, ci_level"),
    (["pipeline", "pretrain_sed"], r"unknown key\(s\) pipeline.pretrain_sed; known keys under pipeline: datasets"),
    (["regression", "tolerence"], r"unknown key\(s\) regression.tolerence; known keys under regression: .*tolerance"),
    (["pretrain", "epoch"], r"unknown key\(s\) pretrain.epoch; known keys under pretrain: .*epochs"),
    (["pretrain", "presets", "synth-mosi", "epoch"], r"unknown key\(s\) pretrain.presets.synth-mosi.epoch"),
])
def test_unknown_key_in_any_section_is_rejected_at_load(path, match, tmp_path):
    """A typo anywhere in params.yaml fails when the file is loaded, naming the key and listing the known ones
    (before: `evaluate:` and the top level were never checked, the others only by the command reading them)."""
    with pytest.raises(ConfigError, match=match):
        config.from_dict(_with(path, 1))
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(_with(path, 1)))
    with pytest.raises(ConfigError, match=match):
        load_params(f)


@pytest.mark.parametrize("path,value,match", [
    (["evaluate", "ci_level"], 95, r"evaluate.ci_level: 95.0; expected a level in \(0, 1\)"),
    (["evaluate", "bootstrap_resamples"], "many", r"evaluate.bootstrap_resamples: expected an integer"),
    (["pipeline", "datasets"], "synth-mosi", r"pipeline.datasets: expected a list"),
    (["regression", "tolerance", "MAEE"], 0.1, r"regression.tolerance.MAEE: 'MAEE'; expected one of default, "),
    (["regression", "scale"], "small", r"regression.scale: expected a number"),
    (["pretrain", "presets", "synth-sims", "tamper_p"], 2, r"pretrain.presets.synth-sims.tamper_p: 2.0"),
])
def test_ill_typed_section_values_are_rejected_at_load(path, value, match):
    with pytest.raises(ConfigError, match=match):
        config.from_dict(_with(path, value))


def test_sections_are_typed(params):
    assert params.evaluate == config.EvaluateConfig(0.95, 10000, 0)
    assert params.pipeline.datasets == ("synth-mosi", "synth-sims", "synth-mvsa")
    assert params.regression.seeds == (1111,) and params.regression.tolerance["MAE"] == 0.05
    assert params.pretrain.resolve("synth-mosi").epochs == 15 and params.pretrain.resolve("mosi").epochs == 500


@pytest.mark.parametrize("override,match", [
    ("methods.mult.optimizer=sgd", r"methods.mult.optimizer: 'sgd'; expected one of adam, adamw"),
    ("methods.almt.scheduler=step", r"methods.almt.scheduler: 'step'; expected one of none, cosine, linear, plateau"),
    ("methods.tfn.task_loss=huber", r"methods.tfn.task_loss: 'huber'; expected one of auto, mse, l1, ce"),
    ("methods.sfttr.presets.mosi.select_metric=Acc_2", r"methods.sfttr.presets.mosi.select_metric: 'Acc_2'; "
                                                       r"expected one of loss, .*Has0_acc_2"),
    ("methods.aemt.heads=7", r"methods.aemt.dim \(30\) must be a positive multiple of methods.aemt.heads \(7\)"),
    ("methods.mult.conv_kernel=2", r"methods.mult.conv_kernel: 2; expected an odd number"),
])
def test_method_choice_fields_are_checked_at_load(override, match):
    """MethodConfig's choice fields are checked when params.yaml is loaded, not when training reaches them; a
    mistake in AE-MT's MulT fields names methods.aemt (MulT's Config is its base)."""
    with pytest.raises(ConfigError, match=match):
        load_params(ROOT / "params.yaml", [override])


def test_config_module_imports_no_methods():
    """config.py is the ground floor: importing it (and loading params.yaml) loads nothing of the registry."""
    code = ("import sys, msarepro.config as c; c.load(sys.argv[1]); "
            "bad = [m for m in sys.modules if m.startswith('msarepro.methods')]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "params.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------ mistakes that reach the model: one line

def test_cli_names_the_configured_method_in_one_line(tmp_path, capsys):
    """AE-MT's heads that do not divide its width: one line naming methods.aemt (not MulT, whose code it
    reuses), no traceback."""
    rc = main(["train", "--model", "aemt", "--dataset", "synth-mosi", "--out", str(tmp_path / "r"),
               "--params", str(ROOT / "params.yaml"), "--no-progress", "-S", "methods.aemt.presets.synth-mosi.heads=7",
               "-S", "methods.aemt.pretrained=''", "-S", f"data.root={tmp_path / 'data'}",
               "-S", "data.synth_scale=0.15"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "methods.aemt.presets.synth-mosi.heads" in err, err
    assert "methods.mult" not in err
    assert not (tmp_path / "r").exists()


def test_model_build_mistakes_are_config_errors_naming_the_key(params, small_data):
    """What only the dataset reveals (a text encoder on a dataset without token ids, a classification loss on a
    regression dataset) is a ConfigError naming methods.<method>.<field>, raised when the model is built."""
    mosi = load_dataset(small_data["synth-mosi"]).manifest
    features_only = replace(mosi, modalities={k: v for k, v in mosi.modalities.items() if k != "text_ids"})
    aemt = method_config(params, "aemt", "synth-mosi")
    with pytest.raises(ConfigError, match=r"methods.aemt.text_encoder: 'tiny-bert' reads token ids"):
        build_method("aemt", replace(aemt, text_encoder="tiny-bert"), features_only)
    with pytest.raises(ConfigError, match=r"methods.aemt.dim \(30\) must be divisible by methods.aemt.heads"):
        build_method("aemt", replace(aemt, dim=30, heads=7), mosi)
    tfn = method_config(params, "tfn", "synth-mosi")
    with pytest.raises(ConfigError, match=r"methods.tfn.task_loss: 'ce' does not fit dataset 'synth-mosi'"):
        build_method("tfn", replace(tfn, task_loss="ce"), mosi)


def test_a_size_the_model_rejects_is_one_line_naming_the_method(tmp_path, capsys):
    """A head count that does not divide a width, in a method without its own check (text-only's hidden 64,
    heads 5): torch's AssertionError becomes one line naming methods.text_only, before any training."""
    rc = main(["train", "--model", "text_only", "--dataset", "synth-mosi", "--out", str(tmp_path / "r"),
               "--params", str(ROOT / "params.yaml"), "--no-progress", "-S", "methods.text_only.heads=5",
               "-S", f"data.root={tmp_path / 'data'}", "-S", "data.synth_scale=0.15"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "methods.text_only: the model cannot be built" in err and "synth-mosi" in err, err
