"""params.yaml -> typed config: overrides in DVC's syntax, and errors that name the offending key."""
from __future__ import annotations

import pytest

from msarepro import config
from msarepro.config import ConfigError

from .conftest import ROOT


def raw():
    return config.load_raw(ROOT / "params.yaml")


def test_params_yaml_loads_and_is_frozen(params):
    cfg = params.method_config("mult", "synth-mosi")
    assert cfg.dim == 30 and cfg.lr == pytest.approx(1e-3)
    with pytest.raises(Exception):
        cfg.lr = 1.0  # frozen


def test_preset_overrides_block(params):
    assert params.method_config("mult", "mosi").dim == 50
    assert params.method_config("mult", "mosei").batch_size == 4
    assert params.method_config("mult", "unknown-preset").dim == 30


def test_overrides_dvc_syntax():
    p = config.from_dict(config.apply_overrides(raw(), ["methods.mult.lr=1e-3", "seed=7", "methods.mult.dim=12",
                                                        "model=tfn", "sweep.seeds=[1, 2]"]))
    assert p.seed == 7 and p.model == "tfn" and p.sweep.seeds == (1, 2)
    c = p.method_config("mult", "synth-mosi")
    assert c.lr == 1e-3 and isinstance(c.lr, float) and c.dim == 12


@pytest.mark.parametrize("override,match", [
    ("train.max_epochs=5", r"no key 'train'"),
    ("data.rooot=x", r"no key 'data.rooot'"),
    ("seed", r"malformed override 'seed': expected KEY=VALUE"),
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
    ("model=nope", r"unknown method 'nope'; registered methods: .*mult"),
    ("sweep.methods=[mult, nope]", r"unknown method 'nope'"),
    ("data.verify_hashes=maybe", r"data.verify_hashes: expected true or false"),
])
def test_bad_value_names_key(override, match):
    with pytest.raises(ConfigError, match=match):
        config.from_dict(config.apply_overrides(raw(), [override]))


def test_unknown_method_section():
    r = raw()
    r["methods"]["mulT"] = {}
    with pytest.raises(ConfigError, match=r"methods.mulT: not a registered method"):
        config.from_dict(r)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "params.yaml")
