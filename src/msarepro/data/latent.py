"""The latent sentiment process shared by the embedded trimodal sets (synth.py) and the synthetic-like sets
(synth_like.py); the process itself is described in synth.py's module docstring. A module of its own so that
neither generator imports the other at load time."""
from __future__ import annotations

import numpy as np

AV_MAX = 1.2  # audio/vision sentiment and distractors lie in [-AV_MAX, AV_MAX]
ZT_MAX = 2.0  # text sentiment z_t ~ U(-ZT_MAX, ZT_MAX)


def draw_sentiment(rng: np.random.Generator, n: int, spec) -> dict[str, np.ndarray]:
    """The latent sentiment of n clips (synth.py's docstring), each (n,); spec: .agreement, .relevance
    (synth.TrimodalSpec, synth_like.SentimentProcess)."""
    z_t = rng.uniform(-ZT_MAX, ZT_MAX, n)
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


def conditional_mean(lat: dict[str, np.ndarray], spec, zt_seen, cue_seen: dict, cue_miss: dict,
                     shown_seen: dict) -> np.ndarray:
    """E[z_t + r_a z_a + r_v z_v | what an input still shows], per clip (n,): the oracle of a perturbed input.

    lat: `draw_sentiment`'s output; spec: .agreement (q), .relevance (rho). What is observed, per clip (bool
    arrays (n,) or scalars): zt_seen, z_t itself (hence its polarity s); cue_seen[m] (m in "a", "v"), the cue word
    of modality m was seen (so r_m = 1); cue_miss[m], P(the cue word is not seen | r_m = 1) (0: text whole,
    1: text removed, r: LNLN drop at rate r); shown_seen[m], the value modality m shows (z_m if relevant, else
    its distractor). The posterior is exact under the generative process (synth.py's docstring): a sum over the
    unobserved s in {-1, 1} and r_a, r_v in {0, 1} with weights
        P(s) = 1/2, P(r_m = 1) = rho, P(cue unseen | r_m = 1) = cue_miss, P(cue unseen | r_m = 0) = 1,
        density of a shown value x given s: r_m = 1: (q if sign x = s else 1 - q) / AV_MAX; r_m = 0: 1 / (2 AV_MAX),
    and, inside each term, E[z_t | s] = s ZT_MAX / 2 when z_t is not seen, E[z_m | s, r_m = 1] = x when shown,
    else s (2q - 1) AV_MAX / 2 (z_m given s is independent of everything else).
    """
    n = len(lat["z_t"])
    q, rho = spec.agreement, spec.relevance
    z_t = lat["z_t"]
    zt_seen = np.broadcast_to(np.asarray(zt_seen, bool), (n,))
    shown = {"a": lat["shown_a"], "v": lat["shown_v"]}
    num, den = np.zeros(n), np.zeros(n)
    for s in (-1.0, 1.0):
        w_s = np.where(zt_seen, (np.where(z_t >= 0, 1.0, -1.0) == s).astype(float), 0.5)
        e_zt = np.where(zt_seen, z_t, s * ZT_MAX / 2)
        for r_a in (0, 1):
            for r_v in (0, 1):
                w, value = w_s.copy(), e_zt.copy()
                for m, r in (("a", r_a), ("v", r_v)):
                    seen_cue = np.broadcast_to(np.asarray(cue_seen[m], bool), (n,))
                    seen_x = np.broadcast_to(np.asarray(shown_seen[m], bool), (n,))
                    x = shown[m]
                    if r:
                        w = w * rho * np.where(seen_cue, 1.0, cue_miss[m])
                        agree = np.where(x >= 0, 1.0, -1.0) == s
                        w = w * np.where(seen_x, np.where(agree, q, 1 - q) / AV_MAX, 1.0)
                        value = value + np.where(seen_x, x, s * (2 * q - 1) * AV_MAX / 2)
                    else:
                        w = w * (1 - rho) * np.where(seen_cue, 0.0, 1.0)
                        w = w * np.where(seen_x, 1 / (2 * AV_MAX), 1.0)
                num += w * value
                den += w
    return num / den
