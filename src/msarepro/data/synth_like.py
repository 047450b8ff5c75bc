"""Synthetic data in a real dataset's shapes: `msarepro data synth NAME --like mosi|...|tumemo`, datasets
`synth-like-<real name>`.

The embedded sets (synth.py) have toy shapes (text 32-d x 24 tokens, audio 8-d, vision 12-d), so a method's
real preset never meets real shapes before a user's GPU does. A synthetic-like set has what the real dataset's
importer writes, with that dataset's facts taken from the dataset registry (`LIKE`, derived from `DATASETS`):

    trimodal (mosi, mosei, sims, simsv2): written as an MMSA feature pickle in a temporary folder and imported by
        `mmsa.import_mmsa` itself, so keys, dtypes and manifest fields are the importer's by construction:
        text features (N, L_t, 768), BERT token ids with CLS / SEP / PAD at the real ids (text_bert's ids and
        attention mask -> text_ids, lengths), audio (N, L_a, D_a), vision (N, L_v, D_v) at the registry's unaligned
        lengths and dims, zero-padded beyond each clip's true length; raw text (raw_text: true); labels on the
        real range and grid, T/A/V where the release has them; `--like simsv2` also writes the unlabeled part
        (the release's 10,161 clips, AE-MT's Section 4.1, scaled) as the `unlabeled` split.
    image_text (mvsa-single, mvsa-multiple, hfm, tumemo): images written to a temporary folder (BMP, lossless) and
        read by `imagetext.write_image_text_dataset`, the writer every image-text importer shares: image
        (N, 3, 224, 224) uint8 (the importers' default stored side), raw English text, integer class labels with
        the registry's class names and F1 average.

Every manifest carries `preset: <real name>` (as `import-mmsa --preset` writes it), so every method's real preset
resolves for it; its provenance records the generator, like, seed, scale and reference scores.

Sizes. Split sizes are the real release's times `scale` (rounded, at least MIN_SPLIT each), so the proportions
are the release's. scale None (the default, and what the registered `synth-like-*` sets use) is DEFAULT_TRAIN
training clips: one epoch of a small model takes seconds on CPU. scale 1 gives the real sizes (MOSEI: ~8 GB).

Token ids. MOSI / MOSEI: bert-base-uncased's ids of the English words used (the table below; ids as in the
vocabulary file of the packaged MiniLM, which is bert-base-uncased's, tests/test_synth_like.py checks them), so
the raw text tokenises back to the stored ids. CH-SIMS (v2): Chinese characters, with ids of our own choosing
inside bert-base-chinese's vocabulary range (no copy of that vocabulary offline: they are not its ids of these
characters); its special ids (PAD 0, UNK 100, CLS 101, SEP 102) are bert-base-chinese's, the same as
bert-base-uncased's.

Planted signal (trimodal). The latent sentiment of each clip is the embedded sets' process (synth.py: text
dominant z_t, audio / vision z_a, z_v agreeing with the text's polarity with probability 0.8, each shown only
when relevant (0.7), a distractor otherwise; cue words say which modality is relevant); M = z_t + r_a z_a + r_v z_v
mapped to the dataset's range and grid (MOSI: 0.2, the mean of five annotators' integer scores; MOSEI: 1/3,
three annotators; CH-SIMS (v2): M / 3 on 0.2, five annotators' -1 / 0 / 1, with T = z_t / 2, A, V = what audio,
vision show / 1.2). What carries it:
    text: two sentiment words (one two-character word in Chinese) from 20 ordered bins of z_t, and the cue words;
        the text features are a fixed random embedding of each token (sd 0.5) plus noise (sd 0.3), plus
        0.2 z_t u_t on every real token (contextual features spread a sentence's sentiment over its tokens) and
        1.5 z_t u_t more on the sentiment words (u_t a unit direction of the 768-d space)
    audio / vision: per-frame noise with a per-feature scale (log-uniform in [0.5, 2]), plus AV_AMP x shown
        sentiment along a unit direction on one contiguous span of SPAN (20%) of the clip's frames.
Lengths (ours, not measured on the releases): one duration fraction per clip f ~ Beta(2, 3); text tokens
9 + 1.3 f (L_t - 9), audio and vision frames L (1.3 f + N(0, 0.05)), each clipped to its maximum (about 8% of
clips reach it) and to a floor (9 tokens, 8 frames); so a clip's three lengths are correlated as a real clip's.

Planted signal (image-text). Class y from CLASS_PRIORS (ours); with probability 0.75 the text holds one or two
words of y's word list (else filler only); with probability 0.6 the image holds a square blob (a third of the
side) in y's colour, else a random class's colour; pixel noise N(110, 30). Reference scores as synth-mvsa's.

Reference scores (manifest provenance.reference, test split): `oracle`, `text_oracle`, `majority` as in synth.py.
"""
from __future__ import annotations

