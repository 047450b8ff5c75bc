"""MulT: Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019); settings as MMSA publishes.

    inputs (B, Lm, Dm) -> Conv1D to width d (kernel k_m)                      per modality m in {l, a, v}
    + scaled sinusoidal positions, embedding dropout
    six cross-modal transformers  X_{m<-n} = CM_{n->m}(X_m, X_n)          `levels` layers each
    per target m: concat [X_{m<-n1}; X_{m<-n2}] (B, Lm, 2d) -> self-attention transformer (max(levels, 3))
    last real state of each -> concat (B, 6d) -> residual MLP -> output

Unlike MMSA (which attends over padded positions), padding is masked everywhere and the "last state" is the last
real position. Everything after the per-modality projections is `MulTFusion`, which AE-MT (methods/aemt.py) holds
behind its own pretrained modality encoders.
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
from .blocks import CrossModalTransformer, last_valid, sinusoidal_positions, transformer_encoder

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
                                                                       cfg.attn_dropout) for t, s in pairs})
        self.mem = nn.ModuleDict({m: transformer_encoder(2 * d, cfg.heads, max(cfg.levels, 3), dropout=cfg.relu_dropout)
                                  for m in MODS})
        self.proj1 = nn.Linear(6 * d, 6 * d)
        self.proj2 = nn.Linear(6 * d, 6 * d)
        self.out = nn.Linear(6 * d, out_dim)

    def fuse(self, enc: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Cross-modal and self-attention transformers -> (B, 6d) fused representation."""
        d = self.cfg.dim
        seqs = {}
        for m, (x, mask) in enc.items():
            x = math.sqrt(d) * x + sinusoidal_positions(x.size(1), d, x.device)
            seqs[m] = (F.dropout(x, self.cfg.embed_dropout, self.training), mask)
        lasts = []
        for t in MODS:
            q, q_mask = seqs[t]
            h = torch.cat([self.cross[f"{t}<-{s}"](q, *seqs[s]) for s in MODS if s != t], dim=-1)  # (B, Lt, 2d)
            h = self.mem[t](h, src_key_padding_mask=~q_mask)
            lasts.append(last_valid(h, q_mask))  # (B, 2d)
        return torch.cat(lasts, dim=-1)  # (B, 6d)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """(B, 6d) fused -> residual MLP -> (B, out_dim)."""
        r = self.proj2(F.dropout(F.relu(self.proj1(h)), self.cfg.out_dropout, self.training)) + h
        return self.out(r)


@register("mult")
class MulT(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        dim: int = 30  # MMSA: dst_feature_dim_nheads (50/30/50/30 on MOSI/MOSEI/SIMS/SIMS v2)
        heads: int = 6
        levels: int = 4  # cross-modal layers (nlevels)
        conv_kernel: int = 1  # Conv1D kernel for every modality (odd; length kept with padding)
        attn_dropout: float = 0.1
        relu_dropout: float = 0.1
        embed_dropout: float = 0.25
        out_dropout: float = 0.1

        def validate(self, where: str) -> None:  # also AE-MT's (its Config extends this one): `where` names it
            if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
                raise ConfigError(f"{where}.dim ({self.dim}) must be a positive multiple of {where}.heads "
                                  f"({self.heads}); change one of them")
            if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
                raise ConfigError(f"{where}.conv_kernel: {self.conv_kernel}; expected an odd number >= 1 "
                                  "(the sequence length is kept)")

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        d, k = cfg.dim, cfg.conv_kernel
        self.proj = nn.ModuleDict({m: nn.Conv1d(manifest.modalities[m]["dim"], d, k, padding=(k - 1) // 2, bias=False)
                                   for m in MODS})
        self.fusion = MulTFusion(cfg, self.out_dim, self.name)

    def encode_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality: (B, Lm, Dm) -> (sequence (B, Lm, d), mask (B, Lm))."""
        out = {}
        for m in MODS:
            x = self.proj[m](batch[m].transpose(1, 2)).transpose(1, 2)  # (B, Lm, d)
            out[m] = (x, batch[f"{m}_mask"])
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.fusion.fuse(self.encode_inputs(batch))
        return {"pred": self.head(self.fusion.output(h)), "fused": h}
