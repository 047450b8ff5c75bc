"""TFN: Tensor Fusion Network (Zadeh et al., EMNLP 2017), as in MMSA.

Unimodal sub-networks as LF-DNN; fusion is the 3-fold outer product of [h_a; 1], [h_v; 1], [h_t; 1]
((Ha+1)(Hv+1)(Ht+1) values, unimodal, bimodal and trimodal interactions), then a post-fusion MLP. For
regression the output is a sigmoid scaled to the dataset's label range (MMSA: output_range 6, shift -3).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import MethodConfig
from . import register
from .base import Method
from .blocks import UnimodalSubNets, post_fusion_mlp


def tensor_fusion(*hs: torch.Tensor) -> torch.Tensor:
    """Outer product of [h; 1] over the inputs: each (B, Hi) -> (B, prod(Hi + 1))."""
    out = None
    for h in hs:
        h1 = torch.cat([h, h.new_ones(h.size(0), 1)], dim=1)
        out = h1 if out is None else torch.bmm(out.unsqueeze(2), h1.unsqueeze(1)).flatten(1)
    return out


@register("tfn")
class TFN(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        hidden_audio: int = 8
        hidden_vision: int = 8
        hidden_text: int = 64
        text_out: int = 16
        post_fusion_dim: int = 64
        dropout: float = 0.2

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        self.subnets = UnimodalSubNets(manifest, cfg)
        fused = (cfg.hidden_audio + 1) * (cfg.hidden_vision + 1) * (cfg.text_out + 1)
        self.post = post_fusion_mlp(fused, cfg.post_fusion_dim, self.out_dim, cfg.dropout)
        lo, hi = manifest.label_range
        self.range, self.shift = hi - lo, lo

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h_t, h_a, h_v = self.subnets(batch)  # (B, To), (B, Ha), (B, Hv)
        z = self.post(tensor_fusion(h_a, h_v, h_t))  # (B, out)
        if self.task == "regression":
            z = torch.sigmoid(z) * self.range + self.shift
        return {"pred": self.head(z)}
