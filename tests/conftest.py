"""Shared fixtures: small embedded datasets (generated once per session) and test params."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MSAREPRO_PROGRESS", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SMALL_SCALE = 0.15  # train/valid/test of about 135/30/45 samples (image-text: 180/30/45)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> dict[str, Path]:
    """name -> directory of a small embedded dataset (every registered synthetic generator)."""
    from msarepro.data.synth import GENERATORS, generate

    root = tmp_path_factory.mktemp("data")
    return {name: (generate(name, root / name, seed=0, scale=SMALL_SCALE), root / name)[1] for name in GENERATORS}


@pytest.fixture(scope="session")
def params():
    """The repository's params.yaml, validated."""
    from msarepro.methods import load_params
    return load_params(ROOT / "params.yaml")


def pretrain_params(data_root, epochs: int, *overrides):
    """params.yaml with data under `data_root` and the embedded datasets' pretraining capped at `epochs`."""
    from msarepro import config

    raw = config.load_raw(ROOT / "params.yaml")
    over = [f"data.root={data_root}", f"pretrain.presets.synth-sims.epochs={epochs}",
            f"pretrain.presets.synth-mosi.epochs={epochs}", *overrides]
    return config.from_dict(config.apply_overrides(raw, over))


def fast_params(max_epochs: int = 2, **extra):
    """params.yaml with every method capped at `max_epochs` (and no early stop), for quick real runs."""
    from msarepro import config
    from msarepro.methods import all_methods, validate_params

    raw = config.load_raw(ROOT / "params.yaml")
    overrides = []
    for m in all_methods():
        overrides += [f"methods.{m}.max_epochs={max_epochs}", f"methods.{m}.patience={max_epochs + 1}"]
        presets = (raw.get("methods", {}).get(m) or {}).get("presets") or {}
        for p, block in presets.items():
            if block and "max_epochs" in block:
                overrides.append(f"methods.{m}.presets.{p}.max_epochs={max_epochs}")
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return validate_params(config.from_dict(config.apply_overrides(raw, overrides)))