import pickle
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from .format import BERT_SPECIAL_IDS, Manifest
from .registry import DATASETS, LIKE_PREFIX
from .latent import AV_MAX, draw_sentiment as _draw_sentiment, unit as _unit

PREFIX = LIKE_PREFIX
DEFAULT_TRAIN = 200  # training clips at the default scale
MIN_SPLIT = 2
IMAGE_SIZE = 224  # imagetext.write_image_text_dataset's default stored side
UNLABELED = {"simsv2": 10161}  # CH-SIMS v2 (u): AE-MT's Section 4.1
LABEL_DENOMINATOR = {"mosi": 5, "mosei": 3, "sims": 5, "simsv2": 5}  # labels are multiples of 1 / it
BERT_SPECIALS = BERT_SPECIAL_IDS  # bert-base-uncased and bert-base-chinese alike
AV_AMP = 1.5  # amplitude of the shown sentiment on the audio / vision span frames
SPAN = 0.2  # fraction of a clip's frames that carry its audio / vision sentiment
T_MIN, F_MIN = 9, 8  # length floors: text tokens (room for CLS, SEP, sentiment and cue words), frames


@dataclass(frozen=True)
class SentimentProcess:
    """The embedded sets' latent process parameters (synth.TrimodalSpec's defaults)."""
    agreement: float = 0.8
    relevance: float = 0.7


# ---------------------------------------------------------------------------------------------- word tables
# English (bert-base-uncased ids). 20 sentiment bins, most negative first.
SENT_EN = (("worst", 5409), ("terrible", 6659), ("awful", 9643), ("horrible", 9202), ("bad", 2919),
           ("poor", 3532), ("boring", 11771), ("dull", 10634), ("weak", 5410), ("okay", 3100), ("fine", 2986),
           ("decent", 11519), ("nice", 3835), ("good", 2204), ("solid", 5024), ("great", 2307),
           ("excellent", 6581), ("wonderful", 6919), ("amazing", 6429), ("fantastic", 10392))
CUE_EN = {"audio": ("voice", 2376), "vision": ("face", 2227)}
FILLER_EN = (("the", 1996), ("movie", 3185), ("was", 2001), ("and", 1998), ("i", 1045), ("it", 2009),
             ("a", 1037), ("this", 2023), ("that", 2008), ("is", 2003), ("of", 1997), ("to", 2000), ("in", 1999),
             ("film", 2143), ("really", 2428), ("just", 2074), ("so", 2061), ("but", 2021), ("think", 2228),
             ("story", 2466), ("plot", 5436), ("acting", 3772), ("part", 2112), ("whole", 2878), ("kind", 2785),
             ("thing", 2518), ("about", 2055), ("with", 2007), ("one", 2028), ("what", 2054), ("actually", 2941),
             ("you", 2017), ("know", 2113), ("he", 2002), ("she", 2016), ("they", 2027), ("we", 2057), ("my", 2026),
             ("character", 2839), ("scene", 3496), ("end", 2203), ("time", 2051), ("um", 8529), ("uh", 7910))
# Chinese: two-character sentiment words (20 bins, most negative first), cue words, one-character filler.
SENT_ZH = ("极差", "糟糕", "讨厌", "失望", "生气", "难过", "烦躁", "无聊", "一般", "还行", "可以", "不错", "舒服", "满意",
           "喜欢", "开心", "高兴", "优秀", "精彩", "完美")
CUE_ZH = {"audio": "声音", "vision": "表情"}
FILLER_ZH = "我你他她的是这那个就也都说在有了吧啊呢很觉得真其实然后今天时候人家们去来看想"
ZH_ID0, ZH_ID_STEP = 1000, 37  # our ids of the Chinese characters: code-point order, spread inside [106, 21128)


def _zh_ids() -> dict[str, int]:
    chars = sorted(set("".join(SENT_ZH) + "".join(CUE_ZH.values()) + FILLER_ZH))
    return {c: ZH_ID0 + ZH_ID_STEP * k for k, c in enumerate(chars)}


