"""Embedded synthetic datasets with planted signal, deterministic from a seed.

They exist so that `dvc repro` on a fresh clone trains every method on CPU in minutes, and so that tests can
tell a method that learns from one that does not. Each generator also scores two reference predictors on its
own test split, computed from the latent variables: `oracle` (knows every latent that sets the label) and
`text_oracle` (knows only what the text shows: the text latent and the cue words). They bracket what a model
can reach and are stored in the manifest under provenance.reference, with the oracle under the robustness
evaluation's perturbations (`oracle_without`, `oracle_random_drop`, below).

Trimodal generative process (synth-mosi, synth-sims; every split, the unlabeled pool included), per clip:
    z_t ~ U(-2, 2)                      text sentiment (dominant); its polarity is sign(z_t)
    g_a, g_v ~ Bernoulli(q), q = 0.8    does the audio / vision polarity agree with the text's?
    z_a = (g_a ? sign(z_t) : -sign(z_t)) * U(0, 1.2), z_v likewise
                                        audio / vision sentiment (complementary): marginally U(-1.2, 1.2) as
                                        before, but P(sign z_a == sign z_t) = P(sign z_v == sign z_t) = q, and
                                        the magnitude is independent of the text
    r_a, r_v ~ Bernoulli(0.7)           is the modality sentiment-relevant for this clip?
    if not relevant, the modality shows a distractor d ~ U(-1.2, 1.2) instead of its z (irrelevant or
    conflicting cue, independent of everything), which the label ignores; the text says which modalities are
    relevant (cue tokens).
    M = z_t + r_a z_a + r_v z_v         (synth-mosi: rounded to the 0.2 grid, clipped to [-3, 3])
                                        (synth-sims: divided by 3, rounded to 0.2, clipped to [-1, 1];
                                         unimodal labels T, A, V are what each modality alone shows)
The unlabeled pool of synth-sims comes from this same process; only its labels are withheld (NaN).

Why the modalities agree (AE-MT's modality-consistency detection): the paper pretrains by detecting a clip
whose modality was swapped in from another clip, on the premise that the modalities of a real clip agree in
sentiment more often than not, so that features that see sentiment make a swap detectable. Here the latent
audio (vision) polarity agrees with the text's with probability q; the shown audio (vision), distractors
included, with probability 0.7 q + 0.3 * 0.5 = 0.71; the latent audio and vision with each other with
probability q^2 + (1 - q)^2 = 0.68. A modality swapped in from another clip agrees with the rest only by
chance (0.5). q = 0.8 is ours, chosen from this reasoning before any method was trained on the result: well
above 0.5 (the paper's premise), well below 1 (at q = 1 audio and vision would only repeat the text's
polarity). One clip in five per modality conflicts with its text, which keeps audio and vision complementary.
Agreement makes the text more informative about M: E[M | text] = z_t + (r_a + r_v) (2q - 1) 0.6 sign(z_t)
(the text shows z_t and the cue words; 0.6 = E|z_a|), and `text_oracle` scores that expectation (with
independent modalities, as before this change, it was z_t). Measured on seed 0 (full size): synth-mosi's
text_oracle moves from Has0_acc_2 0.837 / Corr 0.812 / MAE 0.693 to 0.947 / 0.917 / 0.554 and the oracle from
0.977 / 0.998 / 0.065 to 0.997 / 0.998 / 0.066: beyond the text, audio and vision now add 5 points of Acc-2
(16 before) and still most of the MAE.

No speaker signature. synth-sims used to mark every real frame of all three modalities with one of 24 fixed
speaker offsets (amplitude 1 per feature). A clip's frame mean recovers its speaker, so a swapped modality was
detectable from identity alone: a logistic regression on pairwise products of the three modalities'
sentiment-free frame means (the sentiment direction projected out, text embeddings subtracted), fitted on the
train split with one of three modalities swapped at p = 0.5, detected swaps on the unlabeled pool with accuracy
0.875, while the modalities' sentiments were independent, so the same detector on the sentiment latents was at
chance. A weaker signature would still be a label-irrelevant shortcut that a detector can learn instead of
sentiment; the embedded data exist to show what pretraining is for, so the signature is removed and sentiment
agreement is the only thing the modalities of a clip share. Now (seed 0, full size) the signature detector is
at chance (0.473) and the same detector on the shown sentiments (z_t, shown_a, shown_v) reaches 0.582
(tests/test_synth.py pins both at half size).

The oracle of a perturbed input (trimodal). What each modality shows: the text z_t (its two sentiment tokens)
and r_a, r_v (the cue words); audio x_a = shown_a, vision x_v = shown_v (3 frames each). With all three,
M = z_t + r_a x_a + r_v x_v is known exactly: `oracle` is E[M | T, A, V]. With less, the oracle is
E[M | what is left] (latent.conditional_mean), exact under this process:
    given the polarity s = sign(z_t):  E[z_t | s] = s E|z_t| = s,  E[z_m | s] = s (2q - 1) E|z_m| = s (2q - 1) 0.6,
        z_a, z_v independent of each other and of |z_t|; so audio removed, text and vision kept:
        E[M | T, V] = z_t + r_v x_v + r_a s (2q - 1) 0.6 (and V likewise; A and V removed: exactly text_oracle)
    text removed (s, r_a, r_v unseen): a shown value x has density (q if sign x = s else 1 - q) / 1.2 when
        relevant (r = 1) and 1 / 2.4 when a distractor (r = 0), so only its sign tells s and each value tells r
        by its likelihood; E[M | x_a, x_v] = sum over s, r_a, r_v of the posterior weight times
        (s + r_a x_a + r_v x_v), the weights P(s) = 1/2, P(r = 1) = 0.7 times those densities; a removed
        audio or vision enters with E[r_m z_m | s] = 0.7 s (2q - 1) 0.6 instead.
`oracle_without[R]` scores it on the test split for R in T, A, V, TA, TV, AV (the removed modalities; the
metrics of the dataset's family). LNLN's random drop at rate r (issue 18: each position of a clip's true length
dropped with probability r, text tokens to [UNK] except the first and last, frames to zero) loses a latent's
evidence only when all the positions carrying it are dropped: z_t with probability r^2 (2 sentiment tokens), a
cue word r (the oracle then weighs P(r_m = 1 | no cue seen) = 0.7 r / (0.7 r + 0.3)), a shown value r^3
(3 frames), independently; a dropped position tells nothing else (it is dropped whatever it holds). Over
the 2^5 outcomes with these probabilities, `oracle_random_drop["0.3"]` is the exact expectation over drop
masks of the oracle's score, for the metrics that average a per-clip score (accuracies, MAE: PER_CLIP_METRICS;
F1 and Corr are not linear in the clips and are left out). A method is scored on one mask (seed 1111), so it
sits near this expectation, within the mask's sampling spread (Acc-2 sd about 0.014 on 300 clips at r = 0.5).
The conditional expectation minimises squared error; for an accuracy it is a ceiling of reference, not a bound.
Image-text: without the text the blob's colour is the most probable class (P(y = c | blob c) is largest for
each class at these priors), without the image the text oracle (`oracle_without` "T", "I"); token drop and
patch masking have no stored oracle. None of this draws a random number, so the arrays and labels are those
of before (their SHA-256 unchanged).

Sentiment is carried by a few positions of each sequence (2 text tokens, 3 audio and 3 vision frames); every
other position is noise, and sequences have variable true lengths.
Text is given both as token ids (a small vocabulary: sentiment words are bins of z_t, cue words, filler) and as
token features (a fixed embedding of the ids plus the continuous z_t on the sentiment tokens), like MMSA's
BERT features beside `text_bert`. The manifests record that vocabulary as the ids' tokenizer ("msarepro
synth-mosi vocabulary", its SHA-256 from `trimodal_vocabulary()` / `image_text_vocabulary()`), with raw_text
false: labels.csv's text spells the ids and is no text a real tokenizer should read, so methods use tiny-*
encoders on the embedded sets (data/tokens.py refuses a real tokenizer there).

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
from .format import Manifest, embedded_tokenizer_name, vocab_digest, write_dataset
from .latent import AV_MAX, conditional_mean  # latent.py: shared with synth_like.py
from .latent import draw_sentiment as _draw_sentiment, unit as _unit

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
    agreement: float = 0.8  # q: P(sign z_a == sign z_t) = P(sign z_v == sign z_t) (ours; see the module docstring)
    av_signal: float = 3.0  # amplitude of the sentiment direction on the audio/vision carrier frames


@dataclass(frozen=True)
class TrimodalLatents:
    """What `generate_trimodal` drew besides the arrays (for tests and analyses; never written to disk)."""
    embedding: np.ndarray  # (TRI_VOCAB, text_dim) token embedding of the text features
    directions: dict[str, np.ndarray]  # {"text": u_t, "audio": u_a, "vision": u_v}: unit sentiment directions
    splits: dict[str, dict[str, np.ndarray]]  # per split, each (n,): z_t, z_a, z_v, r_a, r_v, shown_a, shown_v


# Vocabulary of the trimodal text: 4 specials, 2 cue words, 20 sentiment bins, filler up to VOCAB.
CUE_A, CUE_V = 4, 5
SENT0, N_SENT_BINS = 6, 20
FILLER0, TRI_VOCAB = SENT0 + N_SENT_BINS, 64


SPECIAL_TOKENS = {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]"}


def _specials() -> dict[str, int]:
    return {"[PAD]": PAD, "[CLS]": CLS, "[SEP]": SEP, "[UNK]": UNK}


def trimodal_vocabulary() -> dict[str, int]:
    """The trimodal text's vocabulary (token -> id), in the words labels.csv shows (`_word`)."""
    return {**_specials(), **{_word(t): t for t in range(CUE_A, TRI_VOCAB)}}


