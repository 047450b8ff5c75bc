"""Embedded synthetic datasets with planted signal, deterministic from a seed.

They exist so that `dvc repro` on a fresh clone trains every method on CPU in minutes, and so that tests can
tell a method that learns from one that does not. Each generator also scores two reference predictors on its
own test split, computed from the latent variables: `oracle` (knows every latent that sets the label) and
`text_oracle` (knows only the text latent). They bracket what a model can reach and are stored in the manifest
under provenance.reference.

Trimodal generative process (synth-mosi, synth-sims), per sample:
    z_t ~ U(-2, 2)                      text sentiment (dominant)
    z_a, z_v ~ U(-1.2, 1.2)             audio / vision sentiment (complementary)
    r_a, r_v ~ Bernoulli(0.7)           is the modality sentiment-relevant for this sample?
    if not relevant, the modality shows a distractor d ~ U(-1.2, 1.2) instead of its z (irrelevant or
    conflicting cue), which the label ignores; the text says which modalities are relevant (cue tokens).
    M = z_t + r_a z_a + r_v z_v         (synth-mosi: rounded to the 0.2 grid, clipped to [-3, 3])
                                        (synth-sims: divided by 3, rounded to 0.2, clipped to [-1, 1];
                                         unimodal labels T, A, V are what each modality alone shows)
synth-sims also gives each clip one of 24 speakers whose signature (a fixed offset per speaker and modality)
marks every real frame of all three modalities: the modalities of one clip belong together, so a swapped
modality is detectable (AE-MT's modality-consistency pretext task), while the label ignores the speaker.
Sentiment is carried by a few positions of each sequence (2 text tokens, 3 audio and 3 vision frames); every
other position is noise, and sequences have variable true lengths.
Text is given both as token ids (a small vocabulary: sentiment words are bins of z_t, cue words, filler) and as
token features (a fixed embedding of the ids plus the continuous z_t on the sentiment tokens), like MMSA's
BERT features beside `text_bert`.

Image-text process (synth-mvsa), 3 classes (0 positive, 1 neutral, 2 negative as in CLMLF):
    y ~ Categorical(0.4, 0.25, 0.35)
    text: with probability 0.75 one or two sentiment words of class y, otherwise filler only
    image (3 x 32 x 32): with probability 0.6 (pairs that agree) a blob whose colour is y's, otherwise a random
    class's blob (weakly correlated pairs); plus pixel noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from .format import Manifest, write_dataset

PAD, CLS, SEP, UNK = 0, 1, 2, 3


@dataclass(frozen=True)
class TrimodalSpec:
    name: str
    scale: str  # "mosi" | "sims"
    n_train: int
    n_valid: int
    n_test: int
    n_unlabeled: int = 0
    text_dim: int = 32
    audio_dim: int = 8
    vision_dim: int = 12
    text_len: int = 24
    audio_len: int = 40
    vision_len: int = 30
    relevance: float = 0.7
    av_signal: float = 3.0  # amplitude of the sentiment direction on the audio/vision carrier frames
    speakers: int = 0  # > 0: each clip has one of this many speakers whose signature marks all three modalities
    speaker_signature: float = 1.0  # amplitude of that signature on every real frame


# Vocabulary of the trimodal text: 4 specials, 2 cue words, 20 sentiment bins, filler up to VOCAB.
CUE_A, CUE_V = 4, 5
SENT0, N_SENT_BINS = 6, 20
FILLER0, TRI_VOCAB = SENT0 + N_SENT_BINS, 64


def _round_grid(x: np.ndarray, step: float = 0.2) -> np.ndarray:
    return np.round(np.round(x / step) * step, 1)


def generate_trimodal(spec: TrimodalSpec, seed: int) -> tuple[dict, pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(0, 1, (TRI_VOCAB, spec.text_dim)).astype(np.float32)
    u_t = _unit(rng, spec.text_dim)
    u_a = _unit(rng, spec.audio_dim)
    u_v = _unit(rng, spec.vision_dim)
    # Speaker signatures come from their own stream so that they leave every other draw unchanged.
    srng = np.random.default_rng([seed, 7])
    sig = {m: srng.normal(0, spec.speaker_signature, (max(spec.speakers, 1), d))
           for m, d in (("text", spec.text_dim), ("audio", spec.audio_dim), ("vision", spec.vision_dim))}
    sizes = {"train": spec.n_train, "valid": spec.n_valid, "test": spec.n_test}
    if spec.n_unlabeled:
        sizes["unlabeled"] = spec.n_unlabeled
    arrays, rows, latents = {}, [], {}
    for split, n in sizes.items():
        z_t = rng.uniform(-2, 2, n)
        z_a, z_v = rng.uniform(-1.2, 1.2, n), rng.uniform(-1.2, 1.2, n)
        r_a, r_v = rng.random(n) < spec.relevance, rng.random(n) < spec.relevance
        shown_a = np.where(r_a, z_a, rng.uniform(-1.2, 1.2, n))
        shown_v = np.where(r_v, z_v, rng.uniform(-1.2, 1.2, n))
        raw = z_t + r_a * z_a + r_v * z_v
        text = np.zeros((n, spec.text_len, spec.text_dim), np.float32)
        ids = np.zeros((n, spec.text_len), np.int64)
        audio = rng.normal(0, 1, (n, spec.audio_len, spec.audio_dim)).astype(np.float32)
        vision = rng.normal(0, 1, (n, spec.vision_len, spec.vision_dim)).astype(np.float32)
        t_len = rng.integers(8, spec.text_len + 1, n)
        a_len = rng.integers(spec.audio_len // 3, spec.audio_len + 1, n)
        v_len = rng.integers(spec.vision_len // 3, spec.vision_len + 1, n)
        words = []
        for i in range(n):
            L = t_len[i]
            tok = rng.integers(FILLER0, TRI_VOCAB, L)
            tok[0], tok[L - 1] = CLS, SEP
            inner = rng.permutation(np.arange(1, L - 1))
            sent_pos = inner[:2]
            b = int(np.clip((z_t[i] + 2) / 4 * N_SENT_BINS, 0, N_SENT_BINS - 1))
            tok[sent_pos] = SENT0 + b
            if r_a[i]:
                tok[inner[2]] = CUE_A
            if r_v[i]:
                tok[inner[3]] = CUE_V
            ids[i, :L] = tok
            text[i, :L] = emb[tok] + rng.normal(0, 0.3, (L, spec.text_dim))
            text[i, sent_pos] += 1.5 * z_t[i] * u_t
            for seq, length, shown, u in ((audio, a_len[i], shown_a[i], u_a), (vision, v_len[i], shown_v[i], u_v)):
                seq[i, length:] = 0
                pos = rng.choice(length, 3, replace=False)
                seq[i, pos] += spec.av_signal * shown * u
            words.append(" ".join(_word(t) for t in tok))
        if spec.speakers:
            spk = srng.integers(0, spec.speakers, n)
            for m, seq, length in (("text", text, t_len), ("audio", audio, a_len), ("vision", vision, v_len)):
                real = np.arange(seq.shape[1])[None, :] < length[:, None]  # (n, L)
                seq += (real[..., None] * sig[m][spk][:, None, :]).astype(np.float32)
        arrays[split] = {"text": text, "text_lengths": t_len.astype(np.int64),
                         "audio": audio, "audio_lengths": a_len.astype(np.int64),
                         "vision": vision, "vision_lengths": v_len.astype(np.int64),
                         "text_ids": ids, "text_ids_lengths": t_len.astype(np.int64)}
        if spec.scale == "mosi":
            labels = {"M": np.clip(_round_grid(raw), -3, 3)}
            oracle, text_oracle = raw, z_t
        else:
            labels = {"M": np.clip(_round_grid(raw / 3), -1, 1), "T": np.clip(_round_grid(z_t / 2), -1, 1),
                      "A": np.clip(_round_grid(shown_a / 1.2), -1, 1), "V": np.clip(_round_grid(shown_v / 1.2), -1, 1)}
            oracle, text_oracle = raw / 3, z_t / 3
        for i in range(n):
            row = {"split": split, "id": f"{split}_{i:05d}", "text": words[i]}
            for k, v in labels.items():
                row[k] = float(v[i]) if split != "unlabeled" else np.nan
            rows.append(row)
        latents[split] = (labels["M"], oracle, text_oracle)
    fam = spec.scale
    y, oracle, text_oracle = latents["test"]
    reference = {
        "oracle": metrics.compute(fam, oracle, y),
        "text_oracle": metrics.compute(fam, text_oracle, y),
        "majority": metrics.compute(fam, np.full_like(y, np.median(latents["train"][0])), y),
    }
    return arrays, pd.DataFrame(rows), reference


def _word(tok: int) -> str:
    if tok == CLS:
        return "[CLS]"
    if tok == SEP:
        return "[SEP]"
    if tok in (CUE_A, CUE_V):
        return {CUE_A: "hear", CUE_V: "see"}[tok]
    if SENT0 <= tok < SENT0 + N_SENT_BINS:
        return f"s{tok - SENT0:02d}"
    return f"w{tok}"


def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    u = rng.normal(0, 1, d)
    return (u / np.linalg.norm(u)).astype(np.float32)


def write_trimodal(spec: TrimodalSpec, out: Path, seed: int) -> Manifest:
    arrays, labels, reference = generate_trimodal(spec, seed)
    sizes = {k: len(v["text"]) for k, v in arrays.items()}
    manifest = Manifest(
        name=spec.name, family="trimodal", task="regression", metric_family=spec.scale,
        label_range=(-3.0, 3.0) if spec.scale == "mosi" else (-1.0, 1.0),
        modalities={"text": {"dim": spec.text_dim, "max_len": spec.text_len},
                    "audio": {"dim": spec.audio_dim, "max_len": spec.audio_len},
                    "vision": {"dim": spec.vision_dim, "max_len": spec.vision_len},
                    "text_ids": {"vocab_size": TRI_VOCAB, "max_len": spec.text_len}},
        splits=sizes, unimodal_labels=spec.scale == "sims", preset=spec.name,
        provenance={"generator": "msarepro.data.synth.generate_trimodal", "seed": seed,
                    "spec": spec.__dict__, "reference": reference},
    )
    return write_dataset(out, manifest, arrays, labels)


# Vocabulary of the image-text set: 4 specials, 5 sentiment words per class, filler up to 64.
MV_SENT0, MV_WORDS_PER_CLASS, MV_VOCAB, MV_LEN, MV_CLASSES = 4, 5, 64, 16, ("positive", "neutral", "negative")
MV_COLOURS = np.array([[230, 60, 40], [60, 200, 60], [40, 80, 230]], np.float32)


def generate_image_text(n_sizes: dict[str, int], seed: int, image_size: int = 32,
                        text_cue: float = 0.75, agree: float = 0.6) -> tuple[dict, pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    arrays, rows, latents = {}, [], {}
    for split, n in n_sizes.items():
        y = rng.choice(3, n, p=[0.4, 0.25, 0.35])
        has_word = rng.random(n) < text_cue
        img_cls = np.where(rng.random(n) < agree, y, rng.integers(0, 3, n))
        ids = np.zeros((n, MV_LEN), np.int64)
        lens = rng.integers(6, MV_LEN + 1, n)
        img = rng.normal(110, 30, (n, 3, image_size, image_size))
        rowtexts = []
        for i in range(n):
            L = lens[i]
            tok = rng.integers(MV_SENT0 + 3 * MV_WORDS_PER_CLASS, MV_VOCAB, L)
            tok[0], tok[L - 1] = CLS, SEP
            if has_word[i]:
                k = rng.integers(1, 3)
                pos = rng.choice(np.arange(1, L - 1), k, replace=False)
                tok[pos] = MV_SENT0 + y[i] * MV_WORDS_PER_CLASS + rng.integers(0, MV_WORDS_PER_CLASS, k)
            ids[i, :L] = tok
            s = image_size // 3
            r0, c0 = rng.integers(0, image_size - s, 2)
            img[i, :, r0:r0 + s, c0:c0 + s] = MV_COLOURS[img_cls[i]][:, None, None] + rng.normal(0, 15, (3, s, s))
            rowtexts.append(" ".join(f"t{t}" for t in tok[1:L - 1]))
        arrays[split] = {"image": np.clip(img, 0, 255).astype(np.uint8), "text_ids": ids,
                         "text_ids_lengths": lens.astype(np.int64)}
        rows += [{"split": split, "id": f"{split}_{i:05d}", "M": int(y[i]), "text": rowtexts[i]} for i in range(n)]
        latents[split] = (y, has_word, img_cls)
    y, has_word, img_cls = latents["test"]
    majority = int(np.bincount(latents["train"][0]).argmax())
    reference = {
        "oracle": metrics.compute("cls", np.where(has_word, y, img_cls), y),
        "text_oracle": metrics.compute("cls", np.where(has_word, y, majority), y),
        "majority": metrics.compute("cls", np.full_like(y, majority), y),
    }
    return arrays, pd.DataFrame(rows), reference


def write_image_text(name: str, sizes: dict[str, int], out: Path, seed: int, image_size: int = 32) -> Manifest:
    arrays, labels, reference = generate_image_text(sizes, seed, image_size)
    manifest = Manifest(
        name=name, family="image_text", task="classification", metric_family="cls", label_range=(0.0, 2.0),
        modalities={"image": {"shape": [3, image_size, image_size]},
                    "text_ids": {"vocab_size": MV_VOCAB, "max_len": MV_LEN}},
        splits=dict(sizes), num_classes=3, class_names=MV_CLASSES, f1_average="weighted", preset=name,
        provenance={"generator": "msarepro.data.synth.generate_image_text", "seed": seed, "reference": reference},
    )
    return write_dataset(out, manifest, arrays, labels)


# The embedded datasets. `scale` shrinks every split (tests use small scales).
def synth_mosi(scale: float = 1.0) -> TrimodalSpec:
    return TrimodalSpec("synth-mosi", "mosi", *_n((900, 200, 300), scale))


def synth_sims(scale: float = 1.0) -> TrimodalSpec:
    return TrimodalSpec("synth-sims", "sims", *_n((900, 200, 300, 1500), scale), speakers=24)


def _n(sizes: tuple[int, ...], scale: float) -> list[int]:
    return [max(8, int(round(s * scale))) for s in sizes]


GENERATORS = {
    "synth-mosi": lambda out, seed, scale: write_trimodal(synth_mosi(scale), out, seed),
    "synth-sims": lambda out, seed, scale: write_trimodal(synth_sims(scale), out, seed),
    "synth-mvsa": lambda out, seed, scale: write_image_text(
        "synth-mvsa", dict(zip(("train", "valid", "test"), _n((1200, 200, 300), scale))), out, seed),
}


def generate(name: str, out: str | Path, seed: int = 0, scale: float = 1.0) -> Manifest:
    if name not in GENERATORS:
        raise KeyError(f"unknown embedded dataset {name!r}; choose one of {sorted(GENERATORS)}")
    return GENERATORS[name](Path(out), seed, scale)
