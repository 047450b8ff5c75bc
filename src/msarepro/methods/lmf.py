"""LMF: Low-rank Multimodal Fusion (Liu et al., ACL 2018), as in MMSA (docs/methods/lmf.md).

The unimodal front end is TFN's (blocks.UnimodalSubNets): SubNets over time-averaged audio and vision, an LSTM
TextSubNet over the text. TFN multiplies the 3-way outer product Z = [h_a; 1] x [h_v; 1] x [h_t; 1] by a weight
W of (Ha+1)(Hv+1)(Ht+1) x d_y values; LMF never forms Z. It writes W as a sum of r rank-one terms, one factor
W_m^(i) ((H_m + 1) x d_y) per modality m and rank i, which turns W . Z into

    h = sum_i lambda_i * prod_m ([h_m; 1] W_m^(i)) + b        (the paper's low-rank fusion, section 3.2)

(prod_m elementwise over the d_y outputs; lambda_i: MMSA's learned rank weights, the paper sums with weight 1).
`low_rank_fusion` computes it in O(r d_y sum_m H_m) instead of O(d_y prod_m H_m); tests check that it equals
TFN's `tensor_fusion` times the full weight the factors make up. The fused h (d_y = 1, or C for classification)
is the prediction: LMF has no post-fusion MLP and, unlike TFN here, no sigmoid scaling of the output.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import UnimodalSubNets


def low_rank_fusion(hs: list[torch.Tensor], factors: list[torch.Tensor], rank_weights: torch.Tensor,
                    bias: torch.Tensor) -> torch.Tensor:
    """hs: per modality (B, H_m); factors: per modality W_m (r, H_m + 1, d_y); rank_weights (r,); bias (d_y,)
    -> (B, d_y) = sum_i rank_weights[i] * prod_m ([h_m; 1] @ W_m[i]) + bias. The 1 is appended last, as in
    tfn.tensor_fusion, so W_m[i][-1] is the factor's constant row."""
    prod = None
    for h, w in zip(hs, factors):
        h1 = torch.cat([h, h.new_ones(h.size(0), 1)], dim=1)  # (B, H_m + 1)
        per_rank = torch.einsum("bi,rio->rbo", h1, w)  # (r, B, d_y)
        prod = per_rank if prod is None else prod * per_rank
    return torch.einsum("r,rbo->bo", rank_weights, prod) + bias


@register("lmf")
class LMF(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        hidden_audio: int = 8
        hidden_vision: int = 8
        hidden_text: int = 32
        text_out: int = 16  # MMSA: hidden_text // 2
        rank: int = 4  # r
        dropout: float = 0.2  # the SubNets' and the TextSubNet's (MMSA's dropouts[0:3])
        factor_lr: float = 0.0  # learning rate of the modality factors W_m; 0 = lr (MMSA: factor_lr)

        def validate(self, where: str) -> None:
            if self.rank < 1:
                raise ConfigError(f"{where}.rank: {self.rank}; the rank r of the fusion must be at least 1")
            if self.factor_lr < 0:
                raise ConfigError(f"{where}.factor_lr: {self.factor_lr}; expected >= 0 (0 = the method's lr)")

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        self.subnets = UnimodalSubNets(manifest, cfg)
        widths = (cfg.hidden_audio, cfg.hidden_vision, cfg.text_out)  # the order of tensor_fusion: a, v, t
        self.factors = nn.ParameterList(nn.Parameter(torch.empty(cfg.rank, h + 1, self.out_dim)) for h in widths)
        self.rank_weights = nn.Parameter(torch.empty(1, cfg.rank))  # lambda_i, 2-d for xavier's fans
        self.bias = nn.Parameter(torch.zeros(self.out_dim))
        for w in (*self.factors, self.rank_weights):  # MMSA's initialisation
            nn.init.xavier_normal_(w)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h_t, h_a, h_v = self.subnets(batch)  # (B, To), (B, Ha), (B, Hv)
        z = low_rank_fusion([h_a, h_v, h_t], list(self.factors), self.rank_weights[0], self.bias)  # (B, d_y)
        return {"pred": self.head(z)}

    def param_groups(self):
        """The factors W_m at `factor_lr` (when set), everything else at `lr` (MMSA's two groups)."""
        if not self.cfg.factor_lr:
            return None
        factors = {id(p) for p in self.factors}
        return [{"params": list(self.factors), "lr": self.cfg.factor_lr},
                {"params": [p for p in self.parameters() if id(p) not in factors]}]