def image_text_vocabulary() -> dict[str, int]:
    """The image-text set's vocabulary (token -> id), in the words labels.csv shows ("t<id>")."""
    return {**_specials(), **{f"t{t}": t for t in range(MV_SENT0, MV_VOCAB)}}


def text_ids_record(dataset: str, vocab: dict[str, int], max_len: int) -> dict:
    """manifest modalities["text_ids"] of an embedded set: its own vocabulary, named and hashed (data/tokens.py),
    with the ids of its special tokens (data/format.py)."""
    return {"vocab_size": len(vocab), "max_len": max_len, "tokenizer": embedded_tokenizer_name(dataset),
            "vocab_sha256": vocab_digest(vocab, SPECIAL_TOKENS),
            "special_ids": {"pad": PAD, "cls": CLS, "sep": SEP, "unk": UNK}}


def _round_grid(x: np.ndarray, step: float = 0.2) -> np.ndarray:
    return np.round(np.round(x / step) * step, 1)


def generate_trimodal(spec: TrimodalSpec, seed: int) -> tuple[dict, pd.DataFrame, dict, TrimodalLatents]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(0, 1, (TRI_VOCAB, spec.text_dim)).astype(np.float32)
    u_t = _unit(rng, spec.text_dim)
    u_a = _unit(rng, spec.audio_dim)
    u_v = _unit(rng, spec.vision_dim)
    sizes = {"train": spec.n_train, "valid": spec.n_valid, "test": spec.n_test}
    if spec.n_unlabeled:
        sizes["unlabeled"] = spec.n_unlabeled
    arrays, rows, latents, drawn = {}, [], {}, {}
    for split, n in sizes.items():
        lat = drawn[split] = _draw_sentiment(rng, n, spec)
        z_t, z_a, z_v, r_a, r_v = (lat[k] for k in ("z_t", "z_a", "z_v", "r_a", "r_v"))
        shown_a, shown_v = lat["shown_a"], lat["shown_v"]
        raw = z_t + r_a * z_a + r_v * z_v
        # E[M | what the text shows: z_t and the cue words]; E|z_a| = AV_MAX / 2 (module docstring)
        text_expected = z_t + (r_a.astype(float) + r_v) * (2 * spec.agreement - 1) * (AV_MAX / 2) * np.sign(z_t)
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
        arrays[split] = {"text": text, "text_lengths": t_len.astype(np.int64),
                         "audio": audio, "audio_lengths": a_len.astype(np.int64),
                         "vision": vision, "vision_lengths": v_len.astype(np.int64),
                         "text_ids": ids, "text_ids_lengths": t_len.astype(np.int64)}
        if spec.scale == "mosi":
            labels = {"M": np.clip(_round_grid(raw), -3, 3)}
            oracle, text_oracle = raw, text_expected
        else:
            labels = {"M": np.clip(_round_grid(raw / 3), -1, 1), "T": np.clip(_round_grid(z_t / 2), -1, 1),
                      "A": np.clip(_round_grid(shown_a / AV_MAX), -1, 1),
                      "V": np.clip(_round_grid(shown_v / AV_MAX), -1, 1)}
            oracle, text_oracle = raw / 3, text_expected / 3
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
        **perturbed_oracles(spec, drawn["test"], y),
    }
    drawn_latents = TrimodalLatents(emb, {"text": u_t, "audio": u_a, "vision": u_v}, drawn)
    return arrays, pd.DataFrame(rows), reference, drawn_latents


