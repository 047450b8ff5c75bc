"""Text-only baseline: the language stream alone, to measure what audio and vision add.

Token features (or a fine-tuned encoder) -> Linear to `hidden` -> a small transformer encoder -> masked mean
-> MLP -> prediction.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import MethodConfig
from . import register
from .base import Method
from .blocks import Dropout, masked_mean, transformer_encoder
from .text_encoder import TextEncoder


@register("text_only")
class TextOnly(Method):
    families = ("trimodal", "image_text")

    @dataclass(frozen=True)
    class Config(MethodConfig):
        text_encoder: str = "features"
        hidden: int = 64
        heads: int = 4
        layers: int = 1
        dropout: float = 0.1

    @classmethod
    def text_source(cls, cfg: Config, manifest) -> str:
        if manifest.family == "image_text" and cfg.text_encoder == "features":
            return "tiny-bert"  # image-text sets have no precomputed text features
        return cfg.text_encoder

    @classmethod
    def required_modalities(cls, cfg: Config, manifest) -> tuple[str, ...]:
        return ("text",) if cls.text_source(cfg, manifest) == "features" else ()  # the text alone (ids: tokens)

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        self.text = TextEncoder(self.text_source(cfg, manifest), manifest)
        self.proj = nn.Linear(self.text.out_dim, cfg.hidden)
        self.encoder = transformer_encoder(cfg.hidden, cfg.heads, cfg.layers, dropout=cfg.dropout)
        self.out = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(), Dropout(cfg.dropout),
                                 nn.Linear(cfg.hidden, self.out_dim))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seq, mask = self.text(batch)  # (B, L, Dt), (B, L)
        h = self.encoder(self.proj(seq), src_key_padding_mask=~mask)  # (B, L, H)
        return {"pred": self.head(self.out(masked_mean(h, mask)))}
