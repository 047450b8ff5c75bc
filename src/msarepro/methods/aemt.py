"""AE-MT: autoencoder-based self-supervised pretraining, then MulT with a contrastive auxiliary task
(Feng, Wang, Cao, Lin; Information Sciences 2024). Fine-tuning stage (section 3.3); pretraining is in pretrain/.

    text features (or a fine-tuned text encoder): the first word's vector (section 3.2.1; `text_input`)
    audio, vision (and a `sequence` text) -> average-pooled to `pool_len` (section 4.2.1)
    text -> MulT's text dropout (training); per modality: Conv1D with kernel k_m (eq. 1; MulT's conv_kernel_<m>)
    + encoder E_m (eq. 2), initialised from `msarepro pretrain`'s encoders.pt
    MulT's fusion (MulTFusion: six cross-modal transformers, concatenation per target, self-attention, FC;
    eqs. 11-14, methods/mult.py), held by this model next to its own encoders and contrastive term
    L = L_senti (MSE, eq. 15) + lambda_2 * L_con (eqs. 16-18)                                       (eq. 19)
Contrastive task: the anchor is the fused representation Z_i (B, 6d) of sample i; the strong positive Z_i^sp is
the fused representation of the same inputs with a dropout mask (eq. 16); weak positives are the other samples
of the batch with the same polarity, negatives those with the opposite one; cosine similarity (eq. 17).

Ablations (Table 5): contrastive_weight=0 (w/o CL); encoder=lstm (w/o TR, pretrained likewise);
w/o MCD is pretraining's `consistency_weight: 0` (pretrain with it into another directory and point
`pretrained` there); pretrained="" fine-tunes from random initialisation (no pretraining).
Choices the paper leaves open (documented, switchable): eq. 18 sums over anchors, here averaged (as eq. 15
does) so that lambda_2 does not scale with the batch size, and anchors without any negative in the batch are
skipped; the temperature and the strong positive's dropout rate are not printed. The paper says weak positives
share the "unimodal labels"; `weak_positives: unimodal` requires equal T, A and V polarities (on datasets
without unimodal labels M stands in, as the paper does for MOSEI); the default uses M's polarity.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..io import sha256_file
from . import register
from .base import Method
from .blocks import dropout
from .modality_encoder import MODS, TEXT_INPUTS, EncoderSpec, ModalityEncoder, encoder_inputs
from .mult import MulT, MulTFusion
from .text_encoder import TextEncoder


def polarity(y: torch.Tensor, metric_family: str) -> torch.Tensor:
    """(B,) labels -> (B,) bool "positive", by the dataset's Acc-2 convention: MOSI/MOSEI non-negative (Has0),
    CH-SIMS bins (0, 1] (neutral counts as negative)."""
    return y >= 0 if metric_family == "mosi" else y > 0


def contrastive_loss(z: torch.Tensor, z_sp: torch.Tensor, weak_pos: torch.Tensor, neg: torch.Tensor,
                     temperature: float, denominator: str = "negatives") -> torch.Tensor:
    """Eqs. 17-18. z, z_sp: (B, D) anchors and their strong positives; weak_pos, neg: (B, B) bool (row i: which
    samples of the batch are weak positives / negatives of anchor i; the diagonal is ignored).

    loss_i = -log[(exp(s(z_i, z_i^sp)/t) + sum_k exp(s(z_i, z_k^wp)/t)) / D_i] with D_i = sum_j exp(s(z_i, z_j^neg)/t)
    as printed ("negatives") or D_i = numerator + sum_j exp(...) ("all", the InfoNCE form). Mean over anchors that
    have at least one negative ("negatives") or over all anchors ("all").
    """
    zn, spn = F.normalize(z, dim=-1), F.normalize(z_sp, dim=-1)
    s_sp = (zn * spn).sum(-1, keepdim=True) / temperature  # (B, 1), eq. 17
    s = zn @ zn.t() / temperature  # (B, B)
    off = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    minus_inf = torch.finfo(s.dtype).min
    pos_logits = torch.cat([s_sp, s.masked_fill(~(weak_pos & off), minus_inf)], dim=1)  # (B, 1 + B)
    neg_logits = s.masked_fill(~(neg & off), minus_inf)  # (B, B)
    log_num = torch.logsumexp(pos_logits, dim=1)
    if denominator == "negatives":
        has_neg = (neg & off).any(1)
        if not has_neg.any():
            return z.sum() * 0.0
        per = torch.logsumexp(neg_logits, dim=1) - log_num
        return per[has_neg].mean()
    if denominator == "all":
        return (torch.logsumexp(torch.cat([pos_logits, neg_logits], dim=1), dim=1) - log_num).mean()
    raise ValueError(f"contrastive denominator {denominator!r}: expected 'negatives' or 'all'")


@register("aemt")
class AEMT(Method):
    sweep_priority = 2  # the longest run per epoch: MulT's fusion over 2B rows (Snakemake starts it first)
    uses_pretraining = True  # its runs load the `pretrain` stage's encoders.pt

    @dataclass(frozen=True)
    class Config(MulT.Config):  # MulT's fields configure the fusion
        # dir with encoders.pt; "" = random init. {dataset}: the manifest's name; {settings}: the key of the
        # pretraining settings (methods.pretrain_settings), so variants with other pretraining get their own encoders
        pretrained: str = "pretrain/{dataset}/{settings}"
        text_encoder: str = "features"  # see methods/text_encoder.py
        encoder: str = "transformer"  # E_m: transformer | lstm (Table 5, w/o TR)
        encoder_layers: int = 3  # Table 2
        encoder_dropout: float = 0.1
        pool_len: int = 0  # common length of all modalities after average pooling (section 4.2.1); 0 = off
        contrastive_weight: float = 1.5  # lambda_2, eq. 19 (Table 2); 0 = w/o CL (Table 5)
        temperature: float = 0.5  # tau, eq. 18 (not printed)
        sp_dropout: float = 0.1  # rate of the strong positive's dropout mask, eq. 16 (not printed)
        weak_positives: str = "polarity"  # polarity (of M) | unimodal (T, A, V polarities all equal)
        contrastive_denominator: str = "negatives"  # negatives (eq. 18 as printed) | all (InfoNCE form)
        text_input: str = "first_word"  # first_word (section 3.2.1) | sequence (every token, pooled)

        def validate(self, where: str) -> None:
            choices = {"encoder": ("transformer", "lstm"), "weak_positives": ("polarity", "unimodal"),
                       "contrastive_denominator": ("negatives", "all"), "text_input": TEXT_INPUTS}
            for key, ok in choices.items():
                if getattr(self, key) not in ok:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)!r}; expected one of {', '.join(ok)}")
            if not 0.0 <= self.sp_dropout < 1.0:
                raise ConfigError(f"{where}.sp_dropout: {self.sp_dropout}; expected a rate in [0, 1)")
            if self.temperature <= 0:
                raise ConfigError(f"{where}.temperature: {self.temperature}; expected > 0")

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        self.fusion = MulTFusion(cfg, self.out_dim, self.name)
        self.text = TextEncoder(cfg.text_encoder, manifest)
        in_dims = {"text": self.text.out_dim, "audio": manifest.modalities["audio"]["dim"],
                   "vision": manifest.modalities["vision"]["dim"]}
        self.encoders = nn.ModuleDict({m: ModalityEncoder(in_dims[m], self.encoder_spec(cfg), m) for m in MODS})

    @staticmethod
    def encoder_spec(cfg: Config) -> EncoderSpec:
        """The modality encoders' architecture; pretraining builds its autoencoders from the same fields."""
        return EncoderSpec(dim=cfg.dim, heads=cfg.heads, layers=cfg.encoder_layers, kernel_text=cfg.kernel("text"),
                           kernel_audio=cfg.kernel("audio"), kernel_vision=cfg.kernel("vision"), arch=cfg.encoder,
                           dropout=cfg.encoder_dropout, pool_len=cfg.pool_len, text_input=cfg.text_input)

    @classmethod
    def pretraining_settings(cls, cfg: Config) -> dict:
        """Pretraining builds its autoencoders from the encoder spec and reads nothing else of this Config."""
        return cls.encoder_spec(cfg).as_dict()

    def pretrained_dir(self) -> Path | None:
        return Path(self.cfg.pretrained.format(dataset=self.manifest.name)) if self.cfg.pretrained else None

    def on_train_start(self) -> dict:
        """Initialise the modality encoders from pretraining's encoders.pt; returns its path, SHA-256 and the pool
        it was pretrained on (`pretrain.pool` and its clip count; None for an encoders.pt older than that record)."""
        d = self.pretrained_dir()
        if d is None:
            return {}
        f = d / "encoders.pt"
        if not f.exists():
            raise FileNotFoundError(
                f"{f}: pretrained AE-MT encoders not found. Run `msarepro pretrain --dataset {self.manifest.name} "
                f"--out {d}` (or `dvc repro pretrain`), or set methods.aemt.pretrained='' to fine-tune from random "
                "initialisation.")
        ck = torch.load(f, map_location="cpu", weights_only=True)
        want = self.encoder_spec(self.cfg).as_dict()
        got = ck["spec"]
        diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
        if diff:
            raise ConfigError(f"{f}: pretrained with a different encoder architecture ("
                              + ", ".join(f"{k}: pretrained {a!r}, methods.aemt wants {b!r}" for k, (a, b) in diff.items())
                              + "). Re-run `msarepro pretrain` (dvc repro pretrain) with these settings.")
        for m in MODS:
            if ck["in_dims"][m] != self.encoders[m].in_dim:
                raise ConfigError(f"{f}: the {m} encoder was pretrained on {ck['in_dims'][m]}-d inputs, but this "
                                  f"model feeds it {self.encoders[m].in_dim}-d ones (text_encoder="
                                  f"{self.cfg.text_encoder!r}); pretrain on matching features or use features.")
            self.encoders[m].load_state_dict(ck["encoders"][m])
        return {"pretrained_encoders": {"path": str(f), "sha256": sha256_file(f), "pool": ck.get("pool"),
                                        "pool_size": ck.get("pool_size")}}

    def encode_inputs(self, batch: dict[str, torch.Tensor], input_dropout: float = 0.0, pair: bool = False):
        """Per modality: (B, Lm, Dm) -> first word / pooled -> [dropout mask, eq. 16] -> H_m (B, L, d), mask (B, L).
        The text also gets MulT's text dropout (`text_dropout`, training only) before its encoder. `pair`: the
        inputs twice along the batch, (2B, ...): the first B as they are, the second B the strong positives
        (`input_dropout` applied to them only), so that one pass of the encoders and the fusion serves both."""
        text, text_mask = self.text(batch)
        inputs = encoder_inputs({"text": (text, text_mask), "audio": (batch["audio"], batch["audio_mask"]),
                                 "vision": (batch["vision"], batch["vision_mask"])}, self.encoder_spec(self.cfg))
        out = {}
        for m, (x, mask) in inputs.items():
            if pair:
                x, mask = torch.cat([x, x]), torch.cat([mask, mask])  # (2B, L, D)
            if m == "text":
                x = dropout(x, self.cfg.text_dropout, self.training)
            if input_dropout > 0:
                n = x.size(0) // 2 if pair else 0  # the strong positives' rows
                keep = (torch.rand_like(x[n:]) >= input_dropout).to(x.dtype)  # X^sp = dropout(X): entries set to 0
                x = torch.cat([x[:n], x[n:] * keep]) if pair else x * keep
            out[m] = (self.encoders[m](x, mask), mask)  # eqs. 1-2
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pair = self.training and self.cfg.contrastive_weight > 0  # Z and Z^sp (eq. 16) in one batch of 2B
        h = self.fusion.fuse(self.encode_inputs(batch, self.cfg.sp_dropout if pair else 0.0, pair))
        h, h_sp = h.chunk(2) if pair else (h, None)  # the fused representation Z (B, 6d), eqs. 11-13
        out = {"pred": self.head(self.fusion.output(h)), "fused": h}  # eq. 14
        if pair:
            out["fused_sp"] = h_sp  # Z^sp, eq. 16
        return out

    def contrast_masks(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, B) bool weak positives and negatives from label polarities."""
        fam = self.manifest.metric_family
        pol = polarity(batch["y"], fam)
        neg = pol[:, None] != pol[None, :]
        if self.cfg.weak_positives == "unimodal" and all(f"y_{c}" in batch for c in "TAV"):
            same = torch.ones_like(neg)
            for c in "TAV":
                pc = polarity(batch[f"y_{c}"], fam)
                same &= pc[:, None] == pc[None, :]
            return same, neg
        return ~neg, neg

    def losses(self, out, batch, epoch):
        terms = {"senti": self.task_loss(out["pred"], batch["y"])}  # eq. 15
        if "fused_sp" in out:
            weak_pos, neg = self.contrast_masks(batch)
            con = contrastive_loss(out["fused"], out["fused_sp"], weak_pos, neg, self.cfg.temperature,
                                   self.cfg.contrastive_denominator)  # eq. 18
            terms["contrastive"] = self.cfg.contrastive_weight * con  # eq. 19
        return terms
