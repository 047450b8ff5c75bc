"""The embedded raw-media default: a small generated set of real media files, and the raw-media folder layout.

Layout (also what `msarepro data extract` reads from a user's own raw data):
    media.json           {"name", "metric_family" (mosi|sims), "label_range", "language", ...}
    labels.csv           split, id, M [, T, A, V], text      (one row per clip; text = the transcript)
    audio/<id>.wav       any format librosa / openSMILE read (wav, flac, ...)
    openface/<id>.csv    OpenFace 2 FeatureExtraction output of the clip's video (for --vision openface)
    video/<id>.mp4       the clip's video (for --vision mediapipe)

The embedded set ("synth-media", 60 clips: 36 train / 12 valid / 12 test, about 4 MB) plants sentiment in every
modality, CH-SIMS style, with unimodal labels in [-1, 1] on a 0.2 grid:
    T: the transcript's sentiment word (positive / neutral / negative adjective, "very" when |T| > 0.6)
    A: the pitch of a voiced tone, f0 = 150 Hz * 2^(0.6 A), 22050 Hz 16-bit mono WAV of 0.6 to 1.2 s, with noise
    V: OpenFace action-unit intensities (AU06/AU12 smile for V > 0, AU04/AU15 frown for V < 0) and mouth-corner
       landmarks, 12 to 24 frames at 30 fps, every one of OpenFace's 714 columns present
    M = (T + A + V) / 3 on the 0.2 grid.
It is deterministic in the seed, so the features stage is reproducible on every fresh clone.
"""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, write_json
from .vision import OPENFACE_COLUMNS, OPENFACE_META

POSITIVE = ("wonderful", "great", "lovely", "excellent", "delightful")
NEGATIVE = ("terrible", "awful", "boring", "dreadful", "disappointing")
NEUTRAL = ("ordinary", "okay", "plain", "average")
NOUNS = ("movie", "meal", "concert", "trip", "book", "game", "show", "lesson")
TEMPLATES = ("the {n} was {w}", "i thought the {n} was {w}", "honestly the {n} felt {w} to me",
             "well , that {n} was {w}")
SIZES = {"train": 36, "valid": 12, "test": 12}
SR = 22050


def _grid(x):
    return np.clip(np.round(np.round(np.asarray(x) / 0.2) * 0.2, 1), -1, 1)


def sentence(rng: np.random.Generator, t: float) -> str:
    words = POSITIVE if t > 0.2 else NEGATIVE if t < -0.2 else NEUTRAL
    w = words[rng.integers(len(words))]
    if abs(t) > 0.6:
        w = "very " + w
    return TEMPLATES[rng.integers(len(TEMPLATES))].format(n=NOUNS[rng.integers(len(NOUNS))], w=w)


def write_wav(path: Path, rng: np.random.Generator, a: float) -> None:
    dur = rng.uniform(0.6, 1.2)
    t = np.arange(int(dur * SR)) / SR
    f0 = 150.0 * 2 ** (0.6 * a)
    voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
    envelope = np.minimum(1, np.minimum(t, t[-1] - t) / 0.05) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2)
    y = 0.3 * envelope * voice + 0.02 * rng.normal(size=len(t))
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2")
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SR)
            w.writeframes(pcm.tobytes())


