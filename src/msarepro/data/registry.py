"""The dataset registry: every dataset msarepro knows by name. Other lists of dataset names derive from it.

Embedded datasets are generated (deterministically) when first asked for; real datasets are downloaded or
imported by the `download` stage and live under the data root as canonical directories.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    family: str  # "trimodal" | "image_text"
    metric_family: str  # "mosi" | "sims" | "cls"
    source: str  # "synth" for the embedded generators; real datasets name their download source
    description: str = ""
    extra: dict = field(default_factory=dict)


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    if info.name in DATASETS:
        raise ValueError(f"dataset {info.name!r} registered twice")
    DATASETS[info.name] = info
    return info


register_dataset(DatasetInfo("synth-mosi", "trimodal", "mosi", "synth",
                             "MOSI-like trimodal regression, labels in [-3, 3] on a 0.2 grid"))
register_dataset(DatasetInfo("synth-sims", "trimodal", "sims", "synth",
                             "CH-SIMS-like, labels in [-1, 1], unimodal labels T/A/V, unlabeled pool"))
register_dataset(DatasetInfo("synth-mvsa", "image_text", "cls", "synth",
                             "MVSA-like image-text classification, 3 classes"))


def dataset_dir(name_or_path: str, data_root: str | Path) -> Path:
    """Directory of a dataset given by registered name (under data_root) or by a path to a canonical directory."""
    p = Path(name_or_path)
    if (p / "manifest.json").exists():
        return p
    if name_or_path in DATASETS:
        return Path(data_root) / name_or_path
    raise KeyError(f"unknown dataset {name_or_path!r}: not a registered name ({', '.join(sorted(DATASETS))}) "
                   f"and not a directory with a manifest.json")


def ensure_dataset(name_or_path: str, data_root: str | Path, synth_seed: int = 0, synth_scale: float = 1.0) -> Path:
    """Return the dataset's directory, generating an embedded dataset on first use."""
    d = dataset_dir(name_or_path, data_root)
    if not (d / "manifest.json").exists():
        info = DATASETS[name_or_path]
        if info.source == "synth":
            from .synth import generate
            generate(info.name, d, seed=synth_seed, scale=synth_scale)
        else:
            from .download import placement_message  # filled in by the real-data sources
            raise FileNotFoundError(placement_message(info, d))
    return d
