"""The latent sentiment process shared by the embedded trimodal sets (synth.py) and the synthetic-like sets
(synth_like.py); the process itself is described in synth.py's module docstring. A module of its own so that
neither generator imports the other at load time."""
from __future__ import annotations

import numpy as np

AV_MAX = 1.2  # audio/vision sentiment and distractors lie in [-AV_MAX, AV_MAX]


def draw_sentiment(rng: np.random.Generator, n: int, spec) -> dict[str, np.ndarray]:
    """The latent sentiment of n clips (synth.py's docstring), each (n,); spec: .agreement, .relevance
    (synth.TrimodalSpec, synth_like.SentimentProcess)."""
    z_t = rng.uniform(-2, 2, n)
    pol = np.where(z_t >= 0, 1.0, -1.0)  # sign(z_t); z_t == 0 has probability 0
    g_a, g_v = rng.random(n) < spec.agreement, rng.random(n) < spec.agreement
    z_a = np.where(g_a, pol, -pol) * rng.uniform(0, AV_MAX, n)
    z_v = np.where(g_v, pol, -pol) * rng.uniform(0, AV_MAX, n)
    r_a, r_v = rng.random(n) < spec.relevance, rng.random(n) < spec.relevance
    shown_a = np.where(r_a, z_a, rng.uniform(-AV_MAX, AV_MAX, n))
    shown_v = np.where(r_v, z_v, rng.uniform(-AV_MAX, AV_MAX, n))
    return {"z_t": z_t, "z_a": z_a, "z_v": z_v, "r_a": r_a, "r_v": r_v, "shown_a": shown_a, "shown_v": shown_v}


def unit(rng: np.random.Generator, d: int) -> np.ndarray:
    """A random unit vector of R^d, float32."""
    u = rng.normal(0, 1, d)
    return (u / np.linalg.norm(u)).astype(np.float32)