def openface_frames(rng: np.random.Generator, v: float) -> pd.DataFrame:
    n = int(rng.integers(12, 25))
    cols = {c: np.zeros(n) for c in OPENFACE_COLUMNS}
    for e in (0, 1):
        for a, base in zip("xyz", (0.05, 0.1, -1.0)):
            cols[f"gaze_{e}_{a}"] = base + 0.02 * rng.normal(size=n)
    cols["gaze_angle_x"], cols["gaze_angle_y"] = 0.02 * rng.normal(size=n), 0.05 + 0.02 * rng.normal(size=n)
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face_x, face_y = 320 + 80 * np.cos(ang), 240 + 100 * np.sin(ang)
    face_y[[48, 54]] -= 6 * v  # mouth corners rise with a smile
    drift = np.cumsum(rng.normal(0, 0.3, (n, 2)), 0)
    for i in range(68):
        cols[f"x_{i}"] = face_x[i] + drift[:, 0] + rng.normal(0, 0.5, n)
        cols[f"y_{i}"] = face_y[i] + drift[:, 1] + rng.normal(0, 0.5, n)
        cols[f"X_{i}"] = (cols[f"x_{i}"] - 320) * 0.6
        cols[f"Y_{i}"] = (cols[f"y_{i}"] - 240) * 0.6
        cols[f"Z_{i}"] = 500 + rng.normal(0, 2, n)
    for i in range(56):
        cols[f"eye_lmk_x_{i}"] = 300 + (i % 28) + rng.normal(0, 0.3, n)
        cols[f"eye_lmk_y_{i}"] = 200 + (i // 28) * 5 + rng.normal(0, 0.3, n)
        cols[f"eye_lmk_X_{i}"] = cols[f"eye_lmk_x_{i}"] * 0.1
        cols[f"eye_lmk_Y_{i}"] = cols[f"eye_lmk_y_{i}"] * 0.1
        cols[f"eye_lmk_Z_{i}"] = 480 + rng.normal(0, 1, n)
    for a, base in zip(("Tx", "Ty", "Tz", "Rx", "Ry", "Rz"), (10, 20, 500, 0.1, 0.0, 0.0)):
        cols[f"pose_{a}"] = base + 0.01 * abs(base + 1) * rng.normal(size=n)
    cols["p_scale"] = 2.5 + 0.01 * rng.normal(size=n)
    for i in range(34):
        cols[f"p_{i}"] = rng.normal(0, 1, n)
    smile, frown = max(v, 0.0), max(-v, 0.0)
    intensity = {"06": 2.0 * smile, "12": 3.0 * smile, "04": 2.0 * frown, "15": 2.5 * frown}
    for au in [c[2:4] for c in OPENFACE_COLUMNS if c.endswith("_r")]:
        cols[f"AU{au}_r"] = np.clip(intensity.get(au, 0.2) + 0.25 * rng.normal(size=n), 0, 5)
    for au in [c[2:4] for c in OPENFACE_COLUMNS if c.endswith("_c")]:
        r = cols.get(f"AU{au}_r", np.full(n, 0.2))
        cols[f"AU{au}_c"] = (r > 1.0).astype(float)
    meta = {"frame": np.arange(1, n + 1), "face_id": np.zeros(n, int), "timestamp": np.arange(n) / 30.0,
            "confidence": np.full(n, 0.98), "success": np.ones(n, int)}
    return pd.DataFrame({**meta, **cols})[OPENFACE_META + OPENFACE_COLUMNS]


def write_openface_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:  # OpenFace separates columns with ", "
            f.write(", ".join(df.columns) + "\n")
            for row in df.itertuples(index=False):
                f.write(", ".join(f"{x:.5g}" if isinstance(x, float) else str(x) for x in row) + "\n")


def write_raw_media(out: str | Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    out = Path(out)
    rng = np.random.default_rng(seed + 7919)
    rows = []
    for split, n in (sizes or SIZES).items():
        for i in range(n):
            item = f"{split}_{i:04d}"
            t, a, v = _grid(rng.uniform(-1, 1, 3))
            text = sentence(rng, t)
            write_wav(out / "audio" / f"{item}.wav", rng, float(a))
            write_openface_csv(out / "openface" / f"{item}.csv", openface_frames(rng, float(v)))
            rows.append({"split": split, "id": item, "M": float(_grid((t + a + v) / 3)), "T": float(t),
                         "A": float(a), "V": float(v), "text": text})
    with atomic_path(out / "labels.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    write_json(out / "media.json", {"name": "synth-media", "metric_family": "sims", "label_range": [-1, 1],
                                    "language": "en", "seed": seed,
                                    "generator": "msarepro.features.media.write_raw_media"})
    return out


def read_media(raw: str | Path) -> tuple[dict, pd.DataFrame]:
    raw = Path(raw)
    try:
        info = json.loads((raw / "media.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{raw / 'media.json'}: missing; a raw-media folder needs media.json and labels.csv "
                                "(layout in msarepro.features.media), e.g. `msarepro data download raw-media "
                                f"--out {raw}`") from None
    labels = pd.read_csv(raw / "labels.csv", dtype={"id": str, "split": str, "text": str}, keep_default_na=False,
                         na_values=[""])
    return info, labels
