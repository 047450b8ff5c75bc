"""Datasets on first use: generate an embedded or synthetic-like set, or say where a real one must be placed.

Kept apart from registry.py, which the generators themselves read (synth_like derives its specs from DATASETS),
so that the registry imports no generator and the package has no import cycle.
"""
from __future__ import annotations

from pathlib import Path

from .registry import DATASETS, dataset_dir


def ensure_dataset(name_or_path: str, data_root: str | Path, synth_seed: int = 0, synth_scale: float = 1.0) -> Path:
    """Return the dataset's directory, generating an embedded or synthetic-like dataset on first use (synth_scale
    applies to the embedded sets; a synthetic-like set is written at its default size)."""
    d = dataset_dir(name_or_path, data_root)
    if not (d / "manifest.json").exists():
        info = DATASETS[name_or_path]
        if info.source in ("synth", "synth-like"):
            from .synth import generate
            generate(info.name, d, seed=synth_seed, scale=synth_scale if info.source == "synth" else None)
        else:
            from .placement import placement_message
            raise FileNotFoundError(placement_message(info, d))
    return d