# Image-text: per class, five words that carry it; filler words of a post.
CLASS_WORDS = {
    "positive": ("love", "happy", "beautiful", "awesome", "great"),
    "neutral": ("today", "news", "meeting", "update", "weather"),
    "negative": ("sad", "hate", "angry", "terrible", "awful"),
    "non-sarcastic": ("thanks", "congrats", "proud", "welcome", "enjoy"),
    "sarcastic": ("yeah", "totally", "obviously", "sure", "wow"),
    "angry": ("furious", "mad", "rage", "annoyed", "outraged"),
    "bored": ("bored", "boring", "meh", "tedious", "yawn"),
    "calm": ("calm", "peaceful", "quiet", "relaxed", "serene"),
    "fearful": ("scared", "afraid", "fear", "terrified", "nervous"),
    "happy": ("happy", "joy", "glad", "cheerful", "smile"),
    "loving": ("love", "adore", "darling", "sweetheart", "romance"),
    "sad": ("sad", "cry", "tears", "lonely", "grief"),
}
FILLER_POST = ("the", "a", "my", "this", "is", "at", "on", "with", "photo", "day", "just", "got", "new", "here",
               "we", "you", "i", "so", "to", "in", "of", "and", "for", "it", "out", "now", "after", "first", "look")
COLOURS = np.array([[230, 60, 40], [60, 200, 60], [40, 80, 230], [230, 210, 40], [200, 50, 200], [40, 200, 210],
                    [240, 140, 30]], np.float32)
CLASS_PRIORS = {3: (0.4, 0.25, 0.35)}  # ours (synth-mvsa's); other class counts: uniform


# ---------------------------------------------------------------------------------------------- the specs
@dataclass(frozen=True)
class LikeSpec:
    """What a synthetic-like set copies from one real dataset (all but the word tables come from the registry)."""
    like: str  # the real dataset's registered name
    name: str  # the registered synthetic-like name, synth-like-<like>
    family: str  # "trimodal" | "image_text"
    metric_family: str  # "mosi" | "sims" | "cls"
    preset: str  # the real dataset's preset name (manifest `preset`)
    task: str
    label_range: tuple[float, float]
    sizes: dict[str, int]  # the release's split sizes ("unlabeled" where it has that part)
    dims: dict[str, int] = field(default_factory=dict)  # trimodal: text / audio / vision feature sizes
    lengths: dict[str, int] = field(default_factory=dict)  # trimodal: text / audio / vision max lengths
    unimodal_labels: bool = False
    label_grid: float = 0.0  # trimodal: labels are multiples of it (1 / LABEL_DENOMINATOR)
    tokenizer: str = ""  # trimodal: the tokenizer of the stored ids
    vocab_size: int = 0
    special_ids: dict[str, int] = field(default_factory=dict)
    image_shape: tuple[int, int, int] = ()  # image_text: (3, S, S)
    class_names: tuple[str, ...] = ()
    f1_average: str = "weighted"

    def default_scale(self) -> float:
        return min(1.0, DEFAULT_TRAIN / self.sizes["train"])

    def split_sizes(self, scale: float | None = None) -> dict[str, int]:
        """The release's split sizes times `scale` (None: `default_scale`), at least MIN_SPLIT each."""
        s = self.default_scale() if scale is None else scale
        if not s > 0:
            raise ValueError(f"--scale must be positive, got {scale}")
        return {k: max(MIN_SPLIT, int(round(n * s))) for k, n in self.sizes.items()}


def _like_spec(like: str) -> LikeSpec:
    from .mmsa import TOKENIZERS

    info = DATASETS[like]
    x = info.extra
    common = dict(like=like, name=PREFIX + like, family=info.family, metric_family=info.metric_family, preset=like,
                  task=x["task"], label_range=tuple(x["label_range"]),
                  sizes={**x["splits"], **({"unlabeled": UNLABELED[like]} if like in UNLABELED else {})})
    if info.family == "trimodal":
        tok, vocab = TOKENIZERS[info.metric_family]
        return LikeSpec(**common, dims=dict(x["dims"]), lengths=dict(x["max_len"]),
                        unimodal_labels=x["unimodal_labels"], label_grid=1 / LABEL_DENOMINATOR[like], tokenizer=tok,
                        vocab_size=vocab, special_ids=dict(BERT_SPECIALS))
    return LikeSpec(**common, image_shape=(3, IMAGE_SIZE, IMAGE_SIZE), class_names=tuple(x["class_names"]),
                    f1_average=x["f1_average"])


