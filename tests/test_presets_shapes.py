"""Embedded presets on real shapes (issue 17, point 4): `train --preset`, and every trimodal method's embedded
preset building and running on data in MOSI's and CH-SIMS's real feature sizes (synth_like.py)."""
from __future__ import annotations

import json

import pytest

from msarepro.config import ConfigError
from msarepro.train import RunSpec, run

from .conftest import fast_params

LIKE_SCALE = 0.0125  # MOSI-like: 16 / 3 / 9 clips; CH-SIMS-like: 17 / 6 / 6


@pytest.fixture(scope="module")
def like_data(tmp_path_factory) -> dict[str, object]:
    from msarepro.data.synth_like import write_like
    root = tmp_path_factory.mktemp("like")
    return {like: (write_like(like, root / like, seed=0, scale=LIKE_SCALE), root / like)[1] for like in ("mosi", "sims")}


def test_train_preset_flag_resolves_that_preset(tmp_path, like_data):
    """--preset resolves methods.<m>.presets.<NAME> instead of the manifest's (mosi); absent, the manifest's."""
    params = fast_params(1, **{"methods.lf_dnn.presets.synth-mosi.lr": 0.005})
    run(params, RunSpec("lf_dnn", str(like_data["mosi"]), 1, tmp_path / "own", progress=False))
    run(params, RunSpec("lf_dnn", str(like_data["mosi"]), 1, tmp_path / "other", progress=False, preset="synth-mosi"))
    own = json.loads((tmp_path / "own" / "config.json").read_text())
    other = json.loads((tmp_path / "other" / "config.json").read_text())
    assert own["preset"] == "mosi" and other["preset"] == "synth-mosi"
    assert own["method"]["lr"] == 1.0e-3 and other["method"]["lr"] == 0.005
    with pytest.raises(ConfigError, match="no such preset"):
        run(params, RunSpec("lf_dnn", str(like_data["mosi"]), 1, tmp_path / "x", progress=False, preset="synth-mosy"))
