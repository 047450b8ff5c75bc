"""MulT: Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019); settings as MMSA publishes.

    text (B, Lt, Dt) -> dropout `text_dropout` (training only)                   MMSA's input dropout on text
    inputs (B, Lm, Dm) -> Conv1D to width d (kernel k_m, conv_kernel_<m>)       per modality m in {l, a, v}
    six cross-modal transformers  X_{m<-n} = CM_{n->m}(X_m, X_n)          `levels` layers each
        each starts like MulT's transformers: sqrt(d) x + sinusoidal positions, embedding dropout (its own mask
        for the queries and for the keys/values); attention dropout `attn_dropout_<n>` (n: the modality attended
        to, as MMSA keys it), relu dropout after the feed-forward ReLU, residual dropout on both branches
    per target m: concat [X_{m<-n1}; X_{m<-n2}] (B, Lm, 2d) -> sqrt(2d) x + positions, embedding dropout ->
        self-attention transformer (max(levels, 3) layers; attention dropout `attn_dropout_self`)
    last real state of each -> concat (B, 6d) -> residual MLP (output dropout) -> output

Unlike MMSA (which attends over padded positions), padding is masked everywhere and the "last state" is the last
real position; the convolutions keep the sequence length (MMSA pads with 0, shortening each sequence by k - 1).
Everything after the per-modality projections is `MulTFusion`, which AE-MT (methods/aemt.py) holds behind its own
pretrained modality encoders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import CrossModalTransformer, dropout, last_valid, sinusoidal_positions, transformer_encoder

MODS = ("text", "audio", "vision")


class MulTFusion(nn.Module):
    """MulT after the modality projections: encoded sequences {m: ((B, Lm, d), mask (B, Lm))} -> cross-modal and
    self-attention transformers -> fused (B, 6d) -> residual MLP -> output (B, out_dim). `cfg` holds MulT.Config's
    fields (dim, heads, levels and the dropouts)."""

    def __init__(self, cfg: MulT.Config, out_dim: int, owner: str = "mult"):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        if d % cfg.heads:  # configs built with dataclasses.replace skip validate(); `owner`: the configured method
            raise ConfigError(f"methods.{owner}.dim ({d}) must be divisible by methods.{owner}.heads "
                              f"({cfg.heads}); change one of them")
        pairs = [(t, s) for t in MODS for s in MODS if s != t]  # (target, source)
        self.cross = nn.ModuleDict({f"{t}<-{s}": CrossModalTransformer(d, cfg.heads, cfg.levels, cfg.relu_dropout,
                                                                       cfg.attn_dropout_over(s), cfg.res_dropout)
                                    for t, s in pairs})
        self.mem = nn.ModuleDict({m: transformer_encoder(2 * d, cfg.heads, max(cfg.levels, 3), dropout=cfg.relu_dropout,
                                                         attn_dropout=cfg.attn_dropout_self,
                                                         res_dropout=cfg.res_dropout, final_norm=True)
                                  for m in MODS})
        self.proj1 = nn.Linear(6 * d, 6 * d)
        self.proj2 = nn.Linear(6 * d, 6 * d)
        self.out = nn.Linear(6 * d, out_dim)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.cfg.embed_dropout, self.training)  # MulT's embedding dropout

    @staticmethod
    def _embed(x: torch.Tensor) -> torch.Tensor:
        """How each of MulT's transformers takes its input: (B, L, D) -> sqrt(D) x + sinusoidal positions."""
        return math.sqrt(x.size(-1)) * x + sinusoidal_positions(x.size(1), x.size(-1), x.device)

    def fuse(self, enc: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Cross-modal and self-attention transformers -> (B, 6d) fused representation."""
        seqs = {m: (self._embed(x), mask) for m, (x, mask) in enc.items()}
        lasts = []
        for t in MODS:
            q, q_mask = seqs[t]
            h = torch.cat([self.cross[f"{t}<-{s}"](self._drop(q), self._drop(seqs[s][0]), seqs[s][1])
                           for s in MODS if s != t], dim=-1)  # (B, Lt, 2d)
            h = self.mem[t](self._drop(self._embed(h)), src_key_padding_mask=~q_mask)
            lasts.append(last_valid(h, q_mask))  # (B, 2d)
        return torch.cat(lasts, dim=-1)  # (B, 6d)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """(B, 6d) fused -> residual MLP -> (B, out_dim)."""
        r = self.proj2(dropout(F.relu(self.proj1(h)), self.cfg.out_dropout, self.training)) + h
        return self.out(r)


@register("mult")
class MulT(Method):
    sweep_priority = 1  # the second longest (Snakemake starts it first)
    @dataclass(frozen=True)
    class Config(MethodConfig):
        # Defaults: the original MulT code's (Tsai et al.'s repository); params.yaml carries MMSA's per dataset.
        dim: int = 30  # MMSA: dst_feature_dim_nheads (50/30/50/30 on MOSI/MOSEI/SIMS/SIMS v2)
        heads: int = 6
        levels: int = 4  # cross-modal layers (nlevels)
        conv_kernel_text: int = 1  # Conv1D kernel k_m per modality (MMSA conv1d_kernel_size_l/_a/_v); odd,
        conv_kernel_audio: int = 1  # the sequence length is kept
        conv_kernel_vision: int = 1
        conv_kernel: int = 0  # > 0: one kernel for every modality, overriding the three above; 0 = per modality
        attn_dropout_text: float = 0.1  # on attention weights over text (a<-t, v<-t): MMSA attn_dropout
        attn_dropout_audio: float = 0.0  # over audio (t<-a, v<-a): MMSA attn_dropout_a
        attn_dropout_vision: float = 0.0  # over vision (t<-v, a<-v): MMSA attn_dropout_v
        attn_dropout_self: float = 0.1  # the self-attention transformers (MMSA gives them attn_dropout)
        relu_dropout: float = 0.1  # after the feed-forward ReLU
        res_dropout: float = 0.1  # on the attention and feed-forward branches before each residual sum
        embed_dropout: float = 0.25  # on every transformer's input (after scaling and positions)
        out_dropout: float = 0.0  # in the residual output MLP (MMSA output_dropout)
        text_dropout: float = 0.0  # on the text features before the projection (MMSA text_dropout)

        def kernel(self, modality: str) -> int:
            """The Conv1D kernel k_m of `modality`: `conv_kernel` when set, else conv_kernel_<modality>."""
            return self.conv_kernel or getattr(self, f"conv_kernel_{modality}")

        def attn_dropout_over(self, source: str) -> float:
            """Attention dropout of a cross-modal transformer whose keys/values are `source`."""
            return getattr(self, f"attn_dropout_{source}")

        def validate(self, where: str) -> None:  # also AE-MT's (its Config extends this one): `where` names it
            if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
                raise ConfigError(f"{where}.dim ({self.dim}) must be a positive multiple of {where}.heads "
                                  f"({self.heads}); change one of them")
            if self.conv_kernel and (self.conv_kernel < 0 or self.conv_kernel % 2 == 0):
                raise ConfigError(f"{where}.conv_kernel: {self.conv_kernel}; expected an odd number >= 1 "
                                  "(the sequence length is kept), or 0 for the per-modality kernels")
            for m in MODS:
                k = getattr(self, f"conv_kernel_{m}")
                if k < 1 or k % 2 == 0:
                    raise ConfigError(f"{where}.conv_kernel_{m}: {k}; expected an odd number >= 1 "
                                      "(the sequence length is kept)")
            rates = ("attn_dropout_text", "attn_dropout_audio", "attn_dropout_vision", "attn_dropout_self",
                     "relu_dropout", "res_dropout", "embed_dropout", "out_dropout", "text_dropout")
            for key in rates:
                if not 0.0 <= getattr(self, key) < 1.0:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected a rate in [0, 1)")

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        d = cfg.dim
        self.proj = nn.ModuleDict({m: nn.Conv1d(manifest.modalities[m]["dim"], d, cfg.kernel(m),
                                                padding=(cfg.kernel(m) - 1) // 2, bias=False) for m in MODS})
        self.fusion = MulTFusion(cfg, self.out_dim, self.name)

    def encode_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality: (B, Lm, Dm) -> (sequence (B, Lm, d), mask (B, Lm)); text dropout first (training)."""
        out = {}
        for m in MODS:
            x = batch[m]
            if m == "text":
                x = dropout(x, self.cfg.text_dropout, self.training)
            x = self.proj[m](x.transpose(1, 2)).transpose(1, 2)  # (B, Lm, d)
            out[m] = (x, batch[f"{m}_mask"])
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.fusion.fuse(self.encode_inputs(batch))
        return {"pred": self.head(self.fusion.output(h)), "fused": h}
