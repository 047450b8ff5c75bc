"""Test-time perturbations of a loaded batch (data/loader.py: `<name>_mask` (B, L) True on real positions, `index`
(B,) the rows in the split). Every function returns a new dict: the input batch is never changed, masks, lengths
and labels are passed on untouched (a dropped position stays a position: the model still sees the clip's length).

Families (`KINDS`; one `Perturbation` = a kind, a severity and the modalities it touches):

    random_drop@r   LNLN's protocol (Zhang et al., NeurIPS 2024): every real position of every chosen modality is
                    dropped independently with probability r. Token ids: a dropped token becomes the tokenizer's
                    unknown token, the first ([CLS]) and the last real token ([SEP]) are kept. Audio, vision and
                    text given as features: a dropped position's vector becomes zero (for text features this is
                    msarepro's extension; LNLN drops BERT ids only).
    remove@TA       whole modalities removed (letters T, A, V, I): features and images all zero on real positions;
                    token ids all [UNK] except the first and last real token (a text of unknown words of the
                    clip's length: what random_drop gives at r = 1).
    noise@snr       Gaussian noise on real positions of feature sequences at `snr` dB relative to each sample's
                    signal power P = mean of x^2 over its real positions and dimensions: x + sqrt(P / 10^(snr/10))
                    * N(0, 1). Token ids are discrete and left alone.
    shift@k         audio and vision moved k frames later (k < 0: earlier) against the text, within each clip's
                    true length: x'[t] = x[t - k] where 0 <= t - k < n, zero elsewhere.
    token_drop@r    image-text: random_drop of the text's token ids (in the method's own tokenizer).
    patch_mask@r    image-text: each 16 x 16-pixel patch of the image zeroed with probability r.

Randomness. Evaluation (seed given, default `EVAL_SEED` = 1111, LNLN's): each sample draws from its own generator,
seeded from (seed, the modality, the sample's row in the split), so the masks and the noise depend on neither
the batch size, the batch order nor the other samples, and are the same for every checkpoint, method and seed;
every modality has its own stream (LNLN re-seeds per modality). We draw per sample rather than for the whole
split at once, as LNLN's numpy code does, so that the drops are the same whatever batches a method's predict
pass uses (and for lazily loaded splits), at the cost of one small generator per sample. The uniforms do not
depend on r, so the drops at a rate contain those at every smaller rate. Training (seed None): one draw per
batch from `generators` ({modality: torch.Generator}) or, without one, from torch's global RNG (which the
training loop seeds and checkpoints, so that a resumed run draws the same drops). A rate is a float or a
per-sample tensor (B,).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import torch

EVAL_SEED = 1111  # LNLN's evaluation seed
PATCH = 16  # pixels per side of a masked image patch
TRIMODAL = ("text", "audio", "vision")
IMAGE_TEXT = ("text", "image")
FAMILY_MODALITIES = {"trimodal": TRIMODAL, "image_text": IMAGE_TEXT}
LETTERS = {"T": "text", "A": "audio", "V": "vision", "I": "image"}
# The batch keys that carry each modality (a model reads some of them: text features or token ids).
MODALITY_KEYS = {"text": ("text", "text_ids", "clip_ids"), "audio": ("audio",), "vision": ("vision",),
                 "image": ("image",)}
ID_KEYS = ("text_ids", "clip_ids")


@dataclass(frozen=True)
class SpecialIds:
    """The special token ids of one tokenizer (robustness/special.py finds them; None where it has no such token,
    e.g. CLIP's has no [CLS]). Only `unk` is used: the first and last real tokens are kept by position."""
    pad: int | None
    cls: int | None
    sep: int | None
    unk: int


Special = Mapping[str, SpecialIds]  # batch key ("text_ids", "clip_ids") -> its tokenizer's special ids


# ---- randomness -------------------------------------------------------------------------------------------------

def sample_seed(seed: int, stream: str, row: int) -> int:
    """A 63-bit seed for one sample's draws: SHA-256 of (evaluation seed, stream, row in the split)."""
    digest = hashlib.sha256(f"{seed}|{stream}|{row}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def _per_sample(batch: dict, stream: str, seed: int, sizes: Sequence[tuple[int, ...]], pad_to: tuple[int, ...],
                draw: Callable, fill: float) -> torch.Tensor:
    """(B, *pad_to): row b holds draw(size_b, generator seeded by (seed, stream, row b)), `fill` elsewhere."""
    out = torch.full((len(sizes), *pad_to), fill)
    for b, (row, size) in enumerate(zip(batch["index"].tolist(), sizes)):
        g = torch.Generator().manual_seed(sample_seed(seed, stream, row))
        out[(b, *(slice(0, s) for s in size))] = draw(size, generator=g)
    return out


def uniforms(batch: dict, key: str, real: torch.Tensor, seed: int | None,
             generators: Mapping[str, torch.Generator] | None, modality: str) -> torch.Tensor:
    """U(0, 1) draws (B, L) for the positions of batch[key] (on real's device): per sample when `seed` is given
    (stream: the modality, so two tokenizations of one text, INFIG's text_ids and clip_ids, share their draws
    position by position; 1.0 on padding), else one draw from generators[modality] or torch's global RNG."""
    if seed is not None:
        lens = real.sum(1).tolist()
        u = _per_sample(batch, modality, seed, [(n,) for n in lens], (real.shape[1],), torch.rand, 1.0)
        return u.to(real.device)
    g = (generators or {}).get(modality)
    device = g.device if g is not None else real.device
    return torch.rand(real.shape, generator=g, device=device).to(real.device)


def _rate(rate, like: torch.Tensor) -> torch.Tensor:
    """A float or a (B,) tensor -> (B, 1) on like's device."""
    r = torch.as_tensor(rate, dtype=torch.float32, device=like.device)
    return (r.expand(like.shape[0]) if r.dim() == 0 else r.reshape(-1)).unsqueeze(1)


# ---- building blocks ---------------------------------------------------------------------------------------------

def drop_mask(real: torch.Tensor, rate, u: torch.Tensor) -> torch.Tensor:
    """(B, L) True where a real position is dropped: u < rate (rate a float or per sample (B,)); r = 0 drops
    nothing, r = 1 everything real."""
    return real & (u < _rate(rate, u))


def protect_ends(real: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """`dropped` with each sample's first and last real position kept ([CLS] and [SEP] of token ids)."""
    pos = torch.arange(real.shape[1], device=real.device)[None, :]
    last = real.long().sum(1, keepdim=True) - 1
    return dropped & (pos != 0) & (pos != last)


def apply_drop(batch: dict, key: str, dropped: torch.Tensor, special: Special | None = None) -> torch.Tensor:
    """batch[key] with the `dropped` (B, L) positions replaced: token ids by [UNK] (first and last real token
    kept), feature vectors by zero."""
    x = batch[key]
    if key in ID_KEYS:
        unk = _special(special, key).unk
        inner = protect_ends(batch[f"{key}_mask"], dropped)  # [CLS] and the last real token stay
        return torch.where(inner, torch.full_like(x, unk), x)
    return torch.where(dropped.unsqueeze(-1), torch.zeros((), dtype=x.dtype, device=x.device), x)


def _special(special: Special | None, key: str) -> SpecialIds:
    if not special or key not in special:
        raise ValueError(f"dropping {key} needs its tokenizer's special ids (robustness.special.special_ids); "
                         "none were given")
    return special[key]


def _keys(batch: dict, modalities: Iterable[str], keys: Iterable[str] | None) -> list[tuple[str, str]]:
    """(modality, batch key) pairs present in the batch (and in `keys`, the ones the model reads, when given)."""
    allowed = None if keys is None else set(keys)
    return [(m, k) for m in modalities for k in MODALITY_KEYS[m]
            if k in batch and (allowed is None or k in allowed)]


# ---- the perturbations ----------------------------------------------------------------------------------------

def random_drop(batch: dict, rate, modalities: Sequence[str] = TRIMODAL, *, special: Special | None = None,
                seed: int | None = None, generators: Mapping[str, torch.Generator] | None = None,
                keys: Iterable[str] | None = None) -> dict:
    """LNLN's random drop at `rate` (float, or (B,) per sample: e.g. LNLN's training draws) on every sequence key
    of `modalities` (text covers `text`, `text_ids`, `clip_ids`; `keys` limits it to what a model reads). Images
    are left to `patch_mask`. seed: evaluation draws per sample; None: training draws from `generators`
    ({modality: Generator}) or the global RNG. -> a new batch."""
    out = dict(batch)
    for m, k in _keys(batch, modalities, keys):
        if k == "image":
            continue
        real = batch[f"{k}_mask"]
        dropped = drop_mask(real, rate, uniforms(batch, k, real, seed, generators, m))
        out[k] = apply_drop(batch, k, dropped, special)
    return out


def token_drop(batch: dict, rate, *, special: Special | None = None, seed: int | None = None,
               generators: Mapping[str, torch.Generator] | None = None, keys: Iterable[str] | None = None) -> dict:
    """Image-text: random_drop of the text's token ids only (each id key in its own tokenizer's positions)."""
    return random_drop(batch, rate, ("text",), special=special, seed=seed, generators=generators, keys=keys)


def patch_mask(batch: dict, rate, *, patch: int = PATCH, seed: int | None = None,
               generators: Mapping[str, torch.Generator] | None = None) -> dict:
    """batch["image"] (B, C, H, W) with each patch x patch block (the last row and column of blocks may be cut by
    the border) set to zero with probability `rate`. -> a new batch."""
    img = batch["image"]
    B, _, H, W = img.shape
    gh, gw = -(-H // patch), -(-W // patch)
    if seed is not None:
        u = _per_sample(batch, "image_patches", seed, [(gh, gw)] * B, (gh, gw), torch.rand, 1.0).to(img.device)
    else:
        g = (generators or {}).get("image")
        u = torch.rand((B, gh, gw), generator=g, device=g.device if g is not None else img.device).to(img.device)
    cells = u < _rate(rate, img).unsqueeze(-1)  # (B, gh, gw)
    pixels = cells.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, :H, :W]
    return {**batch, "image": torch.where(pixels.unsqueeze(1), torch.zeros((), dtype=img.dtype), img)}


def remove(batch: dict, modalities: Sequence[str], *, special: Special | None = None,
           keys: Iterable[str] | None = None) -> dict:
    """Whole modalities removed: sequences as random_drop at r = 1 (features zero on real positions; token ids
    [UNK] but the first and last real token), images all zero. -> a new batch."""
    out = dict(batch)
    for _, k in _keys(batch, modalities, keys):
        if k == "image":
            out[k] = torch.zeros_like(batch[k])
        else:
            out[k] = apply_drop(batch, k, batch[f"{k}_mask"], special)
    return out


def signal_power(x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(B,) mean of x^2 over each sample's real positions and feature dimensions (x (B, L, D), real (B, L))."""
    sq = (x.float() ** 2).sum(-1) * real
    return sq.sum(1) / (real.sum(1).clamp(min=1) * x.shape[-1])


def gaussian_noise(batch: dict, snr_db: float, modalities: Sequence[str] = TRIMODAL, *, seed: int | None = EVAL_SEED,
                   generators: Mapping[str, torch.Generator] | None = None,
                   keys: Iterable[str] | None = None) -> dict:
    """Feature sequences of `modalities` plus Gaussian noise at `snr_db` dB against each sample's own signal power
    (`signal_power`), on real positions only; snr_db = inf changes nothing. Token ids and images are left alone.
    seed: per-sample draws (stream "noise/<modality>"); None: from generators[modality] or the global RNG."""
    out = dict(batch)
    if math.isinf(snr_db) and snr_db > 0:
        return out
    for m, k in _keys(batch, modalities, keys):
        if k in ID_KEYS or k == "image":
            continue
        x, real = batch[k], batch[f"{k}_mask"]
        if seed is None:  # training draws: one per batch
            g = (generators or {}).get(m)
            n = torch.randn(x.shape, generator=g, device=g.device if g is not None else x.device).to(x.device)
            sigma = (signal_power(x, real) / 10 ** (snr_db / 10)).sqrt()  # (B,)
            noisy = (x.float() + sigma[:, None, None] * n).to(x.dtype)
            out[k] = torch.where(real.unsqueeze(-1), noisy, x)
            continue
        y = x.clone()  # evaluation: each sample on its own, so that its result depends on no batch-mate
        for b, (row, length) in enumerate(zip(batch["index"].tolist(), real.sum(1).tolist())):
            g = torch.Generator().manual_seed(sample_seed(seed, f"noise/{m}", row))
            xs = x[b, :length].float()
            noise = torch.randn(xs.shape, generator=g).to(x.device)
            sigma = ((xs.double() ** 2).mean() / 10 ** (snr_db / 10)).sqrt().float()
            y[b, :length] = (xs + sigma * noise).to(x.dtype)
        out[k] = y
    return out


def shift(batch: dict, frames: int, modalities: Sequence[str] = ("audio", "vision"), *,
          keys: Iterable[str] | None = None) -> dict:
    """Audio / vision moved `frames` positions later (negative: earlier) relative to the text, inside each clip's
    true length n: x'[t] = x[t - frames] for 0 <= t - frames < n, zero for the frames shifted in; padding stays
    as it was. Text keys are never shifted (the text is the reference). -> a new batch."""
    out = dict(batch)
    k_ = int(frames)
    if k_ == 0:
        return out
    for _, k in _keys(batch, [m for m in modalities if m in ("audio", "vision")], keys):
        x, real = batch[k], batch[f"{k}_mask"]
        L = x.shape[1]
        src = torch.arange(L, device=x.device)[None, :] - k_  # (1, L) source position of each target
        n = real.long().sum(1, keepdim=True)  # (B, 1)
        valid = (src >= 0) & (src < n) & real  # (B, L)
        gathered = x.gather(1, src.clamp(0, L - 1).expand(x.shape[0], L).unsqueeze(-1).expand_as(x))
        out[k] = torch.where(valid.unsqueeze(-1), gathered,
                             torch.where(real.unsqueeze(-1), torch.zeros((), dtype=x.dtype, device=x.device), x))
    return out


# ---- the registry -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """One family of perturbations: what its severity means, which dataset families it applies to, the severity
    that changes nothing, and the modalities it touches by default."""
    families: tuple[str, ...]
    unit: str
    identity: float | None
    default_modalities: dict[str, tuple[str, ...]]  # dataset family -> modalities


KINDS: dict[str, Kind] = {
    "random_drop": Kind(("trimodal",), "missing rate r", 0.0, {"trimodal": TRIMODAL}),
    "remove": Kind(("trimodal", "image_text"), "modalities removed (letters)", None, {}),
    "noise": Kind(("trimodal",), "SNR in dB (lower is noisier)", math.inf, {"trimodal": TRIMODAL}),
    "shift": Kind(("trimodal",), "frames (audio/vision later than text)", 0.0, {"trimodal": ("audio", "vision")}),
    "token_drop": Kind(("image_text",), "missing rate r of text tokens", 0.0, {"image_text": ("text",)}),
    "patch_mask": Kind(("image_text",), "rate r of 16x16 image patches", 0.0, {"image_text": ("image",)}),
}


@dataclass(frozen=True)
class Perturbation:
    """A kind (KINDS) at a severity on a set of modalities (full names, in the family's order). remove's severity
    is 1.0 (the whole modality)."""
    name: str
    severity: float
    modalities: tuple[str, ...]

    @property
    def label(self) -> str:
        if self.name == "remove":
            return f"remove@{letters(self.modalities)}"
        return f"{self.name}@{self.severity:g}"

    @property
    def identity(self) -> bool:
        """True when the perturbation changes nothing (rate 0, infinite SNR, no shift)."""
        return KINDS[self.name].identity is not None and self.severity == KINDS[self.name].identity

    def apply(self, batch: dict, special: Special | None = None, seed: int = EVAL_SEED,
              keys: Iterable[str] | None = None) -> dict:
        """The perturbed batch, drawn per sample from `seed` (evaluation); `keys`: the batch keys a model reads."""
        name, s, mods = self.name, self.severity, self.modalities
        if name == "random_drop":
            return random_drop(batch, s, mods, special=special, seed=seed, keys=keys)
        if name == "token_drop":
            return token_drop(batch, s, special=special, seed=seed, keys=keys)
        if name == "patch_mask":
            return patch_mask(batch, s, seed=seed) if keys is None or "image" in keys else dict(batch)
        if name == "remove":
            return remove(batch, mods, special=special, keys=keys)
        if name == "noise":
            return gaussian_noise(batch, s, mods, seed=seed, keys=keys)
        if name == "shift":
            return shift(batch, int(s), mods, keys=keys)
        raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(KINDS)}")


def letters(modalities: Iterable[str]) -> str:
    back = {v: k for k, v in LETTERS.items()}
    return "".join(back[m] for m in modalities)


def ordered(modalities: Iterable[str], family: str) -> tuple[str, ...]:
    """`modalities` in the family's order (text, audio, vision / text, image); ValueError on one it lacks."""
    mods, known = set(modalities), FAMILY_MODALITIES[family]
    bad = sorted(mods - set(known))
    if bad:
        raise ValueError(f"modalities {', '.join(bad)} are not {family} modalities ({', '.join(known)})")
    return tuple(m for m in known if m in mods)


def parse(text: str, family: str, modalities: Iterable[str] | None = None) -> Perturbation:
    """'random_drop@0.3', 'remove@TA', 'noise@10' (dB), 'shift@3', 'token_drop@0.2', 'patch_mask@0.5' -> a
    Perturbation for a dataset `family`. `modalities` (full names) narrows the kind's default modalities (not
    remove's, which names its own). ValueError with what is accepted."""
    name, sep, value = text.strip().partition("@")
    if name not in KINDS or not sep or not value:
        raise ValueError(f"perturbation {text!r}: expected NAME@SEVERITY with NAME one of {', '.join(KINDS)} "
                         "(e.g. random_drop@0.3, remove@TA, noise@10, shift@3)")
    kind = KINDS[name]
    if family not in kind.families:
        raise ValueError(f"perturbation {text!r} applies to {'/'.join(kind.families)} datasets, not {family}")
    if name == "remove":
        unknown = sorted(set(value) - set(LETTERS))
        if unknown or not value:
            raise ValueError(f"perturbation {text!r}: remove@ takes modality letters {', '.join(LETTERS)}")
        return Perturbation(name, 1.0, ordered([LETTERS[c] for c in value], family))
    try:
        severity = float(value)
    except ValueError:
        raise ValueError(f"perturbation {text!r}: the severity ({kind.unit}) must be a number") from None
    if name in ("random_drop", "token_drop", "patch_mask") and not 0 <= severity <= 1:
        raise ValueError(f"perturbation {text!r}: a rate must lie in [0, 1]")
    if name == "shift" and severity != int(severity):
        raise ValueError(f"perturbation {text!r}: a shift is a whole number of frames")
    mods = kind.default_modalities[family]
    if modalities is not None:
        mods = tuple(m for m in mods if m in set(modalities))
        if not mods:
            raise ValueError(f"perturbation {text!r} touches {', '.join(kind.default_modalities[family])}; "
                             f"none of them is among the chosen modalities ({', '.join(modalities)})")
    return Perturbation(name, severity, mods)