REMOVABLE = ("T", "A", "V", "TA", "TV", "AV")  # modality sets removed whole (issue 18's `remove`)
DROP_RATES = tuple(i / 10 for i in range(10))  # LNLN's missing rates
# The metrics that are a mean over clips of a per-clip score, so that their expectation over drop masks is exact.
PER_CLIP_METRICS = {"mosi": ("Has0_acc_2", "Non0_acc_2", "Mult_acc_3", "Mult_acc_5", "Mult_acc_7", "MAE"),
                    "sims": ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "MAE")}


def _observed(lat: dict, text: bool, audio: bool, vision: bool) -> dict:
    """conditional_mean's observation arguments when each modality is kept whole (True) or removed (False)."""
    return {"zt_seen": text, "cue_seen": {"a": lat["r_a"] & text, "v": lat["r_v"] & text},
            "cue_miss": {"a": 0.0 if text else 1.0, "v": 0.0 if text else 1.0},
            "shown_seen": {"a": audio, "v": vision}}


def perturbed_oracles(spec: TrimodalSpec, lat: dict, y: np.ndarray) -> dict:
    """The oracle's test scores when modalities are removed and under LNLN random drop (module docstring).
    -> {"oracle_without": {removed: metrics}, "oracle_random_drop": {"0.1": per-clip metrics, ...}}."""
    fam, div = spec.scale, (1.0 if spec.scale == "mosi" else 3.0)
    without = {}
    for removed in REMOVABLE:
        obs = _observed(lat, "T" not in removed, "A" not in removed, "V" not in removed)
        without[removed] = metrics.compute(fam, conditional_mean(lat, spec, **obs) / div, y)
    drop = {}
    for rate in DROP_RATES:
        # the evidence of each latent survives when one of its positions is kept: z_t on 2 sentiment tokens, each
        # cue on 1 token, each shown value on 3 frames; every outcome of those 5 events, with its probability
        keep = {"zt": 1 - rate ** 2, "ka": 1 - rate, "kv": 1 - rate, "sa": 1 - rate ** 3, "sv": 1 - rate ** 3}
        expected = dict.fromkeys(PER_CLIP_METRICS[fam], 0.0)
        for outcome in np.ndindex(*(2,) * 5):
            seen = dict(zip(keep, (bool(b) for b in outcome)))
            p = float(np.prod([keep[k] if seen[k] else 1 - keep[k] for k in keep]))
            if p == 0.0:
                continue
            pred = conditional_mean(lat, spec, zt_seen=seen["zt"],
                                    cue_seen={"a": lat["r_a"] & seen["ka"], "v": lat["r_v"] & seen["kv"]},
                                    cue_miss={"a": rate, "v": rate}, shown_seen={"a": seen["sa"], "v": seen["sv"]})
            got = metrics.compute(fam, pred / div, y)
            for k in expected:
                expected[k] += p * got[k]
        drop[f"{rate:.1f}"] = expected
    return {"oracle_without": without, "oracle_random_drop": drop}


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


