"""The download stage for one dataset name: generate an embedded dataset, make the raw-media one through the
feature extractors, or obtain, verify and import a real one. It sits above data/ and features/ (it needs both),
so that data/ never imports features/.

Commands the DVC stages call (exact arguments):

    msarepro data download NAME --out data/NAME [--raw DIR] [--retries N] [--params params.yaml] [-S KEY=VALUE]
        NAME an embedded dataset (synth-mosi, synth-sims, synth-mvsa): generate it in --out with params.yaml's
             data.synth_seed and data.synth_scale.
        NAME synth-media: the embedded raw-media default (sentences, WAV audio, OpenFace CSVs) is written to the
             raw folder (default data/raw/synth-media) and pushed through the real extractors (MiniLM text,
             librosa audio, OpenFace vision; per-item cache in the raw folder) into a trimodal dataset in --out.
        NAME raw-media: only write the embedded raw media, in --out (for `msarepro data extract`).
        NAME a real dataset (mosi, mosei, sims, simsv2, mvsa-single, mvsa-multiple, hfm, tumemo): if --out already
             holds an import of the same verified source files, do nothing; else obtain every source file in the
             raw folder (default data/raw/NAME, beside --out): the Hugging Face mirror or a plain URL (resumed,
             retried with backoff, SHA-256 checked, renamed into place only once verified), or, for files that
             only a person can fetch (Google Drive / Baidu / author sites), stop with exit status 2 and the
             placement message: which file, from where, where to put it, which hash it must have. Then import.
        Network use is skipped (placement message at once) when HF_HUB_OFFLINE=1 or MSAREPRO_OFFLINE=1.

    msarepro data extract RAW --out DIR [--text MODEL] [--audio librosa|opensmile|none]
                                        [--vision openface|mediapipe|none] [--batch-size N] [--cache DIR]
        (see msarepro.features.pipeline) raw media folder -> canonical trimodal dataset, per-item cache.

Pieces: data/fetch.py (resumable download with backoff, SHA-256 verification), data/stamps.py (hash stamps),
data/placement.py (the placement message), data/acquire.py (a real dataset's files -> import).
"""
from __future__ import annotations

import json
from pathlib import Path

from .data.acquire import acquire, staged_dir, up_to_date
from .data.fetch import Fetcher
from .data.placement import raw_dir_for
from .data.registry import DATASETS
from .data.synth import generate
from .features.media import write_raw_media
from .features.pipeline import extract
from .io import sha256_file

__all__ = ["Fetcher", "download"]


def download(name: str, out: str | Path, raw: str | Path | None = None, fetcher: Fetcher | None = None,
             endpoint: str | None = None, synth_seed: int = 0, synth_scale: float = 1.0, **import_kw) -> str:
    """The download stage for one dataset name; returns a one-line summary of what was done."""
    out = Path(out)
    if name == "raw-media":
        write_raw_media(out, seed=synth_seed)
        return f"wrote the embedded raw media in {out}"
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}, or raw-media")
    info = DATASETS[name]
    if info.source == "media":
        return _synth_media(out, Path(raw) if raw is not None else raw_dir_for(out, name), synth_seed)
    if info.source in ("synth", "synth-like"):  # synth_scale: the embedded sets only (synth_like.py's sizes)
        m = generate(name, out, seed=synth_seed, scale=synth_scale if info.source == "synth" else None)
        return f"generated {name} in {out}: {m.splits}"
    return acquire(info, out, Path(raw) if raw is not None else raw_dir_for(out, name), fetcher, endpoint,
                   **import_kw)


def _synth_media(out: Path, raw: Path, seed: int) -> str:
    """The embedded raw media through the real extractors; nothing to do when `out` was made from the same."""
    stamp = raw / "media.json"
    if not (stamp.exists() and json.loads(stamp.read_text()).get("seed") == seed):
        write_raw_media(raw, seed=seed)
    if up_to_date(out, {"media.json": sha256_file(stamp), "labels.csv": sha256_file(raw / "labels.csv")}):
        return f"{out} is up to date (same raw media)"
    with staged_dir(out) as stage:
        m, speed = extract(raw, stage, name="synth-media", cache=raw / ".features-cache",
                           sources={"media.json": sha256_file(stamp), "labels.csv": sha256_file(raw / "labels.csv")})
    return (f"extracted the embedded raw media into {out}: {m.splits}; items/s: "
            + ", ".join(f"{k}={v:.1f}" for k, v in speed.items()))
