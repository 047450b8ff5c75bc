"""LF-DNN: late fusion of unimodal sub-networks (as in MMSA's LF_DNN baseline).

Audio and vision are averaged over their real frames (MMSA's `need_normalized`), each passed through a SubNet;
text goes through an LSTM TextSubNet; the three representations are concatenated and regressed by an MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import MethodConfig
from . import register
from .base import Method
from .blocks import UnimodalSubNets, post_fusion_mlp


@register("lf_dnn")
class LFDNN(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        hidden_audio: int = 16
        hidden_vision: int = 32
        hidden_text: int = 64
        text_out: int = 32
        post_fusion_dim: int = 64
        dropout: float = 0.2

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        self.subnets = UnimodalSubNets(manifest, cfg)
        fused = cfg.hidden_audio + cfg.hidden_vision + cfg.text_out
        self.post = post_fusion_mlp(fused, cfg.post_fusion_dim, self.out_dim, cfg.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h_t, h_a, h_v = self.subnets(batch)  # (B, To), (B, Ha), (B, Hv)
        return {"pred": self.head(self.post(torch.cat([h_t, h_a, h_v], dim=-1)))}
