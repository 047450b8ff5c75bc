"""Audio features per frame from a WAV (or any file librosa / openSMILE can read).

librosa, CH-SIMS's recipe (docs/datasets.md): load at 22050 Hz mono; per frame (hop 512, about 23 ms)
    20 MFCC (htk mel scale) + zero-crossing rate (1) + chroma CQT (12) = 33-d        -> (T, 33) float32
openSMILE eGeMAPSv02 low-level descriptors (the `opensmile` wheel ships its library): 25-d per 10 ms frame
    (loudness, pitch, jitter, shimmer, formants, spectral slopes, ...)              -> (T, 25) float32
Both return at least one frame; an unreadable file is an error naming it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from . import require
from ..runtime import progress
from .cache import ItemCache


class LibrosaAudio:
    name = "librosa"
    dim = 33

    def __init__(self, sample_rate: int = 22050, n_mfcc: int = 20, hop_length: int = 512):
        self.librosa = require("librosa", "pip install 'librosa>=0.10'", "librosa audio")
        self.sr, self.n_mfcc, self.hop = sample_rate, n_mfcc, hop_length

    def config(self) -> dict:
        return {"extractor": self.name, "sr": self.sr, "n_mfcc": self.n_mfcc, "hop": self.hop, "htk": True}

    def __call__(self, path: str | Path) -> np.ndarray:
        lr = self.librosa
        try:
            y, sr = lr.load(str(path), sr=self.sr, mono=True)
        except Exception as e:  # soundfile / audioread raise various types
            raise ValueError(f"{path}: cannot read audio ({type(e).__name__}: {e})") from None
        if len(y) < self.hop:
            y = np.pad(y, (0, self.hop - len(y)))
        with warnings.catch_warnings():  # chroma_cqt warns that its low octaves' n_fft exceeds a short clip
            warnings.simplefilter("ignore", UserWarning)
            return self._features(y, sr)

    def _features(self, y: np.ndarray, sr: int) -> np.ndarray:
        lr = self.librosa
        mfcc = lr.feature.mfcc(y=y, sr=sr, n_mfcc=self.n_mfcc, htk=True, hop_length=self.hop)  # (20, T)
        zcr = lr.feature.zero_crossing_rate(y, hop_length=self.hop)  # (1, T)
        chroma = lr.feature.chroma_cqt(y=y, sr=sr, hop_length=self.hop)  # (12, T)
        t = min(mfcc.shape[1], zcr.shape[1], chroma.shape[1])
        return np.concatenate([mfcc[:, :t], zcr[:, :t], chroma[:, :t]], 0).T.astype(np.float32)


class OpenSmileAudio:
    name = "opensmile"
    dim = 25

    def __init__(self):
        smile = require("opensmile", "pip install 'opensmile>=2.5'", "openSMILE audio")
        self.smile = smile.Smile(feature_set=smile.FeatureSet.eGeMAPSv02,
                                 feature_level=smile.FeatureLevel.LowLevelDescriptors)

    def config(self) -> dict:
        return {"extractor": self.name, "feature_set": "eGeMAPSv02", "level": "LowLevelDescriptors"}

    def __call__(self, path: str | Path) -> np.ndarray:
        try:
            df = self.smile.process_file(str(path))
        except Exception as e:
            raise ValueError(f"{path}: openSMILE could not process it ({type(e).__name__}: {e})") from None
        x = df.to_numpy(dtype=np.float32)
        return x if len(x) else np.zeros((1, self.dim), np.float32)


AUDIO_EXTRACTORS = {"librosa": LibrosaAudio, "opensmile": OpenSmileAudio}


def run_per_item(extractor, items: list[tuple[str, Path]], cache_root, desc: str) -> dict[str, np.ndarray]:
    """Apply a per-file extractor to (id, path) pairs with a per-item cache and a progress bar."""
    cache = ItemCache(cache_root, extractor.name, extractor.config())
    out = {}
    for item, path in progress(items, desc, total=len(items)):
        x = cache.get(item)
        if x is None:
            x = extractor(path)
            cache.put(item, x)
        out[item] = x
    return out