def write_trimodal(spec: TrimodalSpec, out: Path, seed: int) -> Manifest:
    arrays, labels, reference, _ = generate_trimodal(spec, seed)
    sizes = {k: len(v["text"]) for k, v in arrays.items()}
    manifest = Manifest(
        name=spec.name, family="trimodal", task="regression", metric_family=spec.scale,
        label_range=(-3.0, 3.0) if spec.scale == "mosi" else (-1.0, 1.0),
        modalities={"text": {"dim": spec.text_dim, "max_len": spec.text_len},
                    "audio": {"dim": spec.audio_dim, "max_len": spec.audio_len},
                    "vision": {"dim": spec.vision_dim, "max_len": spec.vision_len},
                    "text_ids": text_ids_record(spec.name, trimodal_vocabulary(), spec.text_len)},
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
        # without the text: the image's blob colour is the most probable class (P(y = c | blob c) is largest
        # for every prior here); without the image: the text oracle (a class word, else the majority class)
        "oracle_without": {"T": metrics.compute("cls", img_cls, y),
                           "I": metrics.compute("cls", np.where(has_word, y, majority), y)},
    }
    return arrays, pd.DataFrame(rows), reference


def write_image_text(name: str, sizes: dict[str, int], out: Path, seed: int, image_size: int = 32) -> Manifest:
    arrays, labels, reference = generate_image_text(sizes, seed, image_size)
    manifest = Manifest(
        name=name, family="image_text", task="classification", metric_family="cls", label_range=(0.0, 2.0),
        modalities={"image": {"shape": [3, image_size, image_size]},
                    "text_ids": text_ids_record(name, image_text_vocabulary(), MV_LEN)},
        splits=dict(sizes), num_classes=3, class_names=MV_CLASSES, f1_average="weighted", preset=name,
        provenance={"generator": "msarepro.data.synth.generate_image_text", "seed": seed, "reference": reference},
    )
    return write_dataset(out, manifest, arrays, labels)