# One entry per real dataset, as the registry lists them (registry.py registers synth-like-<name> for each).
LIKE: dict[str, LikeSpec] = {i.extra["like"]: _like_spec(i.extra["like"]) for i in DATASETS.values()
                             if i.source == "synth-like"}


def like_of(name: str) -> str | None:
    """"synth-like-mosi" -> "mosi"; None for any other name."""
    if name.startswith(PREFIX) and name[len(PREFIX):] in LIKE:
        return name[len(PREFIX):]
    return None


def _rng(seed: int, like: str) -> np.random.Generator:
    """The generator of one set: its seed and the real dataset's name (CRC-32), so that sets of the same shapes
    (MVSA-Single, MVSA-Multiple) differ at the same seed."""
    return np.random.default_rng([seed, zlib.crc32(like.encode("utf-8"))])


# ---------------------------------------------------------------------------------------------- trimodal
def _lengths(rng: np.random.Generator, f: np.ndarray, L: int, floor: int, text: bool) -> np.ndarray:
    if text:
        raw = floor + 1.3 * f * (L - floor)
    else:
        raw = L * np.clip(1.3 * f + rng.normal(0, 0.05, len(f)), 0, 1)
    return np.clip(np.round(raw), min(floor, L), L).astype(np.int64)


def _sentence(rng, spec: LikeSpec, L: int, b: int, r_a: bool, r_v: bool, zh: dict | None):
    """One clip's token ids (L real tokens: CLS ... SEP), its sentiment-word positions and its raw text."""
    if zh is None:
        sent = [[SENT_EN[b]], [SENT_EN[b]]]
        cues = [[CUE_EN[m]] for m, on in (("audio", r_a), ("vision", r_v)) if on]
        filler = [[FILLER_EN[k]] for k in rng.integers(0, len(FILLER_EN), L)]
    else:
        sent = [[(c, zh[c]) for c in SENT_ZH[b]]]
        cues = [[(c, zh[c]) for c in CUE_ZH[m]] for m, on in (("audio", r_a), ("vision", r_v)) if on]
        filler = [[(c, zh[c])] for c in rng.choice(list(FILLER_ZH), L)]
    n_fill = L - 2 - sum(len(u) for u in sent + cues)
    units = [(u, True) for u in sent] + [(u, False) for u in cues] + [(u, False) for u in filler[:n_fill]]
    order = rng.permutation(len(units))
    tokens, is_sent = [], []
    for k in order:
        u, s = units[k]
        tokens += u
        is_sent += [s] * len(u)
    ids = [spec.special_ids["cls"]] + [t for _, t in tokens] + [spec.special_ids["sep"]]
    text = ("".join if zh is not None else " ".join)(w for w, _ in tokens)
    return ids, np.flatnonzero([False] + is_sent + [False]), text


def _frames(rng, lens, shown, u, scale_d, L: int) -> np.ndarray:
    """(n, L, D) float32: noise x scale_d, plus AV_AMP * shown * u on a span of SPAN of each clip's frames,
    zero beyond each clip's length; made a chunk of clips at a time (scale 1 stays within memory)."""
    n, D = len(lens), len(u)
    out = np.empty((n, L, D), np.float32)
    idx = np.arange(L)
    for s in range(0, n, 256):
        e = min(n, s + 256)
        x = rng.standard_normal((e - s, L, D), dtype=np.float32)
        x *= scale_d
        span = np.maximum(1, np.round(SPAN * lens[s:e])).astype(np.int64)
        start = (rng.random(e - s) * (lens[s:e] - span + 1)).astype(np.int64)
        on = (idx >= start[:, None]) & (idx < (start + span)[:, None])
        x += (on * (AV_AMP * shown[s:e])[:, None]).astype(np.float32)[:, :, None] * u
        x *= (idx < lens[s:e, None])[:, :, None]
        out[s:e] = x
    return out


