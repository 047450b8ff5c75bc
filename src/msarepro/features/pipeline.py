"""Raw-media folder -> canonical trimodal dataset (the features stage: `msarepro data extract RAW --out DIR`).

Per clip: text features and token ids from the transcript, audio frames from audio/<id>.*, vision frames from
openface/<id>.csv (or video/<id>.* for MediaPipe). Sequences are padded to the longest clip (or cut at the given
maximum lengths), true lengths kept. Each extractor caches per item (`cache`, default RAW/.features-cache), so an
interrupted run resumes. Returns the manifest and the measured throughput (items/s per extractor), which is
printed by the CLI and kept out of the dataset files so that the dataset's bytes do not depend on timing.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data.format import DatasetError, Manifest, tokenizer_special_ids, write_dataset
from .audio import AUDIO_EXTRACTORS, run_per_item
from .media import read_media
from .vision import VISION_EXTRACTORS

AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")


def _find(folder: Path, item: str, exts: tuple[str, ...], what: str) -> Path:
    for e in exts:
        p = folder / f"{item}{e}"
        if p.exists():
            return p
    raise DatasetError(f"{folder}/{item}{{{','.join(exts)}}}: no {what} file for clip {item!r}")


def _pad(seqs: list[np.ndarray], max_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    lens = np.array([min(len(s), max_len or len(s)) for s in seqs], np.int64)
    L = int(lens.max())
    out = np.zeros((len(seqs), L) + seqs[0].shape[1:], seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, :lens[i]] = s[:lens[i]]
    return out, np.maximum(lens, 1)


def extract(raw: str | Path, out: str | Path, text: str = "packaged-minilm", audio: str = "librosa",
            vision: str = "openface", cache: str | Path | None = None, batch_size: int = 32, text_max_len: int = 50,
            audio_max_len: int | None = None, vision_max_len: int | None = None,
            name: str | None = None, sources: dict[str, str] | None = None,
            device: str = "cpu") -> tuple[Manifest, dict[str, float]]:
    raw = Path(raw)
    info, labels = read_media(raw)
    cache = Path(cache) if cache is not None else raw / ".features-cache"
    ids = labels["id"].astype(str).tolist()
    per_item: dict[str, dict[str, np.ndarray]] = {}
    speed: dict[str, float] = {}
    configs: dict[str, dict] = {}

    from .text import TextEncoder
    enc = TextEncoder(text, max_len=text_max_len, batch_size=batch_size, device=device)
    t0 = time.perf_counter()
    tx = enc.extract(list(zip(ids, labels["text"].fillna("").tolist())), cache)
    speed[f"text:{text}"] = len(ids) / max(time.perf_counter() - t0, 1e-9)
    per_item["text_ids"] = {i: v[0] for i, v in tx.items()}
    per_item["text"] = {i: v[1] for i, v in tx.items()}
    configs["text"] = {**enc.config(), "dim": enc.dim}
    if audio != "none":
        ex = AUDIO_EXTRACTORS[audio]()
        t0 = time.perf_counter()
        per_item["audio"] = run_per_item(ex, [(i, _find(raw / "audio", i, AUDIO_EXTS, "audio")) for i in ids],
                                         cache, f"audio ({audio})")
        speed[f"audio:{audio}"] = len(ids) / max(time.perf_counter() - t0, 1e-9)
        configs["audio"] = ex.config()
    if vision != "none":
        ex = VISION_EXTRACTORS[vision]()
        folder, exts = (raw / "openface", (".csv",)) if vision == "openface" else (raw / "video", VIDEO_EXTS)
        t0 = time.perf_counter()
        per_item["vision"] = run_per_item(ex, [(i, _find(folder, i, exts, vision)) for i in ids], cache,
                                          f"vision ({vision})")
        speed[f"vision:{vision}"] = len(ids) / max(time.perf_counter() - t0, 1e-9)
        configs["vision"] = ex.config()
    missing = [m for m in ("audio", "vision") if m not in per_item]
    if missing:
        raise DatasetError(f"a trimodal dataset needs audio and vision features; --{missing[0]} none was given")

    caps = {"text": text_max_len, "text_ids": text_max_len, "audio": audio_max_len, "vision": vision_max_len}
    splits = [s for s in ("train", "valid", "test", "unlabeled") if (labels["split"] == s).any()]
    full = {m: _pad([per_item[m][i] for i in ids], caps[m]) for m in per_item}
    arrays = {}
    for s in splits:
        idx = np.flatnonzero(labels["split"].to_numpy() == s)
        arrays[s] = {}
        for m, (a, lens) in full.items():
            arrays[s][m], arrays[s][f"{m}_lengths"] = a[idx], lens[idx]
    family = info.get("metric_family", "sims")
    unimodal = all(c in labels.columns for c in ("T", "A", "V"))
    modalities = {m: {"dim": int(full[m][0].shape[2]), "max_len": int(full[m][0].shape[1])}
                  for m in ("text", "audio", "vision")}
    modalities["text_ids"] = {"vocab_size": enc.vocab_size, "max_len": int(full["text_ids"][0].shape[1]),
                              "tokenizer": text, "special_ids": tokenizer_special_ids(enc.tokenizer)}
    table = labels[["split", "id", "M"] + (["T", "A", "V"] if unimodal else []) + ["text"]]
    manifest = Manifest(
        name=name or info.get("name", raw.name), family="trimodal", task="regression", metric_family=family,
        label_range=tuple(info.get("label_range", (-1, 1) if family == "sims" else (-3, 3))),
        modalities=modalities, splits={s: int((labels["split"] == s).sum()) for s in splits},
        unimodal_labels=unimodal, preset=name or info.get("name", raw.name),
        provenance={"extractor": "msarepro.features.pipeline.extract", "raw": info, "features": configs,
                    **({"sources": sources} if sources else {})})
    return write_dataset(out, manifest, arrays, table), speed