# The embedded datasets. `scale` shrinks every split (tests use small scales).
def synth_mosi(scale: float = 1.0) -> TrimodalSpec:
    return TrimodalSpec("synth-mosi", "mosi", *_n((900, 200, 300), scale))


def synth_sims(scale: float = 1.0) -> TrimodalSpec:
    return TrimodalSpec("synth-sims", "sims", *_n((900, 200, 300, 1500), scale))


def _n(sizes: tuple[int, ...], scale: float) -> list[int]:
    return [max(8, int(round(s * scale))) for s in sizes]


GENERATORS = {
    "synth-mosi": lambda out, seed, scale: write_trimodal(synth_mosi(scale), out, seed),
    "synth-sims": lambda out, seed, scale: write_trimodal(synth_sims(scale), out, seed),
    "synth-mvsa": lambda out, seed, scale: write_image_text(
        "synth-mvsa", dict(zip(("train", "valid", "test"), _n((1200, 200, 300), scale))), out, seed),
}


def generate(name: str, out: str | Path, seed: int = 0, scale: float | None = None) -> Manifest:
    """Write the embedded dataset `name` (scale: multiplies its split sizes; None: 1) or the synthetic-like set
    synth-like-<real name> (data/synth_like.py; scale: fraction of the real split sizes; None: its default size)."""
    from .synth_like import LIKE, like_of, write_like

    like = like_of(name)
    if like is not None:
        return write_like(like, Path(out), seed=seed, scale=scale)
    if name not in GENERATORS:
        raise KeyError(f"unknown embedded dataset {name!r}; choose one of "
                       f"{sorted(GENERATORS) + ['synth-like-' + k for k in LIKE]}")
    return GENERATORS[name](Path(out), seed, 1.0 if scale is None else scale)