def _trimodal_split(rng, spec: LikeSpec, n: int, split: str, emb_rows: np.ndarray, emb: np.ndarray, dirs: dict,
                    scales: dict, zh: dict | None) -> tuple[dict, dict]:
    """One split in MMSA's pickle layout, and its latents."""
    lat = _draw_sentiment(rng, n, SentimentProcess())
    z_t = lat["z_t"]
    Lt, La, Lv = (spec.lengths[m] for m in ("text", "audio", "vision"))
    f = rng.beta(2.0, 3.0, n)
    t_len = _lengths(rng, f, Lt, T_MIN, True)
    a_len = _lengths(rng, f, La, F_MIN, False)
    v_len = _lengths(rng, f, Lv, F_MIN, False)
    ids = np.zeros((n, Lt), np.int64)
    sent_mask = np.zeros((n, Lt), bool)
    texts = []
    for i in range(n):
        b = int(np.clip((z_t[i] + 2) / 4 * len(SENT_EN), 0, len(SENT_EN) - 1))
        tok, pos, txt = _sentence(rng, spec, int(t_len[i]), b, bool(lat["r_a"][i]), bool(lat["r_v"][i]), zh)
        ids[i, :len(tok)] = tok
        sent_mask[i, pos] = True
        texts.append(txt)
    real = np.arange(Lt) < t_len[:, None]  # (n, Lt)
    text = np.empty((n, Lt, spec.dims["text"]), np.float32)
    for s in range(0, n, 256):
        e = min(n, s + 256)
        x = emb[emb_rows[ids[s:e]]]
        x += 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
        amp = (0.2 * real[s:e] + 1.5 * sent_mask[s:e]) * z_t[s:e, None]
        x += amp.astype(np.float32)[:, :, None] * dirs["text"]
        x *= real[s:e, :, None]
        text[s:e] = x
    d = {"raw_text": texts, "id": [f"{split}_{i:05d}" for i in range(n)], "text": text,
         "text_bert": np.stack([ids, real.astype(np.int64), np.zeros_like(ids)], axis=1),
         "audio": _frames(rng, a_len, lat["shown_a"], dirs["audio"], scales["audio"], La), "audio_lengths": a_len,
         "vision": _frames(rng, v_len, lat["shown_v"], dirs["vision"], scales["vision"], Lv), "vision_lengths": v_len}
    raw = z_t + lat["r_a"] * lat["z_a"] + lat["r_v"] * lat["z_v"]
    q = SentimentProcess().agreement  # E[M | what the text shows], as synth.py's text_oracle
    expected = z_t + (lat["r_a"].astype(float) + lat["r_v"]) * (2 * q - 1) * (AV_MAX / 2) * np.sign(z_t)
    den = LABEL_DENOMINATOR[spec.like]

    def grid(x, hi):  # the nearest multiple of 1 / den in [-hi, hi]; + 0.0: no -0.0 in labels.csv
        return np.clip(np.round(x * den) / den, -hi, hi) + 0.0

    if spec.metric_family == "mosi":
        labels = {"M": grid(raw, 3)}
        oracle, text_oracle = raw, expected
    else:
        labels = {"M": grid(raw / 3, 1), "T": grid(z_t / 2, 1), "A": grid(lat["shown_a"] / AV_MAX, 1),
                  "V": grid(lat["shown_v"] / AV_MAX, 1)}
        oracle, text_oracle = raw / 3, expected / 3
    if split != "unlabeled":
        d["regression_labels"] = labels["M"]
        for k in ("T", "A", "V"):
            if k in labels:
                d[f"regression_labels_{k}"] = labels[k]
    return d, {"M": labels["M"], "oracle": oracle, "text_oracle": text_oracle}


