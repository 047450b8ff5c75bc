"""LF-DNN: late fusion of unimodal sub-networks (as in MMSA's LF_DNN baseline).

Audio and vision are averaged over their real frames (MMSA's `need_normalized`), each passed through a SubNet;
text goes through an LSTM TextSubNet; the three representations are concatenated and regressed by an MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import MethodConfig
from . import register
from .base import Method
from .blocks import SubNet, TextSubNet, masked_mean


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
        mods = manifest.modalities
        self.audio_net = SubNet(mods["audio"]["dim"], cfg.hidden_audio, cfg.dropout)
        self.vision_net = SubNet(mods["vision"]["dim"], cfg.hidden_vision, cfg.dropout)
        self.text_net = TextSubNet(mods["text"]["dim"], cfg.hidden_text, cfg.text_out, cfg.dropout)
        fused = cfg.hidden_audio + cfg.hidden_vision + cfg.text_out
        self.post = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(fused, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, self.out_dim))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h_a = self.audio_net(masked_mean(batch["audio"], batch["audio_mask"]))  # (B, Ha)
        h_v = self.vision_net(masked_mean(batch["vision"], batch["vision_mask"]))  # (B, Hv)
        h_t = self.text_net(batch["text"], batch["text_mask"])  # (B, To)
        return {"pred": self.head(self.post(torch.cat([h_t, h_a, h_v], dim=-1)))}
