"""The `msarepro` command: listing, generation, and clear errors for bad names and overrides."""
from __future__ import annotations

import json

import pytest

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


def test_unknown_method_is_rejected_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "nope", "--out", str(tmp_path / "r"), *P])
    assert e.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


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