def _write_trimodal(spec: LikeSpec, out: Path, name: str, seed: int, scale: float | None) -> Manifest:
    from .mmsa import import_mmsa

    rng = _rng(seed, spec.like)
    zh = _zh_ids() if spec.metric_family == "sims" else None
    used = sorted(set(spec.special_ids.values()) | (set(zh.values()) if zh else
                  {t for _, t in SENT_EN + FILLER_EN + tuple(CUE_EN.values())}))
    emb_rows = np.zeros(max(used) + 1, np.int64)  # token id -> its row of `emb`
    emb_rows[used] = np.arange(len(used))
    emb = rng.normal(0, 0.5, (len(used), spec.dims["text"])).astype(np.float32)
    dirs = {m: _unit(rng, spec.dims[m]) for m in ("text", "audio", "vision")}
    scales = {m: np.exp(rng.uniform(np.log(0.5), np.log(2.0), spec.dims[m])).astype(np.float32)
              for m in ("audio", "vision")}
    sizes = spec.split_sizes(scale)
    parts, lat = {}, {}
    for split, n in sizes.items():
        parts[split], lat[split] = _trimodal_split(rng, spec, n, split, emb_rows, emb, dirs, scales, zh)
    fam = spec.metric_family
    y = lat["test"]["M"]
    reference = {"oracle": metrics.compute(fam, lat["test"]["oracle"], y),
                 "text_oracle": metrics.compute(fam, lat["test"]["text_oracle"], y),
                 "majority": metrics.compute(fam, np.full_like(y, np.median(lat["train"]["M"])), y)}
    prov = {"generator": "msarepro.data.synth_like.write_like", "like": spec.like, "seed": seed,
            "scale": scale if scale is not None else spec.default_scale(), "reference": reference}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        main = tmp / f"{name}.pkl"
        with open(main, "wb") as fh:
            pickle.dump({s: parts.pop(s) for s in ("train", "valid", "test")}, fh, protocol=4)
        unlabeled = None
        if "unlabeled" in parts:
            unlabeled = tmp / f"{name}-unlabeled.pkl"
            with open(unlabeled, "wb") as fh:
                pickle.dump(parts.pop("unlabeled"), fh, protocol=4)
        return import_mmsa(main, out, name=name, family=fam, preset=spec.preset, provenance=prov,
                           unlabeled=unlabeled)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- image-text
def _write_image_text(spec: LikeSpec, out: Path, name: str, seed: int, scale: float | None) -> Manifest:
    from PIL import Image

    from .imagetext import write_image_text_dataset

    rng = _rng(seed, spec.like)
    C = len(spec.class_names)
    priors = CLASS_PRIORS.get(C, tuple([1 / C] * C))
    S = spec.image_shape[-1]
    sizes = spec.split_sizes(scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rows, lat = [], {}
        for split, n in sizes.items():
            y = rng.choice(C, n, p=priors)
            has_word = rng.random(n) < 0.75
            img_cls = np.where(rng.random(n) < 0.6, y, rng.integers(0, C, n))
            for i in range(n):
                words = list(rng.choice(FILLER_POST, rng.integers(4, 21)))
                if has_word[i]:
                    cls_words = CLASS_WORDS[spec.class_names[y[i]]]
                    for w in rng.choice(cls_words, rng.integers(1, 3)):
                        words.insert(int(rng.integers(0, len(words) + 1)), str(w))
                item = f"{split}_{i:05d}"
                rows.append({"split": split, "id": item, "label": int(y[i]), "text": " ".join(words)})
                img = rng.normal(110, 30, (S, S, 3))
                s = S // 3
                r0, c0 = rng.integers(0, S - s, 2)
                img[r0:r0 + s, c0:c0 + s] = COLOURS[img_cls[i]] + rng.normal(0, 15, (s, s, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp / f"{item}.bmp")
            lat[split] = (y, has_word, img_cls)
        y, has_word, img_cls = lat["test"]
        majority = int(np.bincount(lat["train"][0], minlength=C).argmax())
        avg = spec.f1_average
        reference = {"oracle": metrics.compute("cls", np.where(has_word, y, img_cls), y, avg),
                     "text_oracle": metrics.compute("cls", np.where(has_word, y, majority), y, avg),
                     "majority": metrics.compute("cls", np.full_like(y, majority), y, avg)}
        prov = {"generator": "msarepro.data.synth_like.write_like", "like": spec.like, "seed": seed,
                "scale": scale if scale is not None else spec.default_scale(), "reference": reference}
        return write_image_text_dataset(pd.DataFrame(rows), tmp, out, name, spec.class_names, spec.f1_average,
                                        image_size=S, provenance=prov, preset=spec.preset)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_like(like: str, out: str | Path, seed: int = 0, scale: float | None = None,
               name: str | None = None) -> Manifest:
    """Write a canonical dataset in the shapes of the real dataset `like` (a key of LIKE) into `out`.

    scale: fraction of the release's split sizes (None: DEFAULT_TRAIN training clips; 1: the real sizes).
    name: the dataset's name (default synth-like-<like>); its preset is always the real dataset's."""
    if like not in LIKE:
        raise KeyError(f"--like {like!r}: expected one of {', '.join(LIKE)}")
    spec = LIKE[like]
    out = Path(out)
    name = name or spec.name
    write = _write_trimodal if spec.family == "trimodal" else _write_image_text
    return write(spec, out, name, seed, scale)
